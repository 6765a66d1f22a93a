"""Event streams: the events exchange, filtered by host, kind, lifecycle event and
domain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from agent.errors import OperationTimeout, VirtbusError
from schemas.codes import ErrorCode, EventId
from schemas.events import EVENT_ADAPTER, DomainEventBase, Event
from schemas.topology import EVENTS_EXCHANGE

EventKind = Literal[
    "lifecycle", "reboot", "tunable", "metadata_change", "health", "agent", "device", "network"
]
KINDS: dict[int, EventKind] = {
    EventId.LIFECYCLE: "lifecycle",
    EventId.REBOOT: "reboot",
    EventId.BALLOON_CHANGE: "tunable",
    EventId.TUNABLE: "tunable",
    EventId.DEVICE_ADDED: "device",
    EventId.DEVICE_REMOVED: "device",
    EventId.AGENT_LIFECYCLE: "health",
    EventId.METADATA_CHANGE: "metadata_change",
}
"""The kind of stream that carries each of libvirt's event ids (a memory change is a
tunable on the bus and libvirt's balloon change; a health check's verdict is libvirt's
guest agent lifecycle)."""


def binding_keys(host: str, kind: EventKind | None, event: str | None) -> list[str]:
    """The routing-key patterns that select the events asked for."""
    if event is not None:
        return [f"{host}.lifecycle.{event}.*"]
    by_kind = {
        "lifecycle": f"{host}.lifecycle.#",
        "reboot": f"{host}.reboot",
        "tunable": f"{host}.tunable",
        "metadata_change": f"{host}.metadata_change",
        "health": f"{host}.health.*",
        "agent": f"{host}.agent.*",
        "device": f"{host}.device.*",
        "network": f"{host}.network.#",
    }
    if kind is not None:
        return [by_kind[kind]]
    return [value for key, value in by_kind.items() if key != "agent"]


class EventStream:
    """Events as they arrive, from the moment ``start`` returns (or ``async with``)."""

    def __init__(
        self,
        channel: AbstractChannel,
        host: str,
        domain: str | None,
        kind: EventKind | None,
        event: str | None,
    ) -> None:
        if event is not None and kind not in (None, "lifecycle"):
            raise VirtbusError.of(ErrorCode.INVALID_ARG, "an event name needs kind lifecycle")
        self._channel = channel
        self._keys = binding_keys(host, kind, event)
        self._domain = domain
        self._arrived: asyncio.Queue[Event] = asyncio.Queue()
        self._queue: AbstractQueue | None = None
        self._consumer = ""

    async def __aenter__(self) -> EventStream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        exchange = await self._channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self._keys:
            await self._queue.bind(exchange, routing_key=key)
        self._consumer = await self._queue.consume(self._on_event, no_ack=True)

    async def stop(self) -> None:
        """Stop listening; the stream's queue goes with it."""
        queue, self._queue = self._queue, None
        if queue is not None and not self._channel.is_closed:
            with contextlib.suppress(aio_pika.exceptions.AMQPError, RuntimeError):
                await queue.cancel(self._consumer)
                await queue.delete(if_unused=False, if_empty=False)

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        try:
            event = EVENT_ADAPTER.validate_json(message.body)
        except ValidationError:
            return
        if self._domain is None or (
            isinstance(event, DomainEventBase) and event.domain.name == self._domain
        ):
            self._arrived.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._arrived.get()

    async def next(self, timeout_s: float) -> Event:
        """The next event, or OperationTimeout."""
        try:
            return await asyncio.wait_for(self._arrived.get(), timeout_s)
        except TimeoutError:
            raise OperationTimeout(f"no event within {timeout_s:g} s") from None
