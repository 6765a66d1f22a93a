"""Signed commands against a live agent on the real broker: signed commands run; unsigned,
wrongly signed, stale and replayed ones get AUTH_FAILED (45), are dead-lettered, logged
and counted, and the agent keeps serving, also across a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from agent.client import VirtbusError, connect
from agent.host.agent import Agent
from agent.signing import SIGNATURE_HEADER, SigningKey
from schemas.codes import ErrorCode
from schemas.topology import BROADCAST_EXCHANGE, COMMANDS_EXCHANGE, DEAD_EXCHANGE
from tests.support.fleet import CLI, Fleet, spec
from tests.support.services import AMQP_URL

pytestmark = pytest.mark.integration

WAIT_S = 30.0
SECRET = b"integration-secret-0123456789abcdef0123456789"


@dataclass
class KeyFiles:
    secret: Path
    private: Path
    public: Path

    @property
    def trusted(self) -> list[str]:
        return [f"orch1=hmac-sha256:{self.secret}", f"orch2=ed25519:{self.public}"]

    def hmac(self) -> SigningKey:
        return SigningKey.parse(f"orch1=hmac-sha256:{self.secret}")

    def ed25519(self) -> SigningKey:
        return SigningKey.parse(f"orch2=ed25519:{self.private}")


@pytest.fixture
def key_files(tmp_path: Path) -> KeyFiles:
    private = Ed25519PrivateKey.generate()
    files = KeyFiles(tmp_path / "orch1.secret", tmp_path / "orch2.pem", tmp_path / "orch2.pub")
    files.secret.write_bytes(SECRET)
    files.private.write_bytes(
        private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    files.public.write_bytes(
        private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return files


class Sender:
    """Publishes hand-made command messages and collects every reply and dead letter."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._replies: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._dead: dict[str, asyncio.Queue[AbstractIncomingMessage]] = {}

    async def start(self) -> Sender:
        self._reply_queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._reply_queue.consume(self._on_reply, no_ack=True)
        dead = await self._channel.get_exchange(DEAD_EXCHANGE, ensure=False)
        dead_queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await dead_queue.bind(dead)
        await dead_queue.consume(self._on_dead, no_ack=True)
        return self

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        queue = self._replies.get(message.correlation_id or "")
        if queue is not None:
            queue.put_nowait(json.loads(message.body))

    async def _on_dead(self, message: AbstractIncomingMessage) -> None:
        queue = self._dead.get(message.message_id or "")
        if queue is not None:
            queue.put_nowait(message)

    def command(self, op: str = "host.ping", **fields: Any) -> tuple[str, bytes]:
        command_id = uuid.uuid4().hex
        self._replies[command_id] = asyncio.Queue()
        self._dead[command_id] = asyncio.Queue()
        return command_id, json.dumps({"v": 1, "id": command_id, "op": op, **fields}).encode()

    async def publish(
        self,
        host: str,
        command_id: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        exchange: str = COMMANDS_EXCHANGE,
        routing_key: str | None = None,
    ) -> None:
        target = await self._channel.get_exchange(exchange, ensure=False)
        await target.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                message_id=command_id,
                correlation_id=command_id,
                reply_to=self._reply_queue.name,
                headers=headers or {},
            ),
            routing_key=routing_key or host,
        )

    def signed(
        self,
        key: SigningKey,
        host: str,
        command_id: str,
        body: bytes,
        now: float | None = None,
        exchange: str = COMMANDS_EXCHANGE,
    ) -> dict[str, Any]:
        return dict(key.headers(body, exchange, host, command_id, command_id, now))

    async def reply(self, command_id: str, host: str) -> dict[str, Any]:
        """The reply of ``host`` (a broadcast reaches every agent on the broker)."""

        async def from_host() -> dict[str, Any]:
            while (reply := await self._replies[command_id].get())["host"] != host:
                pass
            return reply

        return await asyncio.wait_for(from_host(), WAIT_S)

    async def dead_letter(self, command_id: str) -> AbstractIncomingMessage:
        return await asyncio.wait_for(self._dead[command_id].get(), WAIT_S)


@pytest.fixture
async def sender(services: None) -> AsyncIterator[Sender]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        yield await Sender(await connection.channel()).start()


async def signed_agent(
    fleet: Fleet, key_files: KeyFiles, host: str | None = None, groups: tuple[str, ...] = ()
) -> Agent:
    return await fleet.start(
        host=host,
        groups=groups,
        queue_type="classic",
        trusted_keys=key_files.trusted,
        signing_window_s=60,
    )


def auth_failures(agent: Agent, reason: str) -> float:
    value = agent.metrics.registry.get_sample_value(
        "virtbus_auth_failures_total", {"reason": reason}
    )
    return value or 0.0


async def test_signed_commands_run_with_either_algorithm(fleet: Fleet, key_files: KeyFiles) -> None:
    agent = await signed_agent(fleet, key_files)
    for key in (key_files.hmac(), key_files.ed25519()):
        async with connect(AMQP_URL, timeout_s=20, signing_key=key) as conn:
            assert (await conn.ping(agent.host)).host == agent.host
            web = await conn.define(agent.host, spec(f"web-{key.key_id}"))
            await web.create()
            assert (await web.state()).state == 1
            await web.destroy()
            await web.undefine()
            broadcast = await conn.broadcast("host.ping", expect={agent.host}, timeout_s=10)
            assert broadcast.replies[agent.host].ok, broadcast.replies
    assert sum(auth_failures(agent, r) for r in ("unsigned", "bad_signature", "replayed")) == 0


async def test_unsigned_forged_stale_and_replayed_commands_get_auth_failed(
    fleet: Fleet, key_files: KeyFiles, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.host.dispatch")
    group = f"g{uuid.uuid4().hex[:12]}"
    agent = await signed_agent(fleet, key_files, groups=(group,))
    host = agent.host
    key = key_files.ed25519()

    async def refused(command_id: str, reason: str) -> None:
        reply = await sender.reply(command_id, host)
        assert reply["ok"] is False, reply
        assert (reply["error"]["code"], reply["error"]["vir_error"]) == ("AUTH_FAILED", 45)
        assert reply["error"]["message"].startswith(f"authentication failed: {reason}: "), reply
        assert reply["id"] == command_id
        letter = await sender.dead_letter(command_id)
        assert str(letter.headers.get("x-virtbus-reason")).startswith(
            f"authentication failed: {reason}: "
        )

    async def still_serving() -> None:
        command_id, body = sender.command()
        await sender.publish(host, command_id, body, sender.signed(key, host, command_id, body))
        assert (await sender.reply(command_id, host))["ok"] is True

    unsigned_id, body = sender.command("domain.define", args={"spec": spec("intruder")})
    await sender.publish(host, unsigned_id, body)
    await refused(unsigned_id, "unsigned")
    await still_serving()

    forged_id, body = sender.command("domain.define", args={"spec": spec("intruder")})
    headers = sender.signed(key, host, forged_id, body)
    tampered = body.replace(b"intruder", b"intrudor")
    await sender.publish(host, forged_id, tampered, headers)
    await refused(forged_id, "bad signature")
    await still_serving()

    stale_id, body = sender.command()
    await sender.publish(
        host, stale_id, body, sender.signed(key, host, stale_id, body, time.time() - 120)
    )
    await refused(stale_id, "stale")
    await still_serving()

    replay_id, body = sender.command()
    headers = sender.signed(key, host, replay_id, body)
    await sender.publish(host, replay_id, body, headers)
    assert (await sender.reply(replay_id, host))["ok"] is True
    await sender.publish(host, replay_id, body, headers)
    await refused(replay_id, "replayed")
    await still_serving()

    stranger = SigningKey.hmac_sha256("orch9", SECRET)
    unknown_id, body = sender.command()
    await sender.publish(host, unknown_id, body, sender.signed(stranger, host, unknown_id, body))
    await refused(unknown_id, "unknown key")

    rerouted_id, body = sender.command()
    headers = sender.signed(key, host, rerouted_id, body)
    await sender.publish(host, rerouted_id, body, headers, BROADCAST_EXCHANGE, f"group.{group}")
    await refused(rerouted_id, "bad signature")
    await still_serving()

    for reason in ("unsigned", "bad_signature", "stale", "replayed", "unknown_key"):
        expected = 2 if reason == "bad_signature" else 1
        assert auth_failures(agent, reason) == expected, reason
    logged = caplog.text
    for command_id in (unsigned_id, forged_id, stale_id, replay_id, unknown_id):
        assert f"authentication failed for command '{command_id}'" in logged
    assert "(key 'orch2'): replayed" in logged
    assert "(key 'orch9'): unknown key" in logged
    assert SECRET.decode() not in logged
    assert headers[SIGNATURE_HEADER] not in logged
    list_id, body = sender.command("host.list_domains")
    await sender.publish(host, list_id, body, sender.signed(key, host, list_id, body))
    assert (await sender.reply(list_id, host))["result"] == {"domains": []}


async def test_replay_is_refused_after_the_agent_restarts(
    fleet: Fleet, key_files: KeyFiles, sender: Sender
) -> None:
    agent = await signed_agent(fleet, key_files)
    host = agent.host
    key = key_files.hmac()
    command_id, body = sender.command()
    headers = sender.signed(key, host, command_id, body)
    await sender.publish(host, command_id, body, headers)
    assert (await sender.reply(command_id, host))["ok"] is True
    await agent.stop()

    restarted = await signed_agent(fleet, key_files, host)
    await sender.publish(host, command_id, body, headers)
    reply = await sender.reply(command_id, host)
    assert reply["error"]["code"] == "AUTH_FAILED"
    assert reply["error"]["message"].startswith("authentication failed: replayed: ")
    assert auth_failures(restarted, "replayed") == 1
    fresh_id, body = sender.command()
    await sender.publish(host, fresh_id, body, sender.signed(key, host, fresh_id, body))
    assert (await sender.reply(fresh_id, host))["ok"] is True


async def test_cli_signs_with_the_key_from_its_environment(
    fleet: Fleet, key_files: KeyFiles, cli: CLI
) -> None:
    agent = await signed_agent(fleet, key_files)
    unsigned = await cli("list", "--host", agent.host)
    assert unsigned.status == 1
    assert unsigned.err.startswith("error: authentication failed: unsigned: "), unsigned.err
    cli.env["VIRTBUS_SIGNING_KEY"] = f"orch2=ed25519:{key_files.private}"
    signed = await cli("list", "--all", "--host", agent.host)
    assert signed.status == 0, signed.err
    refused = await cli(
        "list", "--host", agent.host, "--signing-key", f"orch9=hmac-sha256:{key_files.secret}"
    )
    assert refused.status == 1
    assert "unknown key" in refused.err


async def test_client_sees_auth_failed_as_a_virtbus_error(
    fleet: Fleet, key_files: KeyFiles
) -> None:
    agent = await signed_agent(fleet, key_files)
    async with connect(AMQP_URL, timeout_s=20) as conn:
        with pytest.raises(VirtbusError) as raised:
            await conn.ping(agent.host)
    assert (raised.value.code, raised.value.vir_error) == (ErrorCode.AUTH_FAILED, 45)
