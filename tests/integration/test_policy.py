"""The host policy against a real agent, broker and engine: what is allowed runs without
privileges (the containers are inspected, and their processes read in /proc); what is
not is refused with OPERATION_DENIED and leaves no container; every refusal is in the
log, in the metrics, and, for bodies refused at the edge, in a dead letter that says why."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from agent.host.agent import Agent
from agent.host.driver import HOST_LABEL
from tests.support import BusPeer, DeadLetters
from tests.support.fleet import Fleet, spec

pytestmark = pytest.mark.integration

CAP_NET_RAW, CAP_SYS_ADMIN, CAP_MKNOD, CAP_AUDIT_WRITE = 13, 21, 27, 29


@dataclass
class Guarded:
    """An agent under a strict policy, and the host paths that policy names."""

    agent: Agent
    peer: BusPeer
    allowed: Path
    scratch: Path
    outside: Path

    @property
    def host(self) -> str:
        return self.agent.host

    async def call(
        self, op: str, target: str | None = None, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.peer.call(self.host, op, {"name": target} if target else None, args)

    def denied(self, op: str, reason: str) -> float:
        value = self.agent.metrics.registry.get_sample_value(
            "virtbus_commands_denied_total", {"op": op, "reason": reason}
        )
        return value or 0.0


@pytest.fixture
async def guarded(fleet: Fleet, peer: BusPeer, tmp_path: Path) -> Guarded:
    allowed, scratch, outside = (tmp_path / d for d in ("allowed", "scratch", "outside"))
    for directory in (allowed, scratch, outside):
        directory.mkdir()
    (allowed / "escape").symlink_to(outside)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f"""
images = ["virtbus-test:*"]
networks = ["none"]
memory_kib_max = 262144
vcpus_max = 1
pids_max = 512
pids_default = 100

[[mounts]]
prefix = "{allowed}"

[[mounts]]
prefix = "{scratch}"
force_readonly = false
"""
    )
    agent = await fleet.start(policy_file=policy)
    return Guarded(agent, peer, allowed, scratch, outside)


def limited(name: str, **fields: Any) -> dict[str, Any]:
    return spec(name, memory_kib=65536, vcpus=1, **fields)


async def containers(docker: aiodocker.Docker, host: str) -> list[dict[str, Any]]:
    filters = json.dumps({"label": [f"{HOST_LABEL}={host}"]})
    listed = await docker.containers.list(all=True, filters=filters)
    return [await docker._query_json(f"containers/{c.id}/json") for c in listed]


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


async def test_allowed_domains_run_without_privileges(
    guarded: Guarded, docker: aiodocker.Docker
) -> None:
    mounts = [
        {"source": str(guarded.allowed), "target": "/in", "readonly": True},
        {"source": str(guarded.scratch), "target": "/out"},
    ]
    assert (await guarded.call("domain.define", args={"spec": limited("web", mounts=mounts)}))["ok"]
    assert (await guarded.call("domain.create", "web"))["ok"]
    tight = limited("tight", pids_limit=200)
    assert (await guarded.call("domain.create_xml", args={"spec": tight}))["ok"]

    inspected = {c["Name"].rsplit(".", 1)[1]: c for c in await containers(docker, guarded.host)}
    assert set(inspected) == {"web", "tight"}
    for name, container in inspected.items():
        config = container["HostConfig"]
        assert config["Privileged"] is False, name
        assert not config["CapAdd"], name
        assert {"AUDIT_WRITE", "MKNOD", "NET_RAW"} <= set(config["CapDrop"]), name
        assert "no-new-privileges:true" in config["SecurityOpt"], name
        assert not config["Devices"] and not config["DeviceCgroupRules"], name
        assert config["NetworkMode"] == "none", name
        assert config["IpcMode"] == "private", name
        assert (config["PidMode"], config["UTSMode"], config["UsernsMode"]) == ("", "", ""), name
        assert config["PidsLimit"] == (200 if name == "tight" else 100), name
        assert config["Memory"] == 65536 * 1024, name

        pid = container["State"]["Pid"]
        assert pid > 0, name
        status = proc_status(pid)
        assert status["NoNewPrivs"] == "1", name
        bounding = int(status["CapBnd"], 16)
        for capability in (CAP_NET_RAW, CAP_SYS_ADMIN, CAP_MKNOD, CAP_AUDIT_WRITE):
            assert not bounding & (1 << capability), (name, capability)
        for namespace in ("pid", "net", "ipc", "uts", "mnt"):
            assert os.readlink(f"/proc/{pid}/ns/{namespace}") != os.readlink(
                f"/proc/self/ns/{namespace}"
            ), (name, namespace)

    by_target = {m["Destination"]: m for m in inspected["web"]["Mounts"]}
    assert by_target["/in"]["RW"] is False
    assert by_target["/out"]["RW"] is True


def outside_policy(g: Guarded) -> dict[str, tuple[dict[str, Any], str]]:
    """Specs the guarded policy refuses, with the rule that refuses each."""

    def mount(source: Path | str, readonly: bool = True) -> dict[str, Any]:
        return {"mounts": [{"source": str(source), "target": "/m", "readonly": readonly}]}

    return {
        "mount /": (limited("a", **mount("/")), "mount"),
        "mount /etc": (limited("a", **mount("/etc")), "mount"),
        "mount the Docker socket": (limited("a", **mount("/var/run/docker.sock")), "mount"),
        "mount outside the prefixes": (limited("a", **mount(g.outside)), "mount"),
        "mount a sibling of a prefix": (limited("a", **mount(f"{g.allowed}-evil")), "mount"),
        "writable mount under a read-only prefix": (
            limited("a", **mount(g.allowed, readonly=False)),
            "mount",
        ),
        "symlink out of a prefix": (limited("a", **mount(g.allowed / "escape")), "mount"),
        "image not allowed": (limited("a", image="busybox:latest"), "image"),
        "network bridge": (limited("a", network="bridge"), "network"),
        "memory above the ceiling": (spec("a", memory_kib=262145, vcpus=1), "memory"),
        "memory not given": (spec("a", vcpus=1), "memory"),
        "vcpus above the ceiling": (spec("a", memory_kib=65536, vcpus=2), "vcpus"),
        "pids above the ceiling": (limited("a", pids_limit=513), "pids"),
    }


async def test_outside_the_policy_is_denied_and_nothing_is_created(
    guarded: Guarded, docker: aiodocker.Docker, caplog: pytest.LogCaptureFixture
) -> None:
    cases = outside_policy(guarded)
    dead = await DeadLetters(guarded.peer.channel).start()
    with caplog.at_level(logging.WARNING, logger="agent.host.dispatch"):
        for case, (body, _) in cases.items():
            for op in ("domain.define", "domain.create_xml"):
                reply = await guarded.call(op, args={"spec": body})
                assert reply["ok"] is False, (case, op)
                assert reply["error"]["code"] == "OPERATION_DENIED", (case, op)
                assert reply["error"]["vir_error"] == 29, (case, op)
                assert reply["error"]["message"].startswith("operation forbidden: "), case
    assert await containers(docker, guarded.host) == []
    assert (await guarded.call("host.list_domains"))["result"]["domains"] == []
    expected = Counter(reason for _, reason in cases.values())
    for op in ("domain.define", "domain.create_xml"):
        assert {reason: guarded.denied(op, reason) for reason in expected} == expected
    reasons: list[str] = []
    while len(reasons) < 2 * len(cases):
        letter = await dead.next()
        if letter.headers.get("x-virtbus-host") == guarded.host:
            reasons.append(str(letter.headers["x-virtbus-reason"]))
    assert all(r.startswith("operation forbidden: ") for r in reasons), reasons
    assert reasons[0] == "operation forbidden: mounting host path '/' is not allowed (host policy)"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 * len(cases)
    assert (
        "denied domain.define of domain 'a': mounting host path '/' is not allowed" in (warnings[0])
    )


async def test_live_changes_respect_the_ceilings(guarded: Guarded) -> None:
    assert (await guarded.call("domain.create_xml", args={"spec": limited("web")}))["ok"]
    reply = await guarded.call("domain.set_memory", "web", {"memory_kib": 262145})
    assert reply["error"]["code"] == "OPERATION_DENIED"
    assert "memory_kib 262145 KiB is above the ceiling 262144 KiB" in reply["error"]["message"]
    reply = await guarded.call("domain.set_vcpus", "web", {"vcpus": 2})
    assert reply["error"]["code"] == "OPERATION_DENIED"
    assert guarded.denied("domain.set_memory", "memory") == 1
    assert guarded.denied("domain.set_vcpus", "vcpus") == 1
    assert (await guarded.call("domain.set_memory", "web", {"memory_kib": 131072}))["ok"]


@pytest.mark.parametrize(
    "fields",
    [
        {"privileged": True},
        {"cap_add": ["SYS_ADMIN"]},
        {"devices": ["/dev/mem"]},
        {"pid_mode": "host"},
        {"network": "host"},
        {"ipc_mode": "host"},
        {"userns_mode": "host"},
    ],
    ids=lambda fields: next(iter(fields)),
)
async def test_asking_for_privileges_is_invalid_and_dead_lettered_with_the_reason(
    guarded: Guarded, docker: aiodocker.Docker, fields: dict[str, Any]
) -> None:
    dead = await DeadLetters(guarded.peer.channel).start()
    message_id = f"priv-{uuid.uuid4().hex}"
    body = json.dumps(
        {"v": 1, "id": message_id, "op": "domain.define", "args": {"spec": limited("p", **fields)}}
    ).encode()
    reply = await asyncio.wait_for(
        await guarded.peer.send(guarded.host, body, message_id=message_id), 30
    )
    assert reply["error"]["code"] == "INVALID_ARG"
    field = next(iter(fields))
    assert f"args.spec.{field}" in reply["error"]["message"]
    letter = await dead.next()
    assert letter.body == body and letter.message_id == message_id
    assert letter.headers["x-virtbus-reason"] == reply["error"]["message"]
    assert letter.headers["x-virtbus-host"] == guarded.host
    assert await containers(docker, guarded.host) == []


async def test_a_body_over_the_size_limit_is_refused_and_the_agent_goes_on(
    fleet: Fleet, peer: BusPeer
) -> None:
    agent = await fleet.start(max_message_bytes=4096)
    dead = await DeadLetters(peer.channel).start()
    body = json.dumps({"v": 1, "id": "big", "op": "host.ping", "pad": "x" * 5000}).encode()
    reply = await asyncio.wait_for(await peer.send(agent.host, body, message_id="big"), 30)
    assert reply["error"]["code"] == "INVALID_ARG"
    assert (
        f"message of {len(body)} bytes is larger than the limit of 4096 bytes"
        in (reply["error"]["message"])
    )
    letter = await dead.next()
    assert letter.body == body
    assert "larger than the limit" in str(letter.headers["x-virtbus-reason"])
    assert (await peer.call(agent.host, "host.ping"))["ok"]
