"""The bus reconnects whatever the client library does: an open that never finishes
(not even when cancelled) is abandoned for the next broker, and an old connection whose
close never finishes does not hold the reconnection up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest

from agent.host import bus as bus_module
from agent.host.bus import Bus

BOUND_S = 0.2
"""The bus's open and close bounds in these tests."""
WAIT_S = 10.0


class Stubborn:
    """What a library call that swallows its cancellation looks like: it ends only when
    the test releases it (so that the test's loop can close)."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.started = asyncio.Event()
        self.released = asyncio.Event()

    async def __call__(self, *_: Any, **__: Any) -> Any:
        self.started.set()
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
        raise ConnectionError("released")


class FakeQueue:
    async def bind(self, *_: Any, **__: Any) -> None:
        return None

    async def consume(self, *_: Any, **__: Any) -> str:
        return "ctag"


class FakeChannel:
    def __init__(self) -> None:
        self.close_callbacks: set[Callable[..., None]] = set()

    async def declare_exchange(self, *_: Any, **__: Any) -> object:
        return object()

    async def declare_queue(self, *_: Any, **__: Any) -> FakeQueue:
        return FakeQueue()

    async def set_qos(self, **_: Any) -> None:
        return None


class FakeConnection:
    def __init__(self, url: str, close: Callable[[], Any] | None = None) -> None:
        self.url = url
        self.close_callbacks: set[Callable[..., None]] = set()
        self.is_closed = False
        self._close = close

    async def channel(self, **_: Any) -> FakeChannel:
        return FakeChannel()

    async def close(self) -> None:
        if self._close is not None:
            await self._close()
        self.is_closed = True

    def lose(self) -> None:
        for callback in list(self.close_callbacks):
            callback(self, ConnectionError("lost"))


@pytest.fixture(autouse=True)
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus_module, "OPEN_TIMEOUT_S", BOUND_S)
    monkeypatch.setattr(bus_module, "CLOSE_TIMEOUT_S", BOUND_S)
    monkeypatch.setattr(bus_module, "BACKOFF_S", (0.01,))


@contextlib.asynccontextmanager
async def connected(bus: Bus) -> Any:
    await asyncio.wait_for(bus.connect(), WAIT_S)
    try:
        yield bus
    finally:
        await asyncio.wait_for(bus.close(), WAIT_S)


async def test_an_open_that_never_ends_is_abandoned_for_the_next_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hanging = Stubborn()
    opened: list[FakeConnection] = []

    async def connect(url: str, **_: Any) -> FakeConnection:
        if url == "amqp://first/":
            return await hanging()  # type: ignore[no-any-return]
        opened.append(FakeConnection(url))
        return opened[-1]

    monkeypatch.setattr(aio_pika, "connect", connect)
    try:
        async with connected(Bus(["amqp://first/", "amqp://second/"], "h1", [])) as bus:
            assert bus.connected
            assert [c.url for c in opened] == ["amqp://second/"]
            assert hanging.cancelled == 1
    finally:
        hanging.released.set()


async def test_a_close_that_never_ends_does_not_hold_the_reconnection_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hanging = Stubborn()
    opened: list[FakeConnection] = []
    reconnected = asyncio.Event()

    async def connect(url: str, **_: Any) -> FakeConnection:
        opened.append(FakeConnection(url, close=hanging if not opened else None))
        return opened[-1]

    monkeypatch.setattr(aio_pika, "connect", connect)
    bus = Bus(["amqp://only/"], "h1", [], on_reconnect=reconnected.set)
    try:
        async with connected(bus):
            opened[0].lose()
            await asyncio.wait_for(reconnected.wait(), WAIT_S)
            assert bus.connected
            assert len(opened) == 2
            await asyncio.wait_for(hanging.started.wait(), WAIT_S)
            assert not opened[0].is_closed
    finally:
        hanging.released.set()
