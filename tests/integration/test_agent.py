"""The agent through the wire: every op's reply, isolation, bad input, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiodocker
import pytest

from schemas.events import AgentEvent, LifecycleEvent, TunableEvent
from schemas.replies import DomainInfo, DomainList, HostInfo, Reply
from schemas.topology import BROADCAST_EXCHANGE
from tests.support import BusPeer, DeadLetters, EventRecorder, lifecycle
from tests.support.fleet import A_WHOLE_LIFE, NOCMD_IMAGE, Fleet, Host, spec
from tests.support.services import IMAGE

pytestmark = pytest.mark.integration


async def test_every_domain_op_replies(host: Host, docker: aiodocker.Docker) -> None:
    defined = await host.ok("domain.define", args={"spec": spec("web", memory_kib=65536)})
    assert defined["state"] == 5 and defined["id"] == -1 and defined["persistent"] is True
    started = await host.ok("domain.create", "web")
    assert started["state"] == 1 and started["reason"] == 1 and started["id"] > 0
    inspect = await (await docker.containers.get(host.container_name("web"))).show()
    assert started["id"] == inspect["State"]["Pid"]
    for key, value in (("name", "web"), ("uuid", defined["uuid"]), ("id", started["id"])):
        found = await host.peer.ok(host.name, "domain.lookup", {key: value})
        assert found["uuid"] == defined["uuid"], key
    info = DomainInfo.model_validate(await host.ok("domain.get_info", "web"))
    assert (info.state, info.max_mem_kib, info.nr_virt_cpu) == (1, 65536, 2)
    assert 0 < info.memory_kib <= 65536 and info.cpu_time_ns > 0
    assert (await host.ok("domain.suspend", "web"))["state"] == 3
    assert await host.ok("domain.get_state", "web") == {"state": 3, "reason": 1}
    assert (await host.ok("domain.resume", "web"))["reason"] == 5
    assert (await host.ok("domain.reboot", "web"))["state"] == 1
    tuned = await host.ok("domain.set_memory", "web", {"memory_kib": 32768})
    assert tuned["state"] == 1
    await host.ok("domain.set_vcpus", "web", {"vcpus": 1})
    inspect = await (await docker.containers.get(host.container_name("web"))).show()
    assert inspect["HostConfig"]["Memory"] == 32768 * 1024
    assert inspect["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert (await host.ok("domain.shutdown", "web", {"timeout_s": 5}))["reason"] == 1
    assert (await host.ok("domain.set_autostart", "web", {"autostart": True}))["autostart"]
    assert (await host.ok("domain.rename", "web", {"new_name": "www"}))["name"] == "www"
    assert (await host.ok("domain.undefine", "www"))["persistent"] is False
    transient = await host.ok("domain.create_xml", args={"spec": spec("tmp")})
    assert (transient["state"], transient["persistent"]) == (1, False)
    assert (await host.ok("domain.destroy", "tmp"))["reason"] == 2
    tunables = [e for e in await host.fence() if isinstance(e, TunableEvent)]
    assert [e.params for e in tunables] == [{"memory_kib": 32768}, {"vcpus": 1}]


async def test_host_ops_reply(host: Host) -> None:
    await host.ok("domain.define", args={"spec": spec("off")})
    await host.ok("domain.create_xml", args={"spec": spec("on"), "start_paused": True})
    listed = DomainList.model_validate(await host.ok("host.list_domains"))
    assert [(d.name, d.state) for d in listed.domains] == [("off", 5), ("on", 3)]
    paused = await host.ok("host.list_domains", args={"flags": ["paused", "transient"]})
    assert [d["name"] for d in paused["domains"]] == ["on"]
    info = HostInfo.model_validate(await host.ok("host.get_info"))
    assert info.hostname == host.name and info.cpus >= 1
    assert (info.domains.total, info.domains.active, info.domains.transient) == (2, 1, 1)
    assert (await host.ok("host.ping"))["host"] == host.name
    login = {"registry": "registry.example:5000", "username": "u", "password": "hunter2"}
    assert await host.ok("host.login", args=login) == {}
    assert await host.ok("host.logout", args={"registry": "registry.example:5000"}) == {}
    again = await host.call("host.logout", args={"registry": "registry.example:5000"})
    assert again["error"]["code"] == "INVALID_ARG"


async def test_errors_carry_libvirt_codes(host: Host) -> None:
    missing = await host.call("domain.suspend", "ghost")
    assert missing["error"] == {
        "code": "NO_DOMAIN",
        "vir_error": 42,
        "message": "Domain not found: no domain with matching name 'ghost'",
    }
    await host.ok("domain.define", args={"spec": spec("web")})
    not_running = await host.call("domain.destroy", "web")
    assert not_running["error"]["vir_error"] == 55
    assert not_running["error"]["message"] == (
        "Requested operation is not valid: domain is not running"
    )
    no_command = await host.call(
        "domain.define", args={"spec": {"name": "x", "image": NOCMD_IMAGE}}
    )
    assert no_command["error"]["code"] == "INVALID_ARG"
    no_image = await host.call("domain.define", args={"spec": spec("y", image="virtbus-absent:1")})
    assert no_image["error"]["code"] == "OPERATION_FAILED"
    assert (await host.call("domain.lookup", "x"))["error"]["code"] == "NO_DOMAIN"


BAD_BODIES: list[tuple[str, bytes]] = [
    ("malformed-json", b'{"v": 1, "op": "domain.create", '),
    ("not-an-object", b"[1, 2, 3]"),
    ("unknown-op", b'{"v": 1, "id": "x", "op": "domain.explode", "target": {"name": "a"}}'),
    (
        "unknown-field",
        b'{"v": 1, "id": "x", "op": "domain.create", "target": {"name": "a"}, "force": true}',
    ),
    ("bad-name", b'{"v": 1, "id": "x", "op": "domain.create", "target": {"name": "a b"}}'),
    (
        "bad-spec",
        b'{"v": 1, "id": "x", "op": "domain.define", "args": {"spec": {"name": "a", '
        b'"image": "busybox", "privileged": true}}}',
    ),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_BODIES], ids=[n for n, _ in BAD_BODIES])
async def test_bad_input_is_refused_dead_lettered_and_the_agent_goes_on(
    host: Host, body: bytes
) -> None:
    dead = await DeadLetters(host.peer.channel).start()
    message_id = f"bad-{uuid.uuid4().hex}"
    reply = await asyncio.wait_for(await host.peer.send(host.name, body, message_id=message_id), 30)
    assert reply["ok"] is False and reply["id"] == message_id
    assert reply["error"]["code"] == "INVALID_ARG" and reply["error"]["vir_error"] == 8
    letter = await dead.next()
    assert letter.body == body and letter.message_id == message_id
    assert (await host.ok("host.ping"))["host"] == host.name


async def test_command_without_reply_to_still_runs(host: Host) -> None:
    command = {"v": 1, "id": "quiet-1", "op": "domain.define", "args": {"spec": spec("quiet")}}
    await host.peer.send(host.name, json.dumps(command).encode(), reply=False)
    defined = await host.events.wait_for(
        lambda e: isinstance(e, LifecycleEvent) and e.domain.name == "quiet"
    )
    assert isinstance(defined, LifecycleEvent) and defined.cause == "quiet-1"
    # Its reply was recorded though nobody could be told: asked again, the agent answers
    # from the record and does not define the domain a second time.
    again = await asyncio.wait_for(
        await host.peer.send(host.name, json.dumps(command).encode(), message_id="quiet-1"), 30
    )
    assert again["ok"] is True and again["result"]["name"] == "quiet"
    assert lifecycle(await host.fence()) == [("defined", "added")]


async def test_same_command_id_acts_once_and_answers_the_same(host: Host) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})
    first = await host.peer.call(host.name, "domain.create", {"name": "web"}, id="once-1")
    second = await host.peer.call(host.name, "domain.create", {"name": "web"}, id="once-1")
    assert first["ok"] and second == first
    assert lifecycle(await host.fence()) == [("defined", "added"), ("started", "booted")]


async def test_commands_for_one_domain_keep_their_order(host: Host) -> None:
    command_ids = [f"ordered-{n}" for n in range(6)]
    ops = [
        "domain.define",
        "domain.create",
        "domain.suspend",
        "domain.resume",
        "domain.destroy",
        "domain.undefine",
    ]
    futures = []
    for command_id, op in zip(command_ids, ops, strict=True):
        document: dict[str, Any] = {"v": 1, "id": command_id, "op": op}
        if op == "domain.define":
            document["args"] = {"spec": spec("web")}
        else:
            document["target"] = {"name": "web"}
        futures.append(
            await host.peer.send(host.name, json.dumps(document).encode(), message_id=command_id)
        )
    replies = await asyncio.wait_for(asyncio.gather(*futures), 60)
    assert [r.get("error") for r in replies] == [None] * 6
    events = await host.fence()
    assert [e.cause for e in events] == command_ids
    assert lifecycle(events) == A_WHOLE_LIFE


async def test_past_deadline_is_not_executed(host: Host) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    reply = await host.peer.call(
        host.name, "domain.define", args={"spec": spec("late")}, deadline=past
    )
    assert reply["error"]["code"] == "OPERATION_ABORTED" and reply["error"]["vir_error"] == 78
    assert (await host.call("domain.lookup", "late"))["error"]["code"] == "NO_DOMAIN"


async def test_two_agents_on_one_engine_do_not_see_each_other(fleet: Fleet, peer: BusPeer) -> None:
    one, two = await fleet.start(), await fleet.start()
    first = await peer.ok(one.host, "domain.define", args={"spec": spec("web")})
    second = await peer.ok(two.host, "domain.define", args={"spec": spec("web")})
    assert first["uuid"] != second["uuid"]
    listed = await peer.ok(two.host, "host.list_domains")
    assert [d["uuid"] for d in listed["domains"]] == [second["uuid"]]
    foreign = await peer.call(two.host, "domain.lookup", {"uuid": first["uuid"]})
    assert foreign["error"]["code"] == "NO_DOMAIN"
    await peer.ok(two.host, "domain.create", {"name": "web"})
    assert (await peer.ok(one.host, "domain.get_state", {"name": "web"}))["state"] == 5


async def test_foreign_container_is_invisible(host: Host, docker: aiodocker.Docker) -> None:
    name = f"foreign-{host.name}"
    container = await docker.containers.run(
        {"Image": IMAGE, "Cmd": ["sleep", "60"], "HostConfig": {"NetworkMode": "none"}},
        name=name,
    )
    try:
        await container.kill()
        assert (await host.ok("host.list_domains"))["domains"] == []
        assert (await host.call("domain.destroy", name))["error"]["code"] == "NO_DOMAIN"
        assert await host.fence() == []
    finally:
        await container.delete(force=True)


async def test_broadcast_reaches_all_and_groups(fleet: Fleet, peer: BusPeer) -> None:
    red = await fleet.start(groups=("red",))
    blue = await fleet.start(groups=("blue",))
    probe = {"name": "probe"}

    async def broadcast(routing_key: str, expected: set[str]) -> str:
        command_id = uuid.uuid4().hex
        body = {"v": 1, "id": command_id, "op": "domain.lookup", "target": probe}
        await peer.send(
            "",
            json.dumps(body).encode(),
            message_id=command_id,
            exchange=BROADCAST_EXCHANGE,
            routing_key=routing_key,
        )
        replies = await peer.replies(command_id, expected)
        assert all(r["error"]["code"] == "NO_DOMAIN" for r in replies.values())
        return command_id

    await broadcast("all", {red.host, blue.host})
    to_red = await broadcast("group.red", {red.host})
    # A command for the same domain, queued behind it: had the group command reached
    # blue, blue would have answered that first.
    await peer.call(blue.host, "domain.lookup", probe)
    assert peer.answered(to_red) == {red.host}


async def test_seq_continues_across_restart_and_autostart_runs(fleet: Fleet, peer: BusPeer) -> None:
    agent = await fleet.start()
    events = await EventRecorder(peer.channel, f"{agent.host}.#").start()
    await peer.ok(agent.host, "domain.define", args={"spec": spec("auto", autostart=True)})
    await peer.ok(agent.host, "domain.define", args={"spec": spec("manual")})
    await agent.stop()
    offline = await events.wait_for(lambda e: isinstance(e, AgentEvent) and e.state == "offline")
    assert isinstance(offline, AgentEvent)
    await fleet.start(host=agent.host)
    started = await events.wait_for(
        lambda e: isinstance(e, LifecycleEvent) and e.event == "started"
    )
    assert isinstance(started, LifecycleEvent) and started.domain.name == "auto"
    assert started.domain.id > 0
    await peer.ok(agent.host, "domain.create", {"name": "manual"})
    await events.wait_for(
        lambda e: (
            isinstance(e, LifecycleEvent) and e.event == "started" and e.domain.name == "manual"
        )
    )
    seqs = [getattr(e, "seq") for e in events.domain_events()]  # noqa: B009
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 4
    states = {
        d["name"]: d["state"] for d in (await peer.ok(agent.host, "host.list_domains"))["domains"]
    }
    assert states == {"auto": 1, "manual": 1}


async def test_change_while_agent_down_is_reconciled(
    fleet: Fleet, peer: BusPeer, docker: aiodocker.Docker
) -> None:
    agent = await fleet.start()
    events = await EventRecorder(peer.channel, f"{agent.host}.#").start()
    await peer.ok(agent.host, "domain.define", args={"spec": spec("web")})
    await peer.ok(agent.host, "domain.create", {"name": "web"})
    await agent.stop()
    await (await docker.containers.get(f"{agent.host}.web")).kill()
    await fleet.start(host=agent.host)
    stopped = await events.wait_for(
        lambda e: isinstance(e, LifecycleEvent) and e.event == "stopped"
    )
    assert isinstance(stopped, LifecycleEvent)
    assert (stopped.origin, stopped.exit_code, stopped.seq) == ("reconcile", 137, 3)
    assert (await peer.ok(agent.host, "domain.get_state", {"name": "web"}))["state"] == 5


async def test_reply_is_valid_wire_model(host: Host) -> None:
    raw = await host.call("domain.lookup", "nope")
    reply = Reply.model_validate(raw)
    assert reply.host == host.name and reply.error is not None


async def test_tuning_and_redefining_controls_keep_the_domains_filesystem(host: Host) -> None:
    """Each start appends a line to a file in the domain's own filesystem: the container
    kept across a live change, a config change and a redefinition of controls alone has
    one line per start."""
    booting = spec("web", "sh", "-c", "echo boot >> /boots; exec sleep 3600", memory_kib=65536)
    domain_uuid = (await host.ok("domain.define", args={"spec": booting}))["uuid"]
    await host.ok("domain.create", "web")
    assert await _boots(host, 1) == 1
    await host.ok("domain.set_tuning", "web", {"memory_kib": 98304, "cpu_shares": 512})
    await host.ok("domain.set_tuning", "web", {"soft_limit_kib": 32768, "config": True})
    await host.ok("domain.destroy", "web")
    await host.ok("domain.create", "web")
    assert await _boots(host, 2) == 2
    await host.ok("domain.destroy", "web")
    # the controls set live and in the config are in the definition (Docker cannot take
    # them away), and the new one keeps them
    controls = {"memory_kib": 131072, "vcpus": 1, "cpu_shares": 512, "soft_limit_kib": 32768}
    redefined = {**booting, "uuid": domain_uuid, **controls}
    await host.ok("domain.define", args={"spec": redefined})
    await host.ok("domain.create", "web")
    assert await _boots(host, 3) == 3
    info = await host.ok("domain.get_tuning", "web", {"config": True})
    assert (info["hard_limit_kib"], info["soft_limit_kib"], info["cpu_shares"]) == (
        131072,
        32768,
        512,
    )


async def _boots(host: Host, wanted: int, timeout_s: float = 15.0) -> int:
    """The lines of the domain's /boots once it has ``wanted`` (the write follows the
    start's answer), or as many as it has when ``timeout_s`` runs out."""
    lines = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while lines < wanted:
                read = await asyncio.create_subprocess_exec(
                    "docker",
                    "exec",
                    host.container_name("web"),
                    "cat",
                    "/boots",
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                out, _ = await read.communicate()
                lines = len(out.splitlines())
    return lines
