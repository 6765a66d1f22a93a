"""The only module that knows AMQP: topology, consuming commands, replies, events.

Published means the broker confirmed it (publisher confirms), not that anyone consumed it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractQueueIterator,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
)

from schemas.topology import (
    BROADCAST_ALL,
    BROADCAST_EXCHANGE,
    COMMANDS_EXCHANGE,
    DEAD_EXCHANGE,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
    group_key,
    host_queue,
)

log = logging.getLogger(__name__)

QueueType = Literal["quorum", "classic"]
JSON = "application/json"


@dataclass(frozen=True)
class Inbound:
    """A command as it arrived, before anyone parsed it."""

    body: bytes
    message_id: str | None
    correlation_id: str | None
    reply_to: str | None
    redelivered: bool
    message: AbstractIncomingMessage


class CommandFeed:
    """Commands as they arrive; ``close`` stops consuming and returns the commands
    taken but not yet handed out to the queue."""

    def __init__(self, iterator: AbstractQueueIterator) -> None:
        self._iterator = iterator

    def __aiter__(self) -> AsyncIterator[Inbound]:
        return self._inbound()

    async def _inbound(self) -> AsyncIterator[Inbound]:
        async for message in self._iterator:
            yield Inbound(
                body=message.body,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
                redelivered=bool(message.redelivered),
                message=message,
            )

    async def close(self) -> None:
        await self._iterator.close()


class Bus:
    """One host's connection to the broker; ``async with Bus(...) as bus``."""

    def __init__(
        self,
        url: str,
        host: str,
        groups: list[str],
        queue_type: QueueType = "quorum",
        prefetch: int = 64,
        on_reconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_reconnect = on_reconnect
        self._url = url
        self.host = host
        self.groups = groups
        self._queue_type = queue_type
        self._prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._events: AbstractRobustExchange | None = None
        self._queue: AbstractQueue | None = None

    async def __aenter__(self) -> Bus:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.connected.is_set()

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": f"virtbus-agent {self.host}"}
        )
        self._connection.reconnect_callbacks.add(lambda *_: self._on_reconnect())
        channel = await self._connection.channel(publisher_confirms=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        await channel.set_qos(prefetch_count=self._prefetch)
        await self._declare(channel)

    async def _declare(self, channel: AbstractRobustChannel) -> None:
        """The topology of DESIGN §2, idempotently."""
        commands = await channel.declare_exchange(
            COMMANDS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        broadcast = await channel.declare_exchange(
            BROADCAST_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        events = await channel.declare_exchange(
            EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        assert isinstance(events, AbstractRobustExchange)
        self._events = events
        dead = await channel.declare_exchange(
            DEAD_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_queue = await channel.declare_queue(DEAD_QUEUE, durable=True)
        await dead_queue.bind(dead)
        queue = await channel.declare_queue(
            host_queue(self.host),
            durable=True,
            arguments={"x-queue-type": self._queue_type, "x-dead-letter-exchange": DEAD_EXCHANGE},
        )
        await queue.bind(commands, routing_key=self.host)
        await queue.bind(broadcast, routing_key=BROADCAST_ALL)
        for group in self.groups:
            await queue.bind(broadcast, routing_key=group_key(group))
        self._queue = queue

    async def commands(self) -> CommandFeed:
        """Start consuming the host queue: the feed yields commands in arrival order."""
        if self._queue is None:
            raise RuntimeError("bus is not connected")
        iterator = self._queue.iterator()
        await iterator.consume()
        return CommandFeed(iterator)

    async def reply(self, inbound: Inbound, command_id: str, body: bytes) -> None:
        """Send a reply to the command's ``reply_to``; returns once the broker has it."""
        if inbound.reply_to is None:
            return
        await self._channel_or_fail().default_exchange.publish(
            aio_pika.Message(
                body,
                content_type=JSON,
                correlation_id=inbound.correlation_id or command_id,
                message_id=f"{self.host}:{command_id}",
                headers={"host": self.host},
            ),
            routing_key=inbound.reply_to,
        )

    async def settle(self, inbound: Inbound, accepted: bool) -> None:
        """Ack a command that was answered; dead-letter one that was refused at the edge."""
        if accepted:
            await inbound.message.ack()
        else:
            await inbound.message.reject(requeue=False)

    async def publish_event(self, routing_key: str, body: bytes, message_id: str | None) -> None:
        if self._events is None:
            raise RuntimeError("bus is not connected")
        await self._events.publish(
            aio_pika.Message(
                body,
                content_type=JSON,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
            ),
            routing_key=routing_key,
        )

    def _channel_or_fail(self) -> AbstractRobustChannel:
        if self._channel is None:
            raise RuntimeError("bus is not connected")
        return self._channel

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._channel = None
            self._events = None
            self._queue = None
