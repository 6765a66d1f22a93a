"""Random and malicious commands published to a live ``virtbus agent`` process over the
real broker, with the real engine behind it. Every body gets a well-formed reply that is
never INTERNAL_ERROR; after each one, every container of the host is inspected and must
be within the agent's policy and unprivileged. At the end the agent still serves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import aiodocker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.host.driver import HOST_LABEL
from schemas.events import AgentEvent
from schemas.replies import Reply
from schemas.topology import host_queue
from tests.security.strategies import bodies, command_bodies
from tests.support import BusPeer, EventRecorder
from tests.support.fleet import VIRTBUS
from tests.support.hostile import TRIED
from tests.support.services import AMQP_URL, new_host

pytestmark = pytest.mark.integration

EXAMPLES = 200
REPLY_S = 60.0
MEMORY_KIB_MAX = 131072
PIDS_MAX = 256
POLICY = f"""
images = ["virtbus-test:*"]
networks = ["none"]
memory_kib_max = {MEMORY_KIB_MAX}
vcpus_max = 1
pids_max = {PIDS_MAX}
"""

T = TypeVar("T")


@dataclass
class LiveAgent:
    """An agent process and a peer on the broker, driven from synchronous tests (as
    hypothesis runs them) through an event loop of their own."""

    loop: asyncio.AbstractEventLoop
    host: str
    peer: BusPeer
    docker: aiodocker.Docker
    process: asyncio.subprocess.Process
    log: Path

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    async def send(self, body: bytes) -> Reply:
        message_id = f"fuzz-{uuid.uuid4().hex}"
        pending = await self.peer.send(self.host, body, message_id=message_id)
        return Reply.model_validate(await asyncio.wait_for(pending, REPLY_S))

    async def containers(self) -> list[dict[str, Any]]:
        filters = json.dumps({"label": [f"{HOST_LABEL}={self.host}"]})
        listed = await self.docker.containers.list(all=True, filters=filters)
        inspected = []
        for container in listed:
            try:
                inspected.append(await self.docker._query_json(f"containers/{container.id}/json"))
            except aiodocker.DockerError as error:
                if error.status != 404:  # removed between the list and the inspect
                    raise
        return inspected


async def _start(host: str, state: Path, policy: Path, log: Path) -> LiveAgent:
    peer = await BusPeer(AMQP_URL).__aenter__()
    presence = await EventRecorder(peer.channel, f"{host}.agent.*").start()
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            str(VIRTBUS),
            "agent",
            "--host",
            host,
            "--amqp-url",
            AMQP_URL,
            "--state-dir",
            str(state),
            "--queue-type",
            "classic",
            "--policy-file",
            str(policy),
            "--max-message-bytes",
            "65536",
            env=dict(os.environ),
            stdout=output,
            stderr=output,
        )
    await presence.wait_for(lambda e: isinstance(e, AgentEvent) and e.state == "online", 60)
    return LiveAgent(asyncio.get_running_loop(), host, peer, aiodocker.Docker(), process, log)


async def _stop(live: LiveAgent) -> None:
    try:
        if live.process.returncode is None:
            live.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(live.process.wait(), 60)
            except TimeoutError:
                live.process.kill()
                await live.process.wait()
        for container in await live.containers():
            await live.docker.containers.container(container["Id"]).delete(force=True)
        await live.peer.channel.queue_delete(host_queue(live.host))
    finally:
        await live.docker.close()
        await live.peer.__aexit__(None, None, None)


@pytest.fixture(scope="module")
def live(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    base = tmp_path_factory.mktemp("live-agent")
    policy = base / "policy.toml"
    policy.write_text(POLICY)
    loop = asyncio.new_event_loop()
    try:
        agent = loop.run_until_complete(
            _start(new_host(), base / "state", policy, base / "agent.log")
        )
        yield agent
        loop.run_until_complete(_stop(agent))
    finally:
        loop.close()


def _within_policy(container: dict[str, Any]) -> None:
    config = container["HostConfig"]
    name = container["Name"]
    assert container["Config"]["Image"].startswith("virtbus-test"), name
    assert config["Privileged"] is False, name
    assert not config["CapAdd"], name
    assert "no-new-privileges:true" in config["SecurityOpt"], name
    assert not config["Devices"], name
    assert not container["Mounts"] and not config["Binds"], name
    assert config["NetworkMode"] == "none", name
    assert (config["PidMode"], config["IpcMode"], config["UsernsMode"]) == ("", "private", ""), name
    assert 0 < config["Memory"] <= MEMORY_KIB_MAX * 1024, name
    assert config["NanoCpus"] == 1_000_000_000, name
    assert 0 < config["PidsLimit"] <= PIDS_MAX, name


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=st.one_of(command_bodies, command_bodies, bodies))
def test_hostile_commands_never_hurt_a_live_agent(live: LiveAgent, body: bytes) -> None:
    reply = live.run(live.send(body))
    assert reply.host == live.host
    assert reply.ok or reply.error is not None
    if reply.error is not None:
        assert reply.error.code != "INTERNAL_ERROR", reply.error.message
    TRIED[f"live agent: {reply.error.code if reply.error else 'ok'}"] += 1
    for container in live.run(live.containers()):
        _within_policy(container)


def test_the_agent_still_serves_after_the_hostile_stream(live: LiveAgent) -> None:
    assert live.process.returncode is None
    pong = live.run(live.peer.call(live.host, "host.ping"))
    assert pong["ok"] and pong["result"]["host"] == live.host
    for container in live.run(live.containers()):
        _within_policy(container)
    log = live.log.read_text(errors="replace")
    assert "Traceback" not in log
    assert " crashed" not in log


async def _queue_depth(host: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(host_queue(host), passive=True)
        return queue.declaration_result.message_count or 0


def test_nothing_is_left_unanswered(live: LiveAgent) -> None:
    assert live.run(_queue_depth(live.host)) == 0
