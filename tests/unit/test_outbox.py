"""The outbox publishes committed events in ``seq`` order and lets one go only once the
broker confirmed it; it holds commands back while full."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from agent.host.outbox import REPLY_TURNS, Outbox
from agent.host.store import Store
from schemas.events import DomainRef, RebootEvent

HOST = "h1"
WAIT_S = 5.0


class FakeSink:
    """A broker that confirms each publish once ``confirming`` is set, or fails it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str | None]] = []
        self.confirming = asyncio.Event()
        self.confirming.set()
        self.failures = 0
        self.arrived = asyncio.Condition()

    async def publish_event(self, routing_key: str, body: bytes, message_id: str | None) -> None:
        async with self.arrived:
            self.published.append((routing_key, message_id))
            self.arrived.notify_all()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker gone")
        await self.confirming.wait()

    async def wait_connected(self) -> None:
        return

    async def wait_published(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.published) >= count), WAIT_S
            )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path) as opened:
        yield opened


def queue_events(store: Store, count: int) -> None:
    ref = DomainRef(name="web", uuid=uuid4(), id=1)
    with store.transaction() as tx:
        for _ in range(count):
            tx.enqueue(
                lambda seq: RebootEvent(
                    host=HOST, time=datetime.now(UTC), seq=seq, domain=ref, origin="agent"
                )
            )


async def test_events_are_published_in_seq_order_and_leave_once_confirmed(store: Store) -> None:
    sink = FakeSink()
    published: list[str] = []
    outbox = Outbox(HOST, store, sink, limit=100, on_published=published.append)
    queue_events(store, 3)
    outbox.start()
    try:
        await outbox.flushed(WAIT_S)
    finally:
        await outbox.kill()
    assert sink.published == [(f"{HOST}.reboot", f"{HOST}:{seq}") for seq in (1, 2, 3)]
    assert published == [f"{HOST}.reboot"] * 3
    assert store.outbox_size() == 0 and outbox.pending == 0


async def test_an_event_stays_until_the_broker_confirms_it(store: Store) -> None:
    sink = FakeSink()
    sink.confirming.clear()
    outbox = Outbox(HOST, store, sink, limit=100)
    queue_events(store, 1)
    outbox.start()
    try:
        await sink.wait_published(1)
        assert store.outbox_size() == 1 and outbox.pending == 1
        sink.confirming.set()
        await outbox.flushed(WAIT_S)
    finally:
        await outbox.kill()
    assert store.outbox_size() == 0


async def test_a_failed_publish_is_retried_and_the_event_kept_meanwhile(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.host.outbox.REPUBLISH_DELAY_S", 0.0)
    sink = FakeSink()
    sink.failures = 1
    outbox = Outbox(HOST, store, sink, limit=100)
    queue_events(store, 2)
    outbox.start()
    try:
        await outbox.flushed(WAIT_S)
    finally:
        await outbox.kill()
    assert [message_id for _, message_id in sink.published] == [f"{HOST}:{s}" for s in (1, 1, 2)]


async def test_a_full_outbox_holds_commands_back_until_the_broker_takes_events(
    store: Store,
) -> None:
    sink = FakeSink()
    sink.confirming.clear()
    outbox = Outbox(HOST, store, sink, limit=2)
    queue_events(store, 2)
    outbox.start()
    try:
        room = asyncio.create_task(outbox.room())
        await sink.wait_published(1)
        assert not room.done()
        sink.confirming.set()
        await asyncio.wait_for(room, WAIT_S)
    finally:
        await outbox.kill()


async def test_leftovers_of_a_previous_run_are_published_first_and_counted(store: Store) -> None:
    queue_events(store, 2)
    with store.transaction():
        store.confirmed(1)
    sink = FakeSink()
    sink.confirming.clear()
    outbox = Outbox(HOST, store, sink, limit=100)
    outbox.start()
    try:
        await sink.wait_published(1)
        assert outbox.pending == 1
        assert sink.published == [(f"{HOST}.reboot", f"{HOST}:2")]
    finally:
        await outbox.kill()


async def test_stop_flushes_within_its_bound_and_kill_keeps_what_is_unconfirmed(
    store: Store,
) -> None:
    sink = FakeSink()
    outbox = Outbox(HOST, store, sink, limit=100)
    queue_events(store, 2)
    outbox.start()
    await outbox.stop(WAIT_S)
    assert store.outbox_size() == 0

    sink.confirming.clear()
    outbox.start()
    queue_events(store, 1)
    outbox.wake()
    await sink.wait_published(3)
    await outbox.stop(0.05)
    assert store.outbox_size() == 1


@pytest.mark.parametrize("reply_follows", [True, False])
async def test_a_reply_written_within_its_turns_goes_out_ahead_of_the_events_it_follows(
    store: Store, reply_follows: bool
) -> None:
    """The monitor's apply wakes the command and the outbox in one step; the reply is
    written to the socket within ``REPLY_TURNS - 1`` turns of it (the command records
    it, the answering task publishes it, aiormq's writer writes it)."""
    sink = FakeSink()
    outbox = Outbox(HOST, store, sink, limit=100)
    outbox.start()
    try:
        await outbox.flushed(WAIT_S)
        queue_events(store, 1)

        async def reply() -> None:
            for _ in range(REPLY_TURNS - 1):
                await asyncio.sleep(0)
            sink.published.append(("reply", None))

        if reply_follows:
            outbox.reply_follows()
        outbox.wake()
        replying = asyncio.create_task(reply())
        await outbox.flushed(WAIT_S)
        await replying
    finally:
        await outbox.kill()
    expected = ["reply", f"{HOST}.reboot"]
    assert [key for key, _ in sink.published] == (expected if reply_follows else expected[::-1])
