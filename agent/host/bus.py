"""The only module that knows AMQP: declaring the topology, consuming commands,
replies, events.

Published means the broker confirmed it (publisher confirms), not that anyone consumed it.

The bus keeps its own connection alive instead of trusting a robust connection to put
consumers back: when the connection is lost it reconnects with backoff (trying each
broker URL in turn), declares the topology again and registers the command consumer
again, holding strong references to all of it. Nothing the client library does can stall
that: an attempt to open that has not finished within its bound is abandoned (its
connection closed whenever it ends), and an old connection is closed in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
)
from aiormq.abc import AbstractChannel as WireChannel
from aiormq.abc import DeliveredMessage

from agent.settings import mask_url
from agent.streams import BusStream
from schemas.codes import ErrorCode
from schemas.errors import VirtbusError
from schemas.topology import (
    DEAD,
    DEAD_LETTER_BINDING,
    DEAD_LETTER_BODY_BYTES,
    DEAD_QUEUE,
    EVENTS,
    EXCHANGES,
    Binding,
    Exchange,
    Queue,
    QueueType,
    command_bindings,
    command_queue,
    host_queue,
)

log = logging.getLogger(__name__)

JSON = "application/json"
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
MAX_REASON = 1000
OPEN_TIMEOUT_S = 15.0
"""Bound on connecting, opening the channel and declaring the topology; shorter for a URL
whose heartbeat says a silent link is dead sooner (``open_timeout_s``)."""
BROKER_LOST = "broker connection lost; reconnecting"
"""Logged each time the connection is lost (the fault suite counts these lines)."""
CLOSE_TIMEOUT_S = 5.0
"""Bound on closing a connection or cancelling the consumer: a dead peer never answers."""


class BusUnavailable(VirtbusError, ConnectionError):
    """The broker cannot be reached right now; the bus is reconnecting."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.OPERATION_FAILED, detail)

    def __str__(self) -> str:
        return self.detail


@contextlib.contextmanager
def _lost_is_unavailable() -> Iterator[None]:
    """aiormq fails whatever waits on a connection it gives up on (missed heartbeats) with
    CancelledError. Only the cancellation of the waiting task itself may travel as one:
    anything else would end the caller's loop (the event outbox, the reconnection)
    without a trace."""
    try:
        yield
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise BusUnavailable("the connection to the broker was lost") from None


@dataclass
class Receipt:
    """Where a command was delivered, to settle it there exactly once: a second ack or
    nack of one delivery tag would close the channel (PRECONDITION_FAILED)."""

    channel: WireChannel
    delivery_tag: int
    settled: bool = False

    def take(self) -> bool:
        """True the first time only: the caller is the one to settle it."""
        first, self.settled = not self.settled, True
        return first


@dataclass(frozen=True)
class Inbound:
    """A command as it arrived, before anyone parsed it."""

    body: bytes
    message_id: str | None
    correlation_id: str | None
    reply_to: str | None
    redelivered: bool
    receipt: Receipt
    exchange: str
    routing_key: str
    headers: Mapping[str, object]
    content_type: str | None = None

    @classmethod
    def of(cls, message: DeliveredMessage) -> Inbound:
        properties = message.header.properties
        return cls(
            body=message.body,
            message_id=properties.message_id,
            correlation_id=properties.correlation_id,
            reply_to=properties.reply_to,
            redelivered=bool(message.redelivered),
            receipt=Receipt(message.channel, message.delivery_tag or 0),
            exchange=message.exchange or "",
            routing_key=message.routing_key or "",
            headers=dict(properties.headers or {}),
            content_type=properties.content_type,
        )


class Declarer:
    """Puts the objects of schemas/topology.py on one channel, each at most once.

    ``passive`` only checks that an object exists (a missing one closes the channel
    with NOT_FOUND); it takes no permission. Binding declares both ends first."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._exchanges: dict[str, AbstractExchange] = {}
        self._queues: dict[str, AbstractQueue] = {}

    async def exchange(self, exchange: Exchange, passive: bool = False) -> AbstractExchange:
        declared = self._exchanges.get(exchange.name)
        if declared is None:
            declared = await self._channel.declare_exchange(
                exchange.name,
                aio_pika.ExchangeType(exchange.kind),
                durable=exchange.durable,
                auto_delete=exchange.auto_delete,
                arguments=dict(exchange.arguments),
                passive=passive,
            )
            self._exchanges[exchange.name] = declared
        return declared

    async def queue(self, queue: Queue, passive: bool = False) -> AbstractQueue:
        declared = self._queues.get(queue.name)
        if declared is None:
            declared = await self._channel.declare_queue(
                queue.name,
                durable=queue.durable,
                auto_delete=queue.auto_delete,
                exclusive=queue.exclusive,
                arguments=dict(queue.arguments),
                passive=passive,
            )
            self._queues[queue.name] = declared
        return declared

    async def bind(self, binding: Binding) -> None:
        exchange = await self.exchange(binding.exchange)
        queue = await self.queue(binding.queue)
        await queue.bind(exchange, routing_key=binding.routing_key)


PERSISTENT = 2
"""AMQP's delivery mode of a message the broker keeps on disk."""


def reply_properties(
    host: str, command_id: str, correlation_id: str | None
) -> aiormq.spec.Basic.Properties:
    """A reply as an agent sends it: the command's ``correlation_id`` (else its id),
    ``message_id`` ``<host>:<command id>``, the header ``host``, persistent."""
    return aiormq.spec.Basic.Properties(
        content_type=JSON,
        correlation_id=correlation_id or command_id,
        message_id=f"{host}:{command_id}",
        headers={"host": host},
        delivery_mode=PERSISTENT,
    )


def reply_message(
    host: str, command_id: str, body: bytes, correlation_id: str | None
) -> aio_pika.Message:
    """``reply_properties`` as the message aio-pika publishes (the benchmarks' echo)."""
    properties = reply_properties(host, command_id, correlation_id)
    return aio_pika.Message(
        body,
        content_type=properties.content_type,
        correlation_id=properties.correlation_id,
        message_id=properties.message_id,
        headers=properties.headers,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


@dataclass
class _Link:
    """Everything one successful open made, committed to the bus at once."""

    connection: AbstractConnection
    channel: AbstractChannel
    events: AbstractExchange
    dead: AbstractExchange
    queue: AbstractQueue
    consumer_tag: str | None
    lost: asyncio.Event


class Bus:
    """One host's connection to the broker; ``async with Bus(...) as bus``."""

    def __init__(
        self,
        urls: list[str],
        host: str,
        groups: list[str],
        queue_type: QueueType = "quorum",
        prefetch: int = 64,
        on_reconnect: Callable[[], None] = lambda: None,
        ssl_context: ssl.SSLContext | None = None,
        declare_topology: bool = True,
    ) -> None:
        self._urls = urls
        self._ssl_context = ssl_context
        self._declare_topology = declare_topology
        self.host = host
        self.groups = groups
        self._queue_type = queue_type
        self._prefetch = prefetch
        self._on_reconnect = on_reconnect
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._events: AbstractExchange | None = None
        self._dead: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._inbox: asyncio.Queue[Inbound | None] | None = None
        self._up = asyncio.Event()
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False

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
        return self._up.is_set()

    async def wait_connected(self) -> None:
        await self._up.wait()

    async def connect(self) -> None:
        """Connect (retrying with backoff until a broker answers) and keep connected."""
        self._closing = False
        await self._establish()
        self._supervisor = asyncio.create_task(self._supervise(), name="broker connection")

    async def _establish(self) -> None:
        attempt = 0
        while True:
            url = self._urls[attempt % len(self._urls)]
            opening = asyncio.create_task(self._open(url), name=f"open {mask_url(url)}")
            bound_s = open_timeout_s(url)
            try:
                done, _ = await asyncio.wait({opening}, timeout=bound_s)
            except asyncio.CancelledError:
                self._abandon(opening)
                raise
            if not done:
                # the library did not give up within the bound: never wait on it again
                self._abandon(opening)
                error: BaseException = TimeoutError(f"no answer in {bound_s:.0f} s")
            elif opening.cancelled():
                error = BusUnavailable("the connection to the broker was lost")
            elif (failure := opening.exception()) is not None:
                error = failure
            else:
                self._commit(opening.result())
                log.info("connected to broker %s", mask_url(url))
                return
            if not isinstance(error, (TimeoutError, OSError, aio_pika.exceptions.AMQPError)):
                log.error("opening %s failed unexpectedly", mask_url(url), exc_info=error)
            delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            log.warning(
                "broker %s unreachable (%s); retrying in %.1f s",
                mask_url(url),
                str(error) or type(error).__name__,
                delay,
            )
            attempt += 1
            await asyncio.sleep(delay)

    async def _open(self, url: str) -> _Link:
        """Connect, open the channel, declare the topology and, while commands are
        taken, consume them. Touches nothing of the bus: ``_commit`` does."""
        connection = await aio_pika.connect(
            url,
            ssl_context=self._ssl_context,
            client_properties={"connection_name": f"virtbus-agent {self.host}"},
        )
        try:
            with _lost_is_unavailable():
                return await self._open_on(connection)
        except BaseException:
            self._close_later(connection)
            raise

    async def _open_on(self, connection: AbstractConnection) -> _Link:
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        channel = await connection.channel(publisher_confirms=True)
        if self._declare_topology and not await self._declared_dead_letters(channel):
            channel = await connection.channel(publisher_confirms=True)
        try:
            declared = await self._declare(channel, max_age=True)
        except aio_pika.exceptions.ChannelClosed as error:
            if not self._declare_topology:
                raise
            log.warning(
                "queue %s was declared without a maximum command age and is kept as it "
                "is (%s); `virtbus provision` bounds it with an operator policy",
                host_queue(self.host),
                error,
            )
            channel = await connection.channel(publisher_confirms=True)
            declared = await self._declare(channel, max_age=False)
        channel.close_callbacks.add(lambda *_: lost.set())
        await channel.set_qos(prefetch_count=self._prefetch)
        events, dead, queue = declared
        consumer_tag = await self._consume_from(channel, queue) if self._inbox is not None else None
        return _Link(connection, channel, events, dead, queue, consumer_tag, lost)

    def _commit(self, link: _Link) -> None:
        self._connection, self._channel = link.connection, link.channel
        self._events, self._dead, self._queue = link.events, link.dead, link.queue
        self._consumer_tag, self._lost = link.consumer_tag, link.lost
        self._up.set()

    def _abandon(self, opening: asyncio.Task[_Link]) -> None:
        """Stop waiting for an open; whatever connection it still makes is closed."""

        def discard(task: asyncio.Task[_Link]) -> None:
            if not task.cancelled() and task.exception() is None:
                self._close_later(task.result().connection)

        opening.cancel()
        opening.add_done_callback(discard)

    def _close_later(self, connection: AbstractConnection) -> None:
        """Close a connection the bus no longer uses, in the background: the library's
        close can outlast its bound (a peer that never answers), and nothing waits on
        it but ``close``."""
        if connection.is_closed:
            return

        async def close() -> None:
            with contextlib.suppress(Exception), _lost_is_unavailable():
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT_S)

        task = asyncio.create_task(close(), name="close a broker connection")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _supervise(self) -> None:
        while not self._closing:
            await self._lost.wait()
            if self._closing:
                return
            log.warning(BROKER_LOST)
            self._drop()
            await self._establish()
            try:
                self._on_reconnect()
            except Exception:
                # the connection is up again whatever the callback's trouble
                log.exception("the reconnection callback failed")

    def _drop(self) -> None:
        self._up.clear()
        connection, self._connection = self._connection, None
        self._channel = self._events = self._dead = self._queue = None
        self._consumer_tag = None
        if connection is not None:
            self._close_later(connection)

    async def _declare(
        self, channel: AbstractChannel, max_age: bool
    ) -> tuple[AbstractExchange, AbstractExchange, AbstractQueue]:
        """The topology of schemas/topology.py, idempotently; or, without
        ``declare_topology``, a check that `virtbus provision` declared it (passive:
        takes no permission). ``max_age``: declare the host queue with the maximum
        command age; a queue that exists without it refuses that (the channel closes)
        and is declared as it is."""
        declarer = Declarer(channel)
        queue = command_queue(self.host, self._queue_type, max_age)
        if not self._declare_topology:
            return (
                await declarer.exchange(EVENTS, passive=True),
                await declarer.exchange(DEAD, passive=True),
                await declarer.queue(queue, passive=True),
            )
        for exchange in EXCHANGES:
            await declarer.exchange(exchange)
        for binding in command_bindings(queue, self.host, self.groups):
            await declarer.bind(binding)
        return (
            await declarer.exchange(EVENTS),
            await declarer.exchange(DEAD),
            await declarer.queue(queue),
        )

    @staticmethod
    async def _declared_dead_letters(channel: AbstractChannel) -> bool:
        """The dead-letter queue, quorum so that it outlives any one node of a cluster,
        bounded in length, bytes and age.

        Best effort, first on a fresh channel: a queue of the same name that already
        exists with other arguments (PRECONDITION_FAILED; `virtbus provision` bounds it
        with an operator policy) or whose classic home node is down
        (NOT_FOUND) closes that channel, and False says to open another. The agent keeps
        what exists and carries on; the host queues dead-letter to the exchange whether
        or not the queue is there."""
        try:
            await Declarer(channel).bind(DEAD_LETTER_BINDING)
        except aio_pika.exceptions.ChannelClosed as error:
            log.warning("dead-letter queue %s left as it is: %s", DEAD_QUEUE, error)
            return False
        return True

    async def _consume(self) -> None:
        assert self._channel is not None and self._queue is not None
        self._consumer_tag = await self._consume_from(self._channel, self._queue)

    async def _consume_from(self, channel: AbstractChannel, queue: AbstractQueue) -> str:
        # on aiormq's channel itself: aio-pika's consumer would wrap each delivery in a
        # message object and a second task, a tenth of a millisecond on every command
        wire = await channel.get_underlay_channel()
        consuming = await wire.basic_consume(queue.name, self._take)
        return str(consuming.consumer_tag)

    async def _take(self, message: DeliveredMessage) -> None:
        inbound = Inbound.of(message)
        if self._inbox is None:
            await self.requeue(inbound)
            return
        self._inbox.put_nowait(inbound)

    async def commands(self) -> AsyncIterator[Inbound]:
        """Commands from the host queue in arrival order, across reconnections, until
        ``stop_consuming``."""
        self._inbox = asyncio.Queue()
        if self._queue is not None:
            try:
                async with asyncio.timeout(OPEN_TIMEOUT_S):
                    with _lost_is_unavailable():
                        await self._consume()
            except (TimeoutError, BusUnavailable, aio_pika.exceptions.AMQPError) as error:
                log.warning("could not consume commands (%s); reconnecting", error)
                self._lost.set()
        return self._drain(self._inbox)

    @staticmethod
    async def _drain(inbox: asyncio.Queue[Inbound | None]) -> AsyncIterator[Inbound]:
        while (inbound := await inbox.get()) is not None:
            yield inbound

    async def stop_consuming(self) -> None:
        """Take no more commands; those taken but not handed out go back to the queue."""
        inbox, self._inbox = self._inbox, None
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception), _lost_is_unavailable():
                await self._queue.cancel(self._consumer_tag, timeout=CLOSE_TIMEOUT_S)
        self._consumer_tag = None
        if inbox is None:
            return
        while not inbox.empty():
            left = inbox.get_nowait()
            if left is not None:
                await self.requeue(left)
        inbox.put_nowait(None)

    def _live_channel(self) -> AbstractChannel:
        channel = self._channel
        if channel is None or channel.is_closed or not self._up.is_set():
            raise BusUnavailable("not connected to the broker")
        return channel

    async def reply(self, inbound: Inbound, command_id: str, body: bytes) -> None:
        """Send a reply to the command's ``reply_to``; returns once the broker has it.
        Not mandatory: a reply nobody waits for any more has nowhere else to go, and the
        broker (RabbitMQ 3.10) returns every mandatory reply to a direct reply-to name
        even as it delivers it, a second copy for it to send and the agent to read."""
        if inbound.reply_to is None:
            return
        with _lost_is_unavailable():
            wire = await self._live_channel().get_underlay_channel()
            await wire.basic_publish(
                body,
                exchange="",
                routing_key=inbound.reply_to,
                properties=reply_properties(self.host, command_id, inbound.correlation_id),
                mandatory=False,
            )

    async def settle(self, inbound: Inbound, accepted: bool, reason: str | None = None) -> None:
        """Ack a command that was answered; dead-letter one that was refused. Given a
        ``reason``, the dead letter carries it in the header ``x-virtbus-reason`` (with
        the host in ``x-virtbus-host``): it is published to the dead-letter exchange,
        confirmed, and only then is the original acked. A body larger than
        ``DEAD_LETTER_BODY_BYTES`` is dead-lettered as its first that many bytes, with
        ``x-virtbus-truncated``, ``x-virtbus-original-size`` and
        ``x-virtbus-original-sha256``."""
        receipt = inbound.receipt
        if receipt.settled:
            return
        with _lost_is_unavailable():
            if accepted:
                receipt.take()
                await receipt.channel.basic_ack(receipt.delivery_tag)
                return
            if reason is None:
                receipt.take()
                await receipt.channel.basic_reject(receipt.delivery_tag, requeue=False)
                return
            if receipt.channel.is_closed:
                # the broker took the command back with the channel: a dead letter now
                # would be a second one when its redelivery is refused again
                raise BusUnavailable("the channel that delivered the command is closed")
            self._live_channel()
            if self._dead is None:
                raise BusUnavailable("not connected to the broker")
            body, headers = _bounded(inbound.body)
            await self._dead.publish(
                aio_pika.Message(
                    body,
                    content_type=inbound.content_type,
                    message_id=inbound.message_id,
                    correlation_id=inbound.correlation_id,
                    headers={
                        "x-virtbus-reason": reason[:MAX_REASON],
                        "x-virtbus-host": self.host,
                        **headers,
                    },
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=inbound.routing_key,
            )
            if receipt.take():
                await receipt.channel.basic_ack(receipt.delivery_tag)

    async def requeue(self, inbound: Inbound) -> None:
        """Give a command back to the queue for another delivery; nothing to do when its
        channel is gone (the broker has taken it back already)."""
        receipt = inbound.receipt
        if not receipt.take():
            return
        with contextlib.suppress(Exception), _lost_is_unavailable():
            await receipt.channel.basic_nack(receipt.delivery_tag, requeue=True)

    async def publish_event(self, routing_key: str, body: bytes, message_id: str | None) -> None:
        """Returns once the broker confirms; raises BusUnavailable if the connection is
        lost first (within the heartbeat bound), and the event may then have arrived.
        Confirmed means the broker took it, not that a queue was bound for it: an event
        nobody subscribed to (a heartbeat, most often) is dropped there, not returned."""
        channel = self._live_channel()
        if self._events is None:
            raise BusUnavailable("not connected to the broker")
        with _lost_is_unavailable():
            wire = await channel.get_underlay_channel()
            await wire.basic_publish(
                body,
                exchange=self._events.name,
                routing_key=routing_key,
                properties=aiormq.spec.Basic.Properties(
                    content_type=JSON, delivery_mode=PERSISTENT, message_id=message_id
                ),
                mandatory=False,
            )

    async def open_stream(self, session: str) -> BusStream:
        """This host's end of a stream session (agent/streams.py), on the current
        connection: a reconnection ends it, as its queue goes with the connection."""
        with _lost_is_unavailable():
            return await BusStream.open(self._live_channel(), session)

    async def close(self) -> None:
        """Stop reconnecting and close the connection, waiting at most CLOSE_TIMEOUT_S
        for the library to finish closing."""
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        self._drop()
        if self._background:
            await asyncio.wait(set(self._background), timeout=CLOSE_TIMEOUT_S)


def _bounded(body: bytes) -> tuple[bytes, dict[str, str | int | bool]]:
    """A dead letter's body: the whole of a small one; the head of a large one (copied
    once, the head only) and headers that identify the original."""
    if len(body) <= DEAD_LETTER_BODY_BYTES:
        return body, {}
    return bytes(memoryview(body)[:DEAD_LETTER_BODY_BYTES]), {
        "x-virtbus-truncated": True,
        "x-virtbus-original-size": len(body),
        "x-virtbus-original-sha256": hashlib.sha256(body).hexdigest(),
    }


def open_timeout_s(url: str) -> float:
    """How long opening a connection to ``url`` may take: OPEN_TIMEOUT_S, or less when its
    ``?heartbeat=N`` gives up on a silent connection sooner, after ``3 * (N + 1)`` s."""
    heartbeat = parse_qs(urlsplit(url).query).get("heartbeat", [""])[-1]
    try:
        seconds = float(heartbeat)
    except ValueError:
        return OPEN_TIMEOUT_S
    return min(OPEN_TIMEOUT_S, 3 * (seconds + 1)) if seconds > 0 else OPEN_TIMEOUT_S
