"""``virtbus agent`` as an operator runs it: a process, configured by flags and
VIRTBUS_* variables, that raises its soft descriptor limit to the hard one, drains its
work and says goodbye on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
from pathlib import Path

import aiodocker
import pytest

from agent.host.driver import HOST_LABEL
from schemas.commands import OPS
from schemas.events import AgentEvent
from tests.support import BusPeer, EventRecorder
from tests.support.fleet import VIRTBUS, Fleet, spec
from tests.support.services import AMQP_URL, new_host

pytestmark = pytest.mark.integration


async def _docker_action(docker: aiodocker.Docker, host: str, action: str) -> None:
    """Returns once Docker reports ``action`` on a container of ``host``."""
    filters = json.dumps({"label": [f"{HOST_LABEL}={host}"], "event": [action]})
    subscriber = docker.events.subscribe(filters=filters)  # type: ignore[no-untyped-call]
    try:
        while (event := await subscriber.get()) is not None:
            if event.get("Action") == action:
                return
    finally:
        await docker.events.stop()  # type: ignore[no-untyped-call]


def _lower_descriptor_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard // 2), hard))


def _descriptor_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no descriptor limit in /proc/{pid}/limits")


async def test_agent_process_serves_and_drains_on_sigterm(
    fleet: Fleet, peer: BusPeer, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    host = new_host()
    fleet.hosts.add(host)
    presence = await EventRecorder(peer.channel, f"{host}.agent.*").start()
    environment = {
        **os.environ,
        "VIRTBUS_HOST": host,
        "VIRTBUS_AMQP_URL": AMQP_URL,
        "VIRTBUS_STATE_DIR": str(tmp_path / "state"),
    }
    process = await asyncio.create_subprocess_exec(
        str(VIRTBUS),
        "agent",
        "--heartbeat-s",
        "0.2",
        "--queue-type",
        "classic",
        env=environment,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_lower_descriptor_limit,
    )
    try:
        online = await presence.wait_for(lambda e: isinstance(e, AgentEvent))
        assert isinstance(online, AgentEvent)
        assert online.state == "online"
        soft, hard = _descriptor_limits(process.pid)
        assert soft == hard, "the agent raises its soft descriptor limit to the hard one"
        assert set(online.capabilities) == set(OPS)
        await presence.wait_for(lambda e: isinstance(e, AgentEvent) and e.state == "heartbeat")
        stubborn = 'trap "" TERM; while true; do sleep 1; done'
        await peer.ok(
            host, "domain.define", args={"spec": spec("slow", "sh", "-c", stubborn, init=False)}
        )
        await peer.ok(host, "domain.create", {"name": "slow"})
        watching = asyncio.create_task(_docker_action(docker, host, "kill"))
        shutdown = peer.call(host, "domain.shutdown", {"name": "slow"}, {"timeout_s": 2})
        in_flight = asyncio.create_task(shutdown)
        await asyncio.wait_for(watching, 30)
        process.send_signal(signal.SIGTERM)
        reply = await asyncio.wait_for(in_flight, 30)
        assert reply["ok"], reply
        assert reply["result"]["state"] == 5
        assert await asyncio.wait_for(process.wait(), 30) == 0
        offline = await presence.wait_for(
            lambda e: isinstance(e, AgentEvent) and e.state == "offline"
        )
        assert offline.time >= online.time
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "guest:guest" not in log
    assert "stopped" in log
