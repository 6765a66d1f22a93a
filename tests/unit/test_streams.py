"""Streams across the bus (agent/streams.py) over a fake broker: frames in order, the
window, eof, abort, a vanished peer, silence."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from agent.streams import BusStream, Limits, StreamError, chunks
from schemas.codes import ErrorCode

WAIT_S = 5.0


@dataclass
class Delivered:
    """What a consumer gets: the fields of an incoming message the stream reads."""

    body: bytes
    type: str | None
    correlation_id: str | None
    headers: dict[str, Any]


@dataclass
class FakeQueue:
    broker: FakeBroker
    name: str
    consumer: Callable[[Delivered], Awaitable[None]] | None = None

    async def consume(self, callback: Callable[[Delivered], Awaitable[None]], no_ack: bool) -> str:
        self.consumer = callback
        return f"ctag-{self.name}"

    async def cancel(self, tag: str) -> None:
        self.consumer = None

    async def delete(self, if_unused: bool, if_empty: bool) -> None:
        self.broker.queues.pop(self.name, None)


@dataclass
class FakeExchange:
    broker: FakeBroker

    async def publish(self, message: aio_pika.Message, routing_key: str, mandatory: bool) -> None:
        queue = self.broker.queues.get(routing_key)
        if queue is None:
            assert mandatory
            raise aio_pika.exceptions.DeliveryError(None, cast(Any, None))
        self.broker.published.append((routing_key, message.type or ""))
        if queue.consumer is not None:
            delivered = Delivered(
                message.body, message.type, message.correlation_id, dict(message.headers)
            )
            await queue.consumer(delivered)


@dataclass
class FakeBroker:
    queues: dict[str, FakeQueue] = field(default_factory=dict)
    published: list[tuple[str, str]] = field(default_factory=list)
    names: itertools.count[int] = field(default_factory=itertools.count)
    is_closed: bool = False

    @property
    def default_exchange(self) -> FakeExchange:
        return FakeExchange(self)

    async def declare_queue(self, exclusive: bool, auto_delete: bool) -> FakeQueue:
        assert exclusive and auto_delete
        queue = FakeQueue(self, f"amq.gen-{next(self.names)}")
        self.queues[queue.name] = queue
        return queue


async def pair(broker: FakeBroker, limits: Limits | None = None) -> tuple[BusStream, BusStream]:
    channel = cast(AbstractChannel, broker)
    a = await BusStream.open(channel, "s1", limits)
    b = await BusStream.open(channel, "s1", limits)
    a.connect(b.queue)
    b.connect(a.queue)
    return a, b


async def test_bytes_arrive_in_order_in_frames_of_at_most_max_frame() -> None:
    broker = FakeBroker()
    a, b = await pair(broker, Limits(max_frame=4, window=64))
    await a.send(b"hello, stream")
    await a.finish()
    received = []
    while (data := await asyncio.wait_for(b.recv(), WAIT_S)) is not None:
        received.append(data)
    assert received == [b"hell", b"o, s", b"trea", b"m"]
    assert await b.recv() is None
    assert chunks(b"", 4) == []


async def test_a_sender_waits_for_the_window_and_acks_open_it() -> None:
    broker = FakeBroker()
    a, b = await pair(broker, Limits(max_frame=1, window=4))
    sending = asyncio.create_task(a.send(b"abcdefgh"))
    done, _ = await asyncio.wait({sending}, timeout=0.1)
    assert not done  # blocked on the window
    assert [kind for _, kind in broker.published].count("data") == 4
    got = [await asyncio.wait_for(b.recv(), WAIT_S) for _ in range(8)]
    await asyncio.wait_for(sending, WAIT_S)
    assert got == [bytes([c]) for c in b"abcdefgh"]
    assert ("amq.gen-0", "ack") in broker.published


async def test_a_peer_that_overruns_the_window_fails_the_stream() -> None:
    broker = FakeBroker()
    _, b = await pair(broker, Limits(max_frame=8, window=2))
    for _ in range(3):
        await broker.default_exchange.publish(
            aio_pika.Message(b"x", type="data", correlation_id="s1"), b.queue, mandatory=True
        )
    with pytest.raises(StreamError) as failed:
        await asyncio.wait_for(b.recv(), WAIT_S)
    assert "overran the window" in str(failed.value)


async def test_an_abort_reaches_the_other_end_with_its_code() -> None:
    a, b = await pair(FakeBroker())
    await a.abort(ErrorCode.OPERATION_INVALID, "Requested operation is not valid: gone away")
    with pytest.raises(StreamError) as failed:
        await asyncio.wait_for(b.recv(), WAIT_S)
    assert failed.value.code is ErrorCode.OPERATION_INVALID
    assert str(failed.value) == "Requested operation is not valid: gone away"
    with pytest.raises(StreamError):
        await b.send(b"more")


async def test_a_vanished_peer_fails_the_next_send() -> None:
    a, b = await pair(FakeBroker())
    await b.close()
    with pytest.raises(StreamError) as failed:
        await a.send(b"anyone?")
    assert "the other end of the stream is gone" in str(failed.value)


async def test_a_silent_peer_ends_the_stream() -> None:
    broker = FakeBroker()
    a, b = await pair(broker, Limits(ping_s=0.05, idle_timeout_s=0.2))
    b.peer = "nowhere"  # b's pings go nowhere: a hears nothing
    with pytest.raises(StreamError) as failed:
        await asyncio.wait_for(a.recv(), WAIT_S)
    assert failed.value.code is ErrorCode.OPERATION_TIMEOUT
    await a.close()
    await b.close()
    assert broker.queues == {}


async def test_frames_of_another_session_are_ignored() -> None:
    broker = FakeBroker()
    a, b = await pair(broker)
    await broker.default_exchange.publish(
        aio_pika.Message(b"stray", type="data", correlation_id="other"), b.queue, mandatory=True
    )
    await a.send(b"mine")
    assert await asyncio.wait_for(b.recv(), WAIT_S) == b"mine"
