"""The client library gets its replies by RabbitMQ's direct reply-to, inside the wire
contract: a responder that is not virtbus (plain aio-pika here) sees ``reply_to`` as a
name it publishes to through the default exchange, as to any queue. Broadcasts are
published transient, commands to one host persistent. A channel the broker closes is
reopened with its reply consumer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from agent.client import Connection
from schemas.commands import Ping
from schemas.topology import BROADCAST, COMMANDS, group_key
from tests.support.fleet import Host
from tests.support.services import AMQP_URL, new_host

pytestmark = pytest.mark.integration

WAIT_S = 15.0


@dataclass
class Responder:
    """Answers every command on its own queue with a pong, as a host named ``host``."""

    host: str
    group: str
    seen: list[AbstractIncomingMessage] = field(default_factory=list)

    async def answer(self, message: AbstractIncomingMessage) -> None:
        self.seen.append(message)
        command = json.loads(message.body)
        reply = {"v": 1, "id": command["id"], "host": self.host, "ok": True, "result": {}}
        assert message.reply_to is not None
        await self.channel.default_exchange.publish(
            aio_pika.Message(json.dumps(reply).encode(), correlation_id=message.correlation_id),
            routing_key=message.reply_to,
        )

    channel: aio_pika.abc.AbstractChannel = field(init=False)


@pytest.fixture
async def responder(services: None) -> AsyncIterator[Responder]:
    found = Responder(new_host(), new_host())
    connection = await aio_pika.connect(AMQP_URL)
    try:
        found.channel = await connection.channel()
        queue = await found.channel.declare_queue(exclusive=True, auto_delete=True)
        for exchange, key in ((COMMANDS, found.host), (BROADCAST, group_key(found.group))):
            declared = await found.channel.declare_exchange(
                exchange.name, aio_pika.ExchangeType(exchange.kind), durable=exchange.durable
            )
            await queue.bind(declared, routing_key=key)
        await queue.consume(found.answer, no_ack=True)
        yield found
    finally:
        await connection.close()


async def test_a_plain_responder_answers_by_direct_reply_to(responder: Responder) -> None:
    async with Connection(AMQP_URL) as conn:
        reply = await conn.request(responder.host, conn.command(Ping), timeout_s=WAIT_S)
        gathered = await conn.broadcast(
            Ping, group=responder.group, expect={responder.host}, timeout_s=WAIT_S
        )
    assert reply.ok and reply.host == responder.host
    assert gathered.replies.keys() == {responder.host} and not gathered.missing
    to_host, to_group = responder.seen
    for message in (to_host, to_group):
        assert (message.reply_to or "").startswith("amq.rabbitmq.reply-to.")
    assert to_host.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert to_group.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT


async def test_replies_still_arrive_after_the_broker_closes_the_channel(
    responder: Responder,
) -> None:
    async with Connection(AMQP_URL) as conn:
        channel = conn.channel
        assert isinstance(channel, aio_pika.abc.AbstractRobustChannel)
        reopened = asyncio.Event()
        channel.reopen_callbacks.add(lambda *_: reopened.set())
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            # no such queue: the broker closes the channel (404), the client reopens it
            await channel.declare_queue(f"{responder.host}-absent", passive=True)
        async with asyncio.timeout(WAIT_S):
            await reopened.wait()
        reply = await conn.request(responder.host, conn.command(Ping), timeout_s=WAIT_S)
    assert reply.ok and reply.host == responder.host


async def test_an_agent_gets_none_of_its_direct_replies_back(host: Host) -> None:
    """RabbitMQ returns a mandatory publish to a direct reply-to name even as it delivers
    it: the agent's replies are not mandatory, so none comes back to it."""
    channel = host.agent._bus._channel
    assert channel is not None
    returned: list[AbstractIncomingMessage] = []
    channel.return_callbacks.add(lambda _, message: returned.append(message))
    async with Connection(AMQP_URL) as conn:
        for _ in range(3):
            reply = await conn.request(host.name, conn.command(Ping), timeout_s=WAIT_S)
            assert reply.ok and reply.host == host.name
        # a fence: the agent answers commands in order, and a return would come first
        fenced = await conn.request(host.name, conn.command(Ping), timeout_s=WAIT_S)
    assert fenced.ok and returned == []


async def test_an_event_no_queue_binds_is_confirmed_and_not_returned(host: Host) -> None:
    """Events are not mandatory either: a heartbeat nobody subscribed to is confirmed by
    the broker and dropped, never sent back to the agent."""
    channel = host.agent._bus._channel
    assert channel is not None
    returned: list[AbstractIncomingMessage] = []
    channel.return_callbacks.add(lambda _, message: returned.append(message))
    # the broker sends a return before the confirm it belongs to
    await host.agent._bus.publish_event(f"{new_host()}.agent.heartbeat", b"{}", None)
    assert returned == []
