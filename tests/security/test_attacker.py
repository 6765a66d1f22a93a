"""Issue 6's attacker pass, all defences on at once: a provisioned agent user, a host
policy and signed commands. Publishing as a subscriber, mounting ``/``, asking for
privileged mode, replaying a signed command and sending garbage are each refused; the
refusals show in the log and the metrics; the agent keeps serving and Docker holds
nothing of this host."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiodocker
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import ChannelAccessRefused
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from yarl import URL

from agent.admin.provision import (
    Management,
    ProvisionError,
    agent_grant,
    new_password,
    orchestrator_grant,
    subscriber_grant,
)
from agent.host.agent import Agent
from agent.host.config import Config
from agent.host.driver import HOST_LABEL
from agent.signing import SigningKey
from schemas.topology import COMMANDS_EXCHANGE, host_queue
from tests.environment import unavailable
from tests.support.services import AMQP_URL, IMAGE, new_host

pytestmark = pytest.mark.integration

MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672/"
WAIT_S = 30.0


class Orchestrator:
    """Publishes command messages as the orchestrator user and collects their replies."""

    def __init__(self, channel: AbstractChannel, host: str, key: SigningKey) -> None:
        self._channel, self._host, self._key = channel, host, key
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._queue: AbstractQueue | None = None

    async def start(self) -> Orchestrator:
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.consume(self._on_reply, no_ack=True)
        return self

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiting = self._replies.get(message.correlation_id or "")
        if waiting is not None and not waiting.done():
            waiting.set_result(json.loads(message.body))

    def body(self, op: str, **fields: Any) -> tuple[str, bytes]:
        command_id = uuid.uuid4().hex
        return command_id, json.dumps({"v": 1, "id": command_id, "op": op, **fields}).encode()

    async def send(self, command_id: str, body: bytes, headers: dict[str, Any]) -> dict[str, Any]:
        assert self._queue is not None
        self._replies[command_id] = asyncio.get_running_loop().create_future()
        exchange = await self._channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                message_id=command_id,
                correlation_id=command_id,
                reply_to=self._queue.name,
                headers=headers,
            ),
            routing_key=self._host,
        )
        return await asyncio.wait_for(self._replies[command_id], WAIT_S)

    def signature(self, command_id: str, body: bytes) -> dict[str, Any]:
        return dict(self._key.headers(body, COMMANDS_EXCHANGE, self._host, command_id, command_id))

    async def signed(self, op: str, **fields: Any) -> dict[str, Any]:
        command_id, body = self.body(op, **fields)
        return await self.send(command_id, body, self.signature(command_id, body))


@pytest.fixture
async def management(services: None) -> AsyncIterator[Management]:
    async with Management(MANAGEMENT_URL) as api:
        try:
            await api.remove(f"vbtest-probe-{uuid.uuid4().hex[:6]}")
        except ProvisionError as error:
            unavailable(f"RabbitMQ's management API ({error})")
        yield api


def error_of(reply: dict[str, Any]) -> tuple[str, int]:
    assert reply["ok"] is False, reply
    return reply["error"]["code"], reply["error"]["vir_error"]


async def test_an_attacker_is_refused_every_time_and_the_agent_keeps_serving(
    management: Management, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = new_host()
    names = {role: f"vbtest-{role}-{uuid.uuid4().hex[:8]}" for role in ("agent", "orch", "sub")}
    urls = {}
    for role, grant in (
        ("agent", agent_grant(host)),
        ("orch", orchestrator_grant()),
        ("sub", subscriber_grant()),
    ):
        password = new_password()
        await management.provision(names[role], password, grant)
        urls[role] = str(
            URL(AMQP_URL).with_user(names[role]).with_password(password.get_secret_value())
        )
    await management.declare_topology()
    await management.declare_host_queue(host, queue_type="classic")
    private = Ed25519PrivateKey.generate()
    (tmp_path / "orch.pem").write_bytes(
        private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    (tmp_path / "orch.pub").write_bytes(
        private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    policy = tmp_path / "policy.toml"
    policy.write_text('images = ["virtbus-test:*"]\n')
    config = Config(
        host=host,
        amqp_url=urls["agent"],
        queue_type="classic",
        state_dir=tmp_path / "state",
        declare_topology=False,
        policy_file=policy,
        trusted_keys=[f"orch=ed25519:{tmp_path / 'orch.pub'}"],
    )
    docker = aiodocker.Docker()
    caplog.set_level(logging.WARNING)
    try:
        async with (
            Agent(config) as agent,
            await aio_pika.connect(urls["orch"]) as orch_connection,
            await aio_pika.connect(urls["sub"]) as sub_connection,
        ):
            orchestrator = await Orchestrator(
                await orch_connection.channel(),
                host,
                SigningKey.parse(f"orch=ed25519:{tmp_path / 'orch.pem'}"),
            ).start()
            assert (await orchestrator.signed("host.ping"))["ok"]

            sub_channel = await sub_connection.channel(publisher_confirms=True)
            commands = await sub_channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
            with pytest.raises(ChannelAccessRefused):
                await asyncio.wait_for(
                    commands.publish(aio_pika.Message(b'{"v":1}'), routing_key=host), WAIT_S
                )

            root = {"name": "rooted", "image": IMAGE, "mounts": [{"source": "/", "target": "/h"}]}
            reply = await orchestrator.signed("domain.define", args={"spec": root})
            assert error_of(reply) == ("OPERATION_DENIED", 29)

            privileged = {"name": "priv", "image": IMAGE, "privileged": True}
            reply = await orchestrator.signed("domain.define", args={"spec": privileged})
            assert error_of(reply) == ("INVALID_ARG", 8)

            command_id, body = orchestrator.body("host.ping")
            headers = orchestrator.signature(command_id, body)
            assert (await orchestrator.send(command_id, body, headers))["ok"]
            replayed = await orchestrator.send(command_id, body, headers)
            assert error_of(replayed) == ("AUTH_FAILED", 45)
            assert "replayed" in replayed["error"]["message"]

            unsigned_id, unsigned = orchestrator.body("host.ping")
            assert error_of(await orchestrator.send(unsigned_id, unsigned, {})) == (
                "AUTH_FAILED",
                45,
            )
            garbage_id = uuid.uuid4().hex
            garbage = b"\x00\xff{not json"
            reply = await orchestrator.send(
                garbage_id, garbage, orchestrator.signature(garbage_id, garbage)
            )
            assert error_of(reply) == ("INVALID_ARG", 8)

            assert (await orchestrator.signed("host.ping"))["ok"]
            registry = agent.metrics.registry
            for outcome, count in (("OPERATION_DENIED", 1), ("AUTH_FAILED", 2)):
                total = sum(
                    registry.get_sample_value(
                        "virtbus_commands_total", {"op": op, "outcome": outcome}
                    )
                    or 0.0
                    for op in ("domain.define", "invalid")
                )
                assert total == count, outcome
            for reason in ("replayed", "unsigned"):
                assert registry.get_sample_value("virtbus_auth_failures_total", {"reason": reason})
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert any("host path '/'" in line for line in warnings), warnings
            assert any("replayed" in line for line in warnings), warnings
            assert any("unsigned" in line for line in warnings), warnings
            assert not any("could not answer" in line for line in warnings), warnings
            filters = json.dumps({"label": [f"{HOST_LABEL}={host}"]})
            assert await docker.containers.list(all=True, filters=filters) == []
    finally:
        await docker.close()
        for name in names.values():
            await management.remove(name)
        async with await aio_pika.connect(AMQP_URL) as admin:
            await (await admin.channel()).queue_delete(host_queue(host))
