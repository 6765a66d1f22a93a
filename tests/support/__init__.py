"""Test-side peers on the bus: a raw command sender and an event recorder.

They speak plain AMQP with aio-pika, as any orchestrator would, so the integration
tests see the agent only through the wire.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from schemas.events import (
    EVENT_ADAPTER,
    AgentEvent,
    DomainEvent,
    Event,
    LifecycleEvent,
    NetworkEvent,
)
from schemas.topology import COMMANDS_EXCHANGE, DEAD_EXCHANGE, EVENTS_EXCHANGE

WAIT_S = 30.0


class BusPeer:
    """Sends commands to a host and collects replies; ``async with BusPeer(url)``."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.extra_replies: list[dict[str, Any]] = []
        self._received: dict[str, list[dict[str, Any]]] = {}
        self._arrived = asyncio.Condition()

    async def __aenter__(self) -> BusPeer:
        self._connection = await aio_pika.connect(self._url)
        self.channel: AbstractChannel = await self._connection.channel()
        self._reply_queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await self._reply_queue.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        async with self._arrived:
            self._received.setdefault(message.correlation_id or "", []).append(body)
            self._arrived.notify_all()
        future = self._replies.get(message.correlation_id or "")
        if future is None or future.done():
            self.extra_replies.append(body)
        else:
            future.set_result(body)

    async def send(
        self,
        host: str,
        body: bytes,
        *,
        message_id: str | None = None,
        reply: bool = True,
        exchange: str = COMMANDS_EXCHANGE,
        routing_key: str | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        """Publish a raw body; the future resolves with the reply."""
        correlation_id = message_id or uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[correlation_id] = future
        target = await self.channel.get_exchange(exchange, ensure=False)
        await target.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                message_id=message_id,
                correlation_id=correlation_id,
                reply_to=self._reply_queue.name if reply else None,
            ),
            routing_key=routing_key or host,
        )
        return future

    def answered(self, correlation_id: str) -> set[str]:
        """The hosts that have replied to one command so far."""
        return {r["host"] for r in self._received.get(correlation_id, [])}

    async def replies(
        self, correlation_id: str, hosts: set[str], timeout: float = WAIT_S
    ) -> dict[str, dict[str, Any]]:
        """Every reply to one (broadcast) command, by host, once ``hosts`` have answered."""

        def by_host() -> dict[str, dict[str, Any]]:
            return {r["host"]: r for r in self._received.get(correlation_id, [])}

        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: hosts <= by_host().keys()), timeout
            )
        return by_host()

    async def call(
        self,
        host: str,
        op: str,
        target: dict[str, Any] | None = None,
        args: dict[str, Any] | None = None,
        **envelope: Any,
    ) -> dict[str, Any]:
        """Send one command and wait for its reply."""
        command_id = envelope.pop("id", None) or uuid.uuid4().hex
        document: dict[str, Any] = {"v": 1, "id": command_id, "op": op, **envelope}
        if target is not None:
            document["target"] = target
        if args is not None:
            document["args"] = args
        future = await self.send(host, json.dumps(document).encode(), message_id=command_id)
        return await asyncio.wait_for(future, WAIT_S)

    async def ok(
        self,
        host: str,
        op: str,
        target: dict[str, Any] | None = None,
        args: dict[str, Any] | None = None,
        **envelope: Any,
    ) -> dict[str, Any]:
        """``call`` that insists on success and returns the result."""
        reply = await self.call(host, op, target, args, **envelope)
        assert reply["ok"], reply
        result: dict[str, Any] = reply["result"]
        return result


class EventRecorder:
    """Every event published under a routing-key pattern, in arrival order."""

    def __init__(self, channel: AbstractChannel, pattern: str) -> None:
        self._channel = channel
        self._pattern = pattern
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    async def start(self) -> EventRecorder:
        exchange = await self._channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        self._queue: AbstractQueue = await self._channel.declare_queue(
            exclusive=True, auto_delete=True
        )
        await self._queue.bind(exchange, routing_key=self._pattern)
        await self._queue.consume(self._on_event, no_ack=True)
        return self

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        event = EVENT_ADAPTER.validate_json(message.body)
        assert getattr(event, "routing_key") == message.routing_key  # noqa: B009
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def wait_for(self, match: Callable[[Event], bool], timeout: float = WAIT_S) -> Event:
        """The first recorded event that matches, waiting for it if need be."""

        def found() -> Event | None:
            return next((e for e in self.events if match(e)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
        event = found()
        assert event is not None
        return event

    def domain_events(self) -> list[DomainEvent]:
        return [e for e in self.events if not isinstance(e, AgentEvent | NetworkEvent)]


def lifecycle(events: list[DomainEvent], name: str | None = None) -> list[tuple[str, str]]:
    """(event, detail) of the lifecycle events, of one domain if named."""
    return [
        (e.event, e.detail)
        for e in events
        if isinstance(e, LifecycleEvent) and (name is None or e.domain.name == name)
    ]


class DeadLetters:
    """Every dead letter from the moment ``start`` returns."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._letters: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def start(self) -> DeadLetters:
        exchange = await self._channel.get_exchange(DEAD_EXCHANGE, ensure=False)
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._letters.put, no_ack=True)
        return self

    async def next(self, timeout: float = WAIT_S) -> AbstractIncomingMessage:
        return await asyncio.wait_for(self._letters.get(), timeout)
