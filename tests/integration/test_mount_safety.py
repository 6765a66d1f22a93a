"""No mount source can be swapped between the host policy's check and a mount, against a
real agent, broker and engine: the attack of issue 11 (a domain replaces a directory of
its own writable mount by a symbolic link to ``/var/run``, then crashes so that Docker's
restart mounts the engine's socket) and its variations (two domains, a reboot, a crash
restart, a parent directory renamed). And a crash-looping domain can always be
destroyed or shut down, and stays down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import aiodocker
import pytest

from agent.host.agent import Agent
from schemas.events import DomainEvent, Event, LifecycleEvent, RebootEvent
from tests.support import WAIT_S, BusPeer, EventRecorder
from tests.support.fleet import Fleet, spec

pytestmark = pytest.mark.integration

DENIED = 29
SHUTOFF, RUNNING = 5, 1


@dataclass
class Guarded:
    """An agent whose policy lets domains write below ``allowed`` and ``control``."""

    agent: Agent
    peer: BusPeer
    events: EventRecorder
    docker: aiodocker.Docker
    allowed: Path
    control: Path
    outside: Path

    @property
    def host(self) -> str:
        return self.agent.host

    async def call(
        self, op: str, target: str | None = None, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.peer.call(self.host, op, {"name": target} if target else None, args)

    async def ok(
        self, op: str, target: str | None = None, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.peer.ok(self.host, op, {"name": target} if target else None, args)

    async def logs(self, name: str) -> str:
        container = await self.docker.containers.get(f"{self.host}.{name}")
        return "".join(await container.log(stdout=True, stderr=True))

    async def inspect(self, name: str) -> dict[str, Any]:
        container = await self.docker.containers.get(f"{self.host}.{name}")
        inspected: dict[str, Any] = container._container
        return inspected

    def of(self, name: str) -> list[DomainEvent]:
        return [e for e in self.events.domain_events() if e.domain.name == name]

    async def nth(self, count: int, match: Callable[[DomainEvent], bool]) -> DomainEvent:
        """The ``count``-th domain event that matches, waiting for it."""

        def found() -> list[DomainEvent]:
            return [e for e in self.events.domain_events() if match(e)]

        def enough(event: Event) -> bool:
            return len(found()) >= count

        await self.events.wait_for(enough, WAIT_S)
        return found()[count - 1]


@pytest.fixture
async def guarded(fleet: Fleet, peer: BusPeer, docker: aiodocker.Docker, tmp_path: Path) -> Guarded:
    allowed, control, outside = (tmp_path / d for d in ("allowed", "control", "outside"))
    for directory in (allowed, control, outside):
        directory.mkdir()
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f"""
images = ["virtbus-test:*"]

[[mounts]]
prefix = "{allowed}"
force_readonly = false

[[mounts]]
prefix = "{control}"
force_readonly = false
"""
    )
    agent = await fleet.start(policy_file=policy)
    events = await EventRecorder(peer.channel, f"{agent.host}.#").start()
    return Guarded(agent, peer, events, docker, allowed, control, outside)


def lifecycle_of(events: list[DomainEvent]) -> list[tuple[str, str]]:
    return [(e.event, e.detail) for e in events if isinstance(e, LifecycleEvent)]


def assert_denied(reply: dict[str, Any], words: str) -> None:
    assert reply["ok"] is False, reply
    assert reply["error"]["vir_error"] == DENIED, reply
    assert reply["error"]["code"] == "OPERATION_DENIED", reply
    assert reply["error"]["message"].startswith("operation forbidden: "), reply
    assert words in reply["error"]["message"], reply


async def second_run(g: Guarded, name: str) -> None:
    """Wait until the domain has started twice (by whichever restart)."""
    await g.nth(
        2,
        lambda e: (
            e.domain.name == name
            and (
                isinstance(e, RebootEvent)
                or (isinstance(e, LifecycleEvent) and e.event == "started")
            )
        ),
    )


async def test_the_attack_of_issue_11_is_refused(guarded: Guarded) -> None:
    """The domain's writable mount holds its other mount's source: refused at define
    (before, Docker's restart mounted ``/var/run`` and the domain printed ESCAPED)."""
    g = guarded
    (g.allowed / "x").mkdir()
    script = (
        "if [ -S /x/docker.sock ]; then echo ESCAPED; sleep 3600; fi; "
        "rm -rf /w/x; ln -s /var/run /w/x; exit 1"
    )
    body = spec(
        "esc",
        "sh",
        "-c",
        script,
        on_crash="restart",
        mounts=[
            {"source": str(g.allowed), "target": "/w"},
            {"source": str(g.allowed / "x"), "target": "/x"},
        ],
    )
    for op in ("domain.define", "domain.create_xml"):
        reply = await g.call(op, args={"spec": body})
        if reply["ok"]:
            if op == "domain.define":
                await g.ok("domain.create", "esc")
            await second_run(g, "esc")
            assert "ESCAPED" not in await g.logs("esc")
        assert_denied(
            reply,
            f"writable host path '{g.allowed}' overlaps host path '{g.allowed / 'x'}' "
            "of another mount of this domain",
        )
    assert (await g.ok("host.list_domains"))["domains"] == []


@pytest.mark.parametrize("writer_first", [True, False], ids=["writer-first", "reader-first"])
async def test_one_domain_cannot_swap_another_domains_source(
    guarded: Guarded, writer_first: bool
) -> None:
    """A writes where B's source lives, B reboots: whichever is defined second is
    refused (before, B read the host file A pointed its source at)."""
    g = guarded
    (g.allowed / "x").mkdir()
    (g.allowed / "x" / "mark").write_text("inside\n")
    (g.outside / "mark").write_text("secret\n")
    writer = spec(
        "writer",
        "sh",
        "-c",
        f"rm -rf /w/x; ln -s {g.outside} /w/x",
        mounts=[{"source": str(g.allowed), "target": "/w"}],
    )
    reader = spec(
        "reader",
        "sh",
        "-c",
        "cat /x/mark; sleep 3600",
        init=True,
        mounts=[{"source": str(g.allowed / "x"), "target": "/x", "readonly": True}],
    )
    first, second = (writer, reader) if writer_first else (reader, writer)
    await g.ok("domain.define", args={"spec": first})
    refused = await g.call("domain.define", args={"spec": second})
    if refused["ok"]:
        await g.ok("domain.create", "reader")
        await g.ok("domain.create", "writer")
        await g.nth(1, lambda e: e.domain.name == "writer" and getattr(e, "event", "") == "stopped")
        await g.ok("domain.reboot", "reader")
        assert "secret" not in await g.logs("reader")
    assert_denied(
        refused,
        f"writable host path '{g.allowed}' overlaps host path '{g.allowed / 'x'}' "
        f"of a mount of domain '{first['name']}'",
    )
    names = [d["name"] for d in (await g.ok("host.list_domains", args={"flags": []}))["domains"]]
    assert names == [first["name"]]


def swap(g: Guarded, how: str) -> Path:
    """Replace the source (or its parent) by a symbolic link out of the prefix (or to
    another directory inside it), as a process with write access there would; returns
    where the source leads now."""
    if how == "inside":
        source = g.allowed / "x"
        (g.allowed / "other").mkdir()
        (g.allowed / "other" / "mark").write_text("secret\n")
        source.rename(g.allowed / "x.old")
        source.symlink_to(g.allowed / "other")
        return g.allowed / "other"
    if how == "source":
        source = g.allowed / "x"
        (g.outside / "x").mkdir()
        (g.outside / "x" / "mark").write_text("secret\n")
        source.rename(g.allowed / "x.old")
        source.symlink_to(g.outside / "x")
    else:
        source = g.allowed / "p" / "x"
        (g.outside / "x").mkdir()
        (g.outside / "x" / "mark").write_text("secret\n")
        (g.allowed / "p").rename(g.allowed / "p.old")
        (g.allowed / "p").symlink_to(g.outside)
    return g.outside / "x"


def prepare(g: Guarded, how: str) -> Path:
    source = g.allowed / "p" / "x" if how == "parent" else g.allowed / "x"
    source.mkdir(parents=True)
    (source / "mark").write_text("inside\n")
    return source


@pytest.mark.parametrize(
    "how", ["source", "parent", "inside"], ids=["source-swapped", "parent-renamed", "inside"]
)
@pytest.mark.parametrize("trigger", ["reboot", "crash-restart"])
async def test_a_source_swapped_after_the_check_is_never_mounted(
    guarded: Guarded, how: str, trigger: str
) -> None:
    """The source (or a parent directory) is replaced by a symbolic link out of the
    prefix (or to another directory inside it) while the domain runs; the next reboot is
    refused, the next crash restart does not happen (the domain stops with its crash's
    event), and the domain never sees the file outside (before, Docker mounted the
    link's target)."""
    g = guarded
    source = prepare(g, how)
    body = spec(
        "victim",
        "sh",
        "-c",
        "cat /x/mark; while [ ! -e /ctl/go ]; do sleep 0.05; done; exit 1",
        init=True,
        on_crash="restart",
        mounts=[
            {"source": str(source), "target": "/x", "readonly": True},
            {"source": str(g.control), "target": "/ctl"},
        ],
    )
    await g.ok("domain.define", args={"spec": body})
    await g.ok("domain.create", "victim")
    leads = swap(g, how)
    if trigger == "reboot":
        reply = await g.call("domain.reboot", "victim")
        if not reply["ok"]:
            assert_denied(
                reply,
                f"host path '{source}' now leads to '{leads}'"
                if how == "inside"
                else f"mounting host path '{leads}' is not allowed",
            )
        assert reply["ok"] is False
        state = await g.ok("domain.get_state", "victim")
        assert state["state"] == RUNNING
    else:
        (g.control / "go").touch()
        stopped = await g.nth(
            1,
            lambda e: (
                e.domain.name == "victim" and isinstance(e, LifecycleEvent) and e.event == "stopped"
            ),
        )
        assert isinstance(stopped, LifecycleEvent)
        assert (stopped.detail, stopped.origin, stopped.exit_code) == ("failed", "agent", 1)
        assert stopped.cause is not None and stopped.cause.startswith("restart-")
        state = await g.ok("domain.get_state", "victim")
        assert (state["state"], state["reason"]) == (SHUTOFF, 6)
        assert lifecycle_of(g.of("victim")) == [
            ("defined", "added"),
            ("started", "booted"),
            ("stopped", "failed"),
        ]
        inspected = await g.inspect("victim")
        assert inspected["State"]["Status"] == "exited"
        assert inspected["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert "secret" not in await g.logs("victim")
    assert (await g.logs("victim")).splitlines()[0] == "inside"


async def test_a_source_put_back_in_place_is_mounted_again(guarded: Guarded) -> None:
    """A refusal is not forever: with the source a real directory again, the domain
    reboots (and restarts after a crash, with a reboot event)."""
    g = guarded
    source = prepare(g, "source")
    body = spec(
        "back",
        "sh",
        "-c",
        "cat /x/mark; while [ ! -e /ctl/go ]; do sleep 0.05; done; rm /ctl/go; exit 1",
        init=True,
        on_crash="restart",
        mounts=[
            {"source": str(source), "target": "/x", "readonly": True},
            {"source": str(g.control), "target": "/ctl"},
        ],
    )
    await g.ok("domain.create_xml", args={"spec": body})
    swap(g, "source")
    assert_denied(await g.call("domain.reboot", "back"), "is not allowed")
    source.unlink()
    (g.allowed / "x.old").rename(source)
    await g.ok("domain.reboot", "back")
    (g.control / "go").touch()
    await g.nth(2, lambda e: e.domain.name == "back" and isinstance(e, RebootEvent))
    assert lifecycle_of(g.of("back")) == [("started", "booted")]
    assert (await g.logs("back")).split() == ["inside"] * 3


@pytest.mark.parametrize("op", ["domain.destroy", "domain.shutdown"])
async def test_a_crash_looping_domain_can_always_be_stopped_and_stays_down(
    guarded: Guarded, op: str
) -> None:
    """A domain that fails as soon as it starts is restarted by the agent (a reboot event
    each time); a destroy or shutdown at any point of its loop succeeds with its stopped
    event, and no restart follows (before: OPERATION_INVALID while Docker's back-off ran,
    and the domain came back by itself)."""
    g = guarded
    # a shutdown meeting the domain's own exit reports that exit, as libvirt does
    details = {"destroyed"} if op == "domain.destroy" else {"shutdown", "failed"}
    body = spec("loop", "sh", "-c", "exit 1", init=True, on_crash="restart")
    uuid = UUID((await g.ok("domain.define", args={"spec": body}))["uuid"])
    # the reply goes out ahead of the event that answered it
    await g.nth(1, lambda e: e.domain.name == "loop" and isinstance(e, LifecycleEvent))

    def run(e: DomainEvent) -> bool:
        started = isinstance(e, LifecycleEvent) and e.event == "started"
        return e.domain.name == "loop" and (started or isinstance(e, RebootEvent))

    for cycle in range(6):
        before = len(g.of("loop"))
        await g.ok("domain.create", "loop")
        runs = sum(map(run, g.events.domain_events())) + 2 + cycle % 3
        await g.nth(runs, run)
        record = await g.ok(op, "loop")
        assert record["state"] == SHUTOFF
        stopped = await g.nth(
            cycle + 1,
            lambda e: (
                e.domain.name == "loop" and isinstance(e, LifecycleEvent) and e.event == "stopped"
            ),
        )
        assert isinstance(stopped, LifecycleEvent) and stopped.detail in details
        assert stopped.cause is not None and not stopped.cause.startswith("restart-")
        assert lifecycle_of(g.of("loop")[before:]) == [
            ("started", "booted"),
            ("stopped", stopped.detail),
        ]
        assert not g.agent._monitor.restarts.pending(uuid)
        inspected = await g.inspect("loop")
        assert inspected["State"]["Status"] == "exited", cycle
        assert inspected["HostConfig"]["RestartPolicy"]["Name"] == "no"
        assert (await g.ok("domain.get_state", "loop"))["state"] == SHUTOFF


async def test_dockers_restart_policy_left_by_an_earlier_agent_is_taken_back(
    guarded: Guarded, fleet: Fleet
) -> None:
    """A container made by an earlier agent carries Docker's ``on-failure`` policy, which
    would mount again with no check: the agent sets it to ``no`` as it starts, quietly."""
    g = guarded
    await g.ok("domain.create_xml", args={"spec": spec("old", on_crash="restart")})
    container = await g.docker.containers.get(f"{g.host}.old")
    await g.docker._query_json(
        f"containers/{container.id}/update",
        method="POST",
        data='{"RestartPolicy": {"Name": "on-failure"}}',
    )
    assert (await g.inspect("old"))["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    await g.agent.stop()
    again = await fleet.start(host=g.host, policy_file=g.agent.config.policy_file)
    assert (await g.inspect("old"))["HostConfig"]["RestartPolicy"]["Name"] == "no"
    g.agent = again
    await g.ok("domain.define", args={"spec": spec("fence")})
    await g.nth(1, lambda e: e.domain.name == "fence")
    assert [type(e).__name__ for e in g.of("old")] == ["LifecycleEvent"]
