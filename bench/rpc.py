"""Plain aio-pika peers: the RPC client every benchmark measures with, an event tap, and
the load generator.

The client publishes as ``agent.client`` does (persistent, publisher confirms, a
``reply_to`` queue of its own consumed without acks) but parses nothing, so a
measurement shows the agent and the bus, not the client's validation. The same client
talks to the bare echo server (``bench.echo``) and to agents, over the same exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from agent.host.bus import Declarer
from bench.core import BenchError
from schemas.topology import BROADCAST_EXCHANGE, COMMANDS_EXCHANGE, EVENTS, group_key

JSON = "application/json"
CALL_TIMEOUT_S = 60.0


class RpcClient:
    """One connection, one confirming channel, one reply queue; ``async with``."""

    def __init__(self, url: str, name: str = "virtbus bench client") -> None:
        self._url = url
        self._name = name
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._gathering: dict[str, Gathered] = {}
        self._exchanges: dict[str, AbstractExchange] = {}
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._replies: AbstractQueue | None = None
        self._lost = False

    async def __aenter__(self) -> RpcClient:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        self._lost = False
        self._connection = await aio_pika.connect(
            self._url, client_properties={"connection_name": self._name}
        )
        self._connection.close_callbacks.add(self._on_close)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._channel.close_callbacks.add(self._on_close)
        self._replies = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._replies.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    def _on_close(self, *_: object) -> None:
        self._lost = True

    @property
    def lost(self) -> bool:
        """The connection or channel was closed (by the broker restarting, say)."""
        return self._lost

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("client is not open")
        return self._channel

    @property
    def server_properties(self) -> dict[str, Any]:
        transport = self._connection.transport if self._connection is not None else None
        if transport is None:
            return {}
        return dict(transport.connection.server_properties)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        correlation_id = message.correlation_id or ""
        gathered = self._gathering.get(correlation_id)
        if gathered is not None:
            gathered.add(message.body)
            return
        future = self._pending.get(correlation_id)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self.channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def call(
        self,
        routing_key: str,
        body: bytes,
        correlation_id: str,
        exchange: str = COMMANDS_EXCHANGE,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> bytes:
        """Publish one message and return the body of its reply."""
        if self._replies is None:
            raise RuntimeError("client is not open")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            target = await self._exchange(exchange)
            await target.publish(
                aio_pika.Message(
                    body,
                    content_type=JSON,
                    message_id=correlation_id,
                    correlation_id=correlation_id,
                    reply_to=self._replies.name,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
            )
            try:
                return await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                raise BenchError(f"no reply from {routing_key} within {timeout_s:g} s") from None
        finally:
            del self._pending[correlation_id]

    async def command(
        self,
        host: str,
        op: str,
        target: dict[str, Any] | None = None,
        args: dict[str, Any] | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Send a command to an agent; its ``result`` (an error reply raises)."""
        raw = await self.command_raw(host, op, target, args, timeout_s)
        reply: dict[str, Any] = json.loads(raw)
        if not reply.get("ok"):
            raise BenchError(f"{op} on {host}: {reply.get('error')}")
        result: dict[str, Any] = reply["result"]
        return result

    async def command_raw(
        self,
        host: str,
        op: str,
        target: dict[str, Any] | None = None,
        args: dict[str, Any] | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> bytes:
        command_id = uuid.uuid4().hex
        return await self.call(
            host, command_body(command_id, op, target, args), command_id, timeout_s=timeout_s
        )

    async def broadcast(
        self,
        group: str,
        op: str,
        expect: set[str],
        args: dict[str, Any] | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
        persistent: bool = False,
        target: dict[str, Any] | None = None,
    ) -> Gathered:
        """Publish one command to ``virtbus.broadcast`` (``group.<group>``) and gather the
        replies until every host in ``expect`` has answered or ``timeout_s`` has passed.

        Transient by default: a broadcast that need not survive a broker restart does not
        touch the disk of every durable host queue it lands in."""
        command_id = uuid.uuid4().hex
        gathered = Gathered(expect)
        self._gathering[command_id] = gathered
        try:
            exchange = await self._exchange(BROADCAST_EXCHANGE)
            gathered.started = time.perf_counter()
            await exchange.publish(
                aio_pika.Message(
                    command_body(command_id, op, target, args),
                    content_type=JSON,
                    message_id=command_id,
                    correlation_id=command_id,
                    reply_to=self.replies_name,
                    delivery_mode=(
                        aio_pika.DeliveryMode.PERSISTENT
                        if persistent
                        else aio_pika.DeliveryMode.NOT_PERSISTENT
                    ),
                ),
                routing_key=group_key(group),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gathered.complete.wait(), timeout_s)
        finally:
            del self._gathering[command_id]
        if not gathered.finished:
            gathered.finished = time.perf_counter()
        return gathered

    @property
    def replies_name(self) -> str:
        if self._replies is None:
            raise RuntimeError("client is not open")
        return self._replies.name


@dataclass
class Gathered:
    """The replies to one broadcast: which expected hosts answered, how many failed."""

    expect: set[str]
    answered: set[str] = field(default_factory=set)
    failed: int = 0
    others: int = 0
    started: float = 0.0
    finished: float = 0.0
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, body: bytes) -> None:
        reply = json.loads(body)
        host = reply.get("host")
        if host not in self.expect:
            self.others += 1
            return
        self.answered.add(host)
        if not reply.get("ok"):
            self.failed += 1
        if len(self.answered) == len(self.expect):
            self.finished = time.perf_counter()
            self.complete.set()

    @property
    def elapsed_s(self) -> float:
        return self.finished - self.started

    @property
    def missing(self) -> int:
        return len(self.expect - self.answered)


async def wait_for_broker(url: str, timeout_s: float = 180.0) -> bool:
    """Whether the broker accepts connections again within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            connection = await aio_pika.connect(url, timeout=5)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError):
            await asyncio.sleep(2)
            continue
        await connection.close()
        return True
    return False


def command_body(
    command_id: str,
    op: str,
    target: dict[str, Any] | None = None,
    args: dict[str, Any] | None = None,
) -> bytes:
    document: dict[str, Any] = {"v": 1, "id": command_id, "op": op}
    if target is not None:
        document["target"] = target
    if args is not None:
        document["args"] = args
    return json.dumps(document, separators=(",", ":")).encode()


def ok(body: bytes) -> bool:
    return b'"ok":true' in body


# ----------------------------------------------------------------------- events --


@dataclass(frozen=True)
class Arrival:
    received_ns: int
    """Wall clock (``time.time_ns``) when the consumer callback ran."""
    routing_key: str
    body: dict[str, Any]


class EventTap:
    """A private queue bound to ``virtbus.events`` with some patterns; every event that
    arrives is timestamped and handed to ``on_event`` (or kept in ``arrivals``)."""

    def __init__(
        self,
        channel: AbstractChannel,
        patterns: Iterable[str],
        on_event: Callable[[Arrival], None] | None = None,
        keep: bool = True,
    ) -> None:
        self._channel = channel
        self._patterns = list(patterns)
        self._on_event = on_event
        self._keep = keep
        self.arrivals: list[Arrival] = []
        self._changed = asyncio.Event()
        self._queue: AbstractQueue | None = None
        self._tag = ""

    async def start(self) -> EventTap:
        exchange = await Declarer(self._channel).exchange(EVENTS)
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        for pattern in self._patterns:
            await self._queue.bind(exchange, routing_key=pattern)
        self._tag = await self._queue.consume(self._deliver, no_ack=True)
        return self

    async def stop(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None and not self._channel.is_closed:
            await queue.cancel(self._tag)
            await queue.delete(if_unused=False, if_empty=False)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        arrival = Arrival(time.time_ns(), message.routing_key or "", json.loads(message.body))
        if self._keep:
            self.arrivals.append(arrival)
        if self._on_event is not None:
            self._on_event(arrival)
        self._changed.set()

    async def wait_for(self, match: Callable[[Arrival], bool], timeout_s: float = 30.0) -> Arrival:
        """The first kept arrival that matches, waiting for it if need be."""
        deadline = time.monotonic() + timeout_s
        checked = 0
        while True:
            for index in range(checked, len(self.arrivals)):
                if match(self.arrivals[index]):
                    return self.arrivals[index]
            checked = len(self.arrivals)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"no matching event on {self._patterns} within {timeout_s:g} s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                continue


# ------------------------------------------------------------------------- load --


@dataclass
class Load:
    """Calls completed inside the measurement window, and their latencies."""

    calls: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    completed: int = 0
    """Every call that completed, warm-up and tail included."""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0


async def closed_loop(
    call: Callable[[int], Awaitable[bool]],
    in_flight: int,
    seconds: float,
    warmup_s: float = 0.5,
) -> Load:
    """``in_flight`` workers call back to back; counts what completes in the window after
    the warm-up (a call may have begun before it: with 64 in flight on a busy machine one
    call can take longer than the window). ``call(n)`` returns whether the reply was a
    success."""
    start = time.perf_counter()
    window_start = start + warmup_s
    window_end = window_start + seconds
    load = Load(calls=0, seconds=seconds)
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while True:
            began = time.perf_counter()
            if began >= window_end:
                return
            counter += 1
            success = await call(counter)
            done = time.perf_counter()
            load.completed += 1
            if window_start <= done <= window_end:
                load.calls += 1
                load.latencies.append(done - began)
                if not success:
                    load.failures += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return load


async def sequential(call: Callable[[int], Awaitable[bool]], count: int, warmup: int = 20) -> Load:
    """One call at a time: the round-trip latency without queueing."""
    for n in range(warmup):
        await call(-n - 1)
    latencies: list[float] = []
    failures = 0
    started = time.perf_counter()
    for n in range(count):
        began = time.perf_counter()
        if not await call(n):
            failures += 1
        latencies.append(time.perf_counter() - began)
    return Load(count, time.perf_counter() - started, latencies, failures)
