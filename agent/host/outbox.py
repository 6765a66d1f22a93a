"""The event outbox: domain events from the store to the broker, in ``seq`` order.

Guarantees:

- An event is committed before it is published: it is written to the store's outbox in
  the same transaction as the domain change that caused it (``Transaction.enqueue``),
  and the outbox only ever publishes what the store holds.
- Events are published one at a time, in ``seq`` order, with the AMQP ``message_id``
  ``<host>:<seq>``.
- An event leaves the outbox only once the broker confirmed it. Published means the
  broker confirmed it, not that anyone consumed it. A publish that fails is retried once
  the connection is back, so an event may arrive twice (same ``seq``), never not at all.
- A command's reply goes out ahead of the events that answered it: events whose apply
  woke a waiting command (``reply_follows()``) are published after the loop has run
  ``REPLY_TURNS`` turns, time for the command to record its reply and the bus to write
  it. Both were committed before either is sent; the caller waits for the reply, a
  subscriber gets the event that much later.
- Backpressure: ``room()`` waits while ``limit`` events are queued and unconfirmed.
- A confirmation the store cannot write waits until it can; the event is published
  again then (same ``seq``).
- ``stop()`` is graceful: it publishes what is queued for up to a bound, then ends the
  loop; ``kill()`` is urgent: it ends the loop now. Either way what is not confirmed
  stays in the store for the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from agent.host.store import Store, StoreUnwritable

log = logging.getLogger(__name__)

BATCH = 256
REPUBLISH_DELAY_S = 1.0
REPLY_TURNS = 3
"""Loop turns from the apply that wakes a command until its reply is on the socket: the
command's task records the reply, the task that answers it publishes it, and aiormq's
writer task writes it (each publish is written by that task, one turn after)."""


class EventSink(Protocol):
    """Where events go: the bus."""

    async def publish_event(
        self, routing_key: str, body: bytes, message_id: str | None
    ) -> None: ...
    async def wait_connected(self) -> None: ...


class Outbox:
    """The outbox of one host's store; ``start()`` after the store is open, then
    ``wake()`` whenever a transaction queued events."""

    def __init__(
        self,
        host: str,
        store: Store,
        sink: EventSink,
        limit: int,
        on_published: Callable[[str], None] = lambda routing_key: None,
    ) -> None:
        self.host = host
        self.limit = limit
        self._store = store
        self._sink = sink
        self._on_published = on_published
        self._queued = asyncio.Event()
        self._confirmed = asyncio.Condition()
        self._confirmed_seq = 0
        self._reply_follows = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Events queued and not yet confirmed: ``seq`` is gap-free, so a subtraction."""
        return self._store.last_seq() - self._confirmed_seq if self._store.is_open else 0

    def wake(self) -> None:
        """Events were queued: publish them."""
        self._queued.set()

    def reply_follows(self) -> None:
        """The events about to be queued answer a waiting command: its reply goes first."""
        self._reply_follows = True

    def start(self) -> None:
        """Publish what the store holds (a previous run's leftovers first), and keep
        publishing as events are queued."""
        self._confirmed_seq = self._store.last_seq() - self._store.outbox_size()
        self._task = asyncio.create_task(self._run(), name="event outbox")
        self._task.add_done_callback(_report_crash)
        self.wake()

    async def room(self) -> None:
        """Returns once fewer than ``limit`` events wait for the broker."""
        if self.pending < self.limit:
            return
        log.warning("outbox full: commands wait for the broker to take events")
        async with self._confirmed:
            await self._confirmed.wait_for(lambda: self.pending < self.limit)

    async def flushed(self, timeout_s: float) -> None:
        """Returns once every event queued so far is confirmed by the broker; raises
        TimeoutError after ``timeout_s``."""
        target = self._store.last_seq()
        self.wake()
        async with self._confirmed:
            await asyncio.wait_for(
                self._confirmed.wait_for(
                    lambda: self._confirmed_seq >= target or self._store.outbox_size() == 0
                ),
                timeout_s,
            )

    async def stop(self, timeout_s: float) -> None:
        """Graceful: publish what is queued for up to ``timeout_s``, then end."""
        if self._task is not None:
            try:
                await self.flushed(timeout_s)
            except TimeoutError:
                log.warning(
                    "%d events stay in the outbox for the next start", self._store.outbox_size()
                )
        await self.kill()

    async def kill(self) -> None:
        """Urgent: end the loop now; unconfirmed events stay in the store."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def publish_transient(self, routing_key: str, body: bytes) -> None:
        """Publish an event that has no ``seq`` and is not stored (progress): now, beside
        the queued ones, once; raises if the broker does not confirm it."""
        await self._sink.publish_event(routing_key, body, None)
        self._on_published(routing_key)

    async def _run(self) -> None:
        while True:
            await self._queued.wait()
            if self._reply_follows:
                self._reply_follows = False
                for _ in range(REPLY_TURNS):
                    await asyncio.sleep(0)
            self._queued.clear()
            while batch := self._store.pending(BATCH):
                try:
                    for item in batch:
                        await self._sink.publish_event(
                            item.routing_key, item.body, f"{self.host}:{item.seq}"
                        )
                        self._store.confirmed(item.seq)
                        self._on_published(item.routing_key)
                        async with self._confirmed:
                            self._confirmed_seq = item.seq
                            self._confirmed.notify_all()
                except StoreUnwritable:
                    await self._store.writable()
                except Exception as error:
                    log.warning("events wait in the outbox: %s", error)
                    await asyncio.sleep(REPUBLISH_DELAY_S)
                    await self._sink.wait_connected()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the event outbox crashed", exc_info=task.exception())
