"""Delivery guarantees seen from the wire: ordering on one domain, command ids, dead
letters and deadlines (docs/delivery.md)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aio_pika
import aiohttp
import pytest
from pamqp.common import FieldTable
from yarl import URL

from agent.admin.provision import Management
from agent.client import Connection, VirtbusError
from agent.host.bus import Bus
from schemas.topology import (
    COMMAND_MAX_AGE_MS,
    DEAD_EXCHANGE,
    DEAD_LETTER_BODY_BYTES,
    DEAD_LETTERS,
    DEAD_LETTERS_MAX_BYTES,
    DEAD_LETTERS_MAX_LENGTH,
    DEAD_LETTERS_TTL_MS,
    DEAD_QUEUE,
    host_queue,
)
from tests.support import DeadLetters
from tests.support.fleet import Host, spec
from tests.support.services import AMQP_URL, new_host

pytestmark = pytest.mark.integration

MANAGEMENT_URL = os.environ.get(
    "VIRTBUS_TEST_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/"
)

DOMAINS = 8
SEQUENTIAL_S = 20.0
PIPELINED = 201
BUDGET_S = 30.0


async def _running(host: Host, name: str) -> None:
    await host.ok("domain.define", args={"spec": spec(name)})
    await host.ok("domain.create", name)


async def test_strictly_sequential_suspend_resume_never_fails(host: Host) -> None:
    """Each command sent after the previous reply: libvirt's job lock never fails it, so
    neither may the agent (the reply comes at Docker's event, before Docker's call ends;
    Docker's record of a pause lags its own calls). Several domains at once, each
    strictly sequential for SEQUENTIAL_S, keep Docker busy enough for both to show."""
    names = [f"seq-{n}" for n in range(DOMAINS)]
    for name in names:
        await _running(host, name)
    deadline = time.monotonic() + SEQUENTIAL_S

    async def alternate(name: str) -> list[dict[str, object]]:
        failures, sent = [], 0
        while time.monotonic() < deadline or sent % 2:
            op = "domain.suspend" if sent % 2 == 0 else "domain.resume"
            reply = await host.call(op, name)
            sent += 1
            if not reply["ok"]:
                failures.append(reply)
        return failures

    failures = await asyncio.wait_for(
        asyncio.gather(*map(alternate, names)), SEQUENTIAL_S + BUDGET_S
    )
    assert failures == [[] for _ in names]
    for name in names:
        assert (await host.ok("domain.get_state", name))["state"] == 1


async def test_pipelined_suspend_resume_all_succeed_in_order(host: Host) -> None:
    """A burst sent without waiting runs in arrival order, each after Docker finished the
    one before it."""
    await _running(host, "burst")
    futures = []
    for i in range(PIPELINED):
        op = "domain.suspend" if i % 2 == 0 else "domain.resume"
        command_id = uuid.uuid4().hex
        body = {"v": 1, "id": command_id, "op": op, "target": {"name": "burst"}}
        futures.append(
            await host.peer.send(host.name, json.dumps(body).encode(), message_id=command_id)
        )
    replies = await asyncio.wait_for(asyncio.gather(*futures), BUDGET_S)
    assert [r for r in replies if not r["ok"]] == []
    state = await host.ok("domain.get_state", "burst")
    assert state["state"] == 3


async def test_a_reused_command_id_is_refused_and_the_domain_keeps_running(host: Host) -> None:
    await _running(host, "kept")
    first = await host.peer.call(host.name, "host.ping", id="job-1")
    assert first["ok"]
    letters = await DeadLetters(host.peer.channel).start()
    reply = await host.peer.call(host.name, "domain.destroy", {"name": "kept"}, id="job-1")
    assert not reply["ok"]
    assert reply["error"]["code"] == "INVALID_ARG" and reply["error"]["vir_error"] == 8
    assert reply["error"]["message"] == (
        "invalid argument: command id 'job-1' was already used with op host.ping, "
        "not domain.destroy"
    )
    letter = await letters.next()
    assert letter.message_id == "job-1" and b"domain.destroy" in letter.body
    assert (await host.ok("domain.get_state", "kept"))["state"] == 1
    again = await host.peer.call(host.name, "host.ping", id="job-1")
    assert again == first


async def test_a_large_refused_body_is_dead_lettered_as_a_bounded_copy(host: Host) -> None:
    big = json.dumps({"v": 1, "id": "big", "op": "host.ping", "pad": "x" * 3_000_000}).encode()
    letters = await DeadLetters(host.peer.channel).start()
    reply = await (await host.peer.send(host.name, big, message_id="big"))
    assert reply["error"]["code"] == "INVALID_ARG"
    letter = await _letter(letters, "big")
    assert letter.body == big[:DEAD_LETTER_BODY_BYTES]
    assert letter.headers["x-virtbus-truncated"] is True
    assert letter.headers["x-virtbus-original-size"] == len(big)
    assert letter.headers["x-virtbus-original-sha256"] == hashlib.sha256(big).hexdigest()
    assert "larger than the limit" in str(letter.headers["x-virtbus-reason"])


async def test_a_small_refused_body_is_dead_lettered_whole(host: Host) -> None:
    letters = await DeadLetters(host.peer.channel).start()
    reply = await (await host.peer.send(host.name, b"not json", message_id="small"))
    assert not reply["ok"]
    letter = await _letter(letters, "small")
    assert letter.body == b"not json" and "x-virtbus-truncated" not in letter.headers


async def test_a_command_nobody_takes_before_its_deadline_leaves_the_queue(
    services: None,
) -> None:
    """The client library's deadline is the message's expiration too: the command is
    dead-lettered as expired instead of waiting for an agent that never comes."""
    name = new_host()
    async with Bus([AMQP_URL], name, []):
        pass  # the host queue, as its agent declared it before going away
    try:
        async with Connection(AMQP_URL, timeout_s=1.0) as conn:
            letters = await DeadLetters(conn.channel).start()
            command = conn.command("host.ping", timeout_s=1.0)
            with pytest.raises(VirtbusError) as raised:
                await conn.request(name, command, timeout_s=1.0)
            assert raised.value.get_error_code() == 68
            letter = await _letter(letters, command.id)
            assert letter.headers["x-first-death-reason"] == "expired"
            assert letter.headers["x-first-death-queue"] == host_queue(name)
            deaths: Any = letter.headers["x-death"]
            assert 0 < int(deaths[0]["original-expiration"]) <= 1000
    finally:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await (await connection.channel()).queue_delete(host_queue(name))


async def _letter(letters: DeadLetters, message_id: str) -> aio_pika.abc.AbstractIncomingMessage:
    """The dead letter of one message: the dead-letter exchange is shared by every test."""
    while (letter := await letters.next()).message_id != message_id:
        pass
    return letter


class Vhost:
    """A vhost of its own, so that queues can be declared as an older release did."""

    def __init__(self, api: aiohttp.ClientSession, name: str) -> None:
        self.api = api
        self.name = name
        self.amqp_url = str(URL(AMQP_URL).with_path("/" + name))

    async def queue(self, queue: str) -> dict[str, Any]:
        async with self.api.get(f"queues/{quote(self.name, safe='')}/{quote(queue, safe='')}") as r:
            r.raise_for_status()
            found: dict[str, Any] = await r.json()
            return found


@pytest.fixture
async def vhost(services: None) -> AsyncIterator[Vhost]:
    base = URL(MANAGEMENT_URL)
    auth = aiohttp.encode_basic_auth(base.user or "guest", base.password or "guest")
    name = f"vbtest-{uuid.uuid4().hex[:10]}"
    async with aiohttp.ClientSession(
        base_url=str(base.with_user(None).with_path("/api/")),
        headers={"Authorization": auth},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as api:
        try:
            async with api.put(f"vhosts/{name}") as created:
                created.raise_for_status()
        except aiohttp.ClientError as error:
            pytest.skip(f"RabbitMQ's management API is not available ({error})")
        try:
            yield Vhost(api, name)
        finally:
            async with api.delete(f"vhosts/{name}"):
                pass


async def test_dead_letters_are_bounded_in_length_bytes_and_age(vhost: Vhost) -> None:
    async with Bus([vhost.amqp_url], new_host(), []):
        pass
    queue = await vhost.queue(DEAD_QUEUE)
    assert queue["arguments"] == dict(DEAD_LETTERS.arguments)
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel()
        dead = await channel.get_exchange(DEAD_EXCHANGE, ensure=False)
        extra = 50
        for start in range(0, DEAD_LETTERS_MAX_LENGTH + extra, 1000):
            await asyncio.gather(
                *(
                    dead.publish(aio_pika.Message(b"x", message_id=str(n)), routing_key="")
                    for n in range(start, min(start + 1000, DEAD_LETTERS_MAX_LENGTH + extra))
                )
            )
        declared = await channel.declare_queue(DEAD_QUEUE, passive=True)
        assert declared.declaration_result.message_count == DEAD_LETTERS_MAX_LENGTH
        oldest = await declared.get(timeout=5)
        assert oldest is not None and oldest.message_id == str(extra)


async def test_host_queues_give_commands_a_maximum_age(vhost: Vhost) -> None:
    name = new_host()
    async with Bus([vhost.amqp_url], name, []):
        pass
    queue = await vhost.queue(host_queue(name))
    assert queue["arguments"]["x-message-ttl"] == COMMAND_MAX_AGE_MS


async def test_queues_of_an_older_release_are_kept_and_bounded_by_provisioning(
    vhost: Vhost,
) -> None:
    name = new_host()
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(DEAD_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
        await channel.declare_queue(DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        old: FieldTable = {"x-queue-type": "quorum", "x-dead-letter-exchange": DEAD_EXCHANGE}
        await channel.declare_queue(host_queue(name), durable=True, arguments=old)
    async with Bus([vhost.amqp_url], name, []) as bus:
        assert bus.connected
    assert (await vhost.queue(host_queue(name)))["arguments"] == old
    async with Management(MANAGEMENT_URL) as api:
        await api.declare_topology(vhost.name)
        await api.declare_host_queue(name, vhost=vhost.name)

    async def bounded(queue: str) -> dict[str, Any]:
        for _ in range(100):
            found = await vhost.queue(queue)
            if found.get("operator_policy"):
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"no operator policy on {queue}")

    dead = await bounded(DEAD_QUEUE)
    assert dead["effective_policy_definition"] == {
        "max-length": DEAD_LETTERS_MAX_LENGTH,
        "max-length-bytes": DEAD_LETTERS_MAX_BYTES,
        "message-ttl": DEAD_LETTERS_TTL_MS,
    }
    commands = await bounded(host_queue(name))
    assert commands["effective_policy_definition"] == {"message-ttl": COMMAND_MAX_AGE_MS}
