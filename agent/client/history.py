"""The fleet's event history: the stream queue ``virtbus.events.history`` read from an
offset or a time, then live, across broker restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Literal

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from pydantic import ValidationError

from agent.client.events import EventKind
from agent.errors import BrokerUnreachable, OperationTimeout
from schemas.events import EVENT_ADAPTER, AgentEvent, DomainEventBase, Event, LifecycleEvent
from schemas.topology import EVENTS, HISTORY, HISTORY_BINDINGS, HISTORY_QUEUE

log = logging.getLogger(__name__)
Since = int | datetime | Literal["first", "last", "next"]
"""Where a reader starts: an offset of the history, a time, or one of RabbitMQ's names."""
StateListener = Callable[[bool, str], None]
"""Told (connected, why) each time the reader loses or regains the broker."""
PREFETCH = 500
TAIL_WAIT_S = 5.0
"""How long a reader with ``last`` waits for the broker to show the history's newest
offset before it reads from ``since`` instead."""


@dataclass(frozen=True)
class Replayed:
    """One event of the history with its offset there (fleet-wide, increasing)."""

    offset: int
    event: Event


def _wanted(
    event: Event,
    host: str,
    domain: str | None,
    kind: EventKind | None,
    name: str | None,
    presence: bool,
) -> bool:
    if host != "*" and event.host != host:
        return False
    if kind is None and isinstance(event, AgentEvent) and not presence:
        return False
    if kind is not None and event.kind != kind:
        return False
    if name is not None and not (isinstance(event, LifecycleEvent) and event.event == name):
        return False
    if domain is not None:
        return isinstance(event, DomainEventBase) and event.domain.name == domain
    return True


class EventHistory:
    """Events of the history from ``since`` on, then live, in offset order: those of
    ``host`` (``*``: all), ``domain`` (by name), ``kind`` and lifecycle ``event``; without
    a kind, domain events, and with ``presence`` the agents' arrivals and goodbyes too.

    Guarantees: each offset is delivered at most once; a lost broker connection is
    retried every ``retry_s`` and reading resumes right after the last offset delivered,
    so nothing published in between is skipped while the history still holds it.
    ``on_state`` is told each loss and recovery. A ``datetime`` start skips events older
    than it (the broker starts at the chunk that holds it). With ``last``, reading starts
    no earlier than ``last`` offsets before the history's newest (counted before the
    filter), so a reader that wants the recent past does not replay a long one."""

    def __init__(
        self,
        url: str,
        since: Since,
        *,
        host: str = "*",
        domain: str | None = None,
        kind: EventKind | None = None,
        event: str | None = None,
        presence: bool = False,
        last: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        retry_s: float = 1.0,
        on_state: StateListener | None = None,
        name: str = "virtbus history",
    ) -> None:
        self._url = url
        self._ssl_context = ssl_context
        self._since = since
        self._filter = (host, domain, kind, event, presence)
        self._last = last
        self._retry_s = retry_s
        self._on_state = on_state
        self._name = name
        self._next: int | None = None
        self._arrived: asyncio.Queue[Replayed] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self.connected = False

    async def __aenter__(self) -> EventHistory:
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
        """Attach to the history; BrokerUnreachable if the first attempt fails."""
        self._started = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run())
        await self._started

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def __aiter__(self) -> AsyncIterator[Replayed]:
        return self

    async def __anext__(self) -> Replayed:
        return await self._arrived.get()

    async def next(self, timeout_s: float) -> Replayed:
        """The next event, or OperationTimeout."""
        try:
            return await asyncio.wait_for(self._arrived.get(), timeout_s)
        except TimeoutError:
            raise OperationTimeout(f"no event within {timeout_s:g} s") from None

    def _state(self, connected: bool, why: str) -> None:
        if connected != self.connected:
            self.connected = connected
            if self._on_state is not None:
                self._on_state(connected, why)

    async def _run(self) -> None:
        assert self._started is not None
        while True:
            try:
                connection = await aio_pika.connect(
                    self._url,
                    ssl_context=self._ssl_context,
                    client_properties={"connection_name": self._name},
                )
            except (OSError, aio_pika.exceptions.AMQPError) as error:
                if not self._started.done():
                    self._started.set_exception(
                        BrokerUnreachable(f"cannot reach the broker: {error}")
                    )
                    return
                await asyncio.sleep(self._retry_s)
                continue
            lost = asyncio.Event()
            connection.close_callbacks.add(lambda *_, lost=lost: lost.set())
            try:
                await self._attach(connection)
                self._state(True, "connected to the broker")
                if not self._started.done():
                    self._started.set_result(None)
                await lost.wait()
                self._state(False, "the broker connection was lost; reconnecting")
            except (OSError, aio_pika.exceptions.AMQPError) as error:
                if not self._started.done():
                    self._started.set_exception(
                        BrokerUnreachable(f"cannot read the event history: {error}")
                    )
                    return
                self._state(False, f"the event history is out of reach: {error}")
            finally:
                with contextlib.suppress(Exception):
                    await connection.close()
            await asyncio.sleep(self._retry_s)

    async def _attach(self, connection: AbstractConnection) -> None:
        channel = await connection.channel()
        if not await _declared(channel):
            channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(HISTORY_QUEUE, passive=True)
        start: Since = self._since if self._next is None else self._next
        if self._next is None and self._last is not None:
            start = await _no_earlier_than(connection, queue, start, self._last)
        await queue.consume(self._take, arguments={"x-stream-offset": start})

    async def _take(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        offset = message.headers.get("x-stream-offset")
        if not isinstance(offset, int) or (self._next is not None and offset < self._next):
            return
        self._next = offset + 1
        try:
            event = EVENT_ADAPTER.validate_json(message.body)
        except ValidationError:
            return
        if isinstance(self._since, datetime) and event.time < self._since:
            return
        if _wanted(event, *self._filter):
            self._arrived.put_nowait(Replayed(offset, event))


async def _no_earlier_than(
    connection: AbstractConnection, queue: AbstractQueue, since: Since, last: int
) -> Since:
    """``since``, or ``last`` offsets before the newest if that is later."""
    if since in ("last", "next") or not queue.declaration_result.message_count:
        return since
    newest = await _newest_offset(connection)
    if newest is None:
        return since
    floor = max(newest + 1 - last, 0)
    if isinstance(since, int):
        return max(since, floor)
    return floor  # a time: events older than it are still skipped on arrival


async def _newest_offset(connection: AbstractConnection) -> int | None:
    """The offset a reader from ``last`` gets first (the start of the newest chunk), on a
    channel of its own that is closed with what it still holds."""
    found: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def take(message: AbstractIncomingMessage) -> None:
        offset = message.headers.get("x-stream-offset")
        if isinstance(offset, int) and not found.done():
            found.set_result(offset)

    channel = await connection.channel()
    try:
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(HISTORY_QUEUE, passive=True)
        await queue.consume(take, arguments={"x-stream-offset": "last"})
        return await asyncio.wait_for(found, TAIL_WAIT_S)
    except TimeoutError:
        return None
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def _declared(channel: AbstractChannel) -> bool:
    """The history and its bindings, as provisioning declares them; best effort (a user
    without configure permission reads what `virtbus provision` declared). False: the
    channel was closed, open another."""
    try:
        events = await channel.declare_exchange(
            EVENTS.name, aio_pika.ExchangeType(EVENTS.kind), durable=EVENTS.durable
        )
        queue = await channel.declare_queue(
            HISTORY.name, durable=HISTORY.durable, arguments=dict(HISTORY.arguments)
        )
        for binding in HISTORY_BINDINGS:
            await queue.bind(events, routing_key=binding.routing_key)
    except aio_pika.exceptions.ChannelClosed as error:
        log.debug("event history left as provisioned: %s", error)
        return False
    return True
