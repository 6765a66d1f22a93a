"""Docker's event stream → translate → domain state and the event outbox.

The monitor is the only writer of domain state transitions. Operations that act through
Docker say what they expect (``expect``) and wait for the monitor to see it happen, so
that by the time a command is answered its events are in the outbox, attributed to it.

A domain changes in memory only with a committed write: when the store cannot write
(``StoreUnwritable``), what the failed transaction changed is put back (``kept``) and
the error goes to the caller. A Docker event whose write failed is not dropped: the
monitor leaves Docker's stream, waits until the store can write, and catches up as
after a lost stream, replaying Docker's events from the last one it committed and
re-listing (``origin: reconcile``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from agent.errors import VirtError
from agent.host.domains import DomainObj, DomainTable
from agent.host.driver import Driver, Observed, RuntimeEvent
from agent.host.restarts import Restarts
from agent.host.store import Store, StoreUnwritable, Transaction
from agent.host.translate import (
    Evidence,
    Mode,
    Special,
    Transition,
    stop_cause_of_exit,
    translate,
)
from schemas.codes import DomainState, Lifecycle, PausedReason, RunningReason
from schemas.events import (
    DeviceEvent,
    DomainEventBase,
    DomainRef,
    HealthEvent,
    LifecycleEvent,
    Origin,
    RebootEvent,
    TunableEvent,
)

log = logging.getLogger(__name__)

STOPPED = frozenset(
    {
        Lifecycle.STOPPED_SHUTDOWN,
        Lifecycle.STOPPED_DESTROYED,
        Lifecycle.STOPPED_CRASHED,
        Lifecycle.STOPPED_FROM_SNAPSHOT,
        Lifecycle.STOPPED_FAILED,
    }
)

_DOCKER_STATES: dict[str, tuple[DomainState, int | None]] = {
    "running": (DomainState.RUNNING, None),
    "restarting": (DomainState.RUNNING, None),
    "paused": (DomainState.PAUSED, PausedReason.USER),
    "dead": (DomainState.CRASHED, 0),
}
"""Docker status → libvirt state; anything else (created, exited, removing) is shut off."""

RESUBSCRIBE_DELAY_S = 1.0
APPLIED_KEPT = 1024
ORPHAN_TTL_S = 60.0
DISCARD_TRIES = 6
"""Attempts to remove a domain's container, DISCARD_DELAY_S apart and doubling (about
6 s); a stopped transient domain's container still there after them is removed by a
later re-list, an undefine fails."""
DISCARD_DELAY_S = 0.1
DOCKER_TIME = "docker_ns"
"""Store counter: Docker's time of the last event applied, where a replay resumes."""
HEALTH_STATUS = "health_status"
"""Docker's action for a health check's verdict (``health_status: healthy``)."""


@dataclass
class Expectation:
    """An operation in flight on one domain: how to read Docker's steps, whom to credit,
    and which transition ends it. Only the transitions it brings about carry its
    ``cause``: those it passes through (``via``) and the one that ends it, and none once
    it has ended; anything else that happens to the domain meanwhile is not its doing."""

    cause: str
    until: frozenset[Transition]
    mode: Mode = Mode.PLAIN
    params: dict[str, int] = field(default_factory=dict)
    via: frozenset[Transition] = frozenset()
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: bool = True
    """False for an operation of a previous run that nobody waits for any more."""
    held: bool = False
    """An operation that waits for the store, to run again once the monitor has read
    what Docker reported meanwhile: by then its effect is seen or was never made."""
    since: float = field(default_factory=time.monotonic)
    _on_reach: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False)

    def reach(self) -> None:
        """The transition that ends the operation was seen; whoever waits for it is
        woken in the same step, with no task in between."""
        self.reached.set()
        callbacks, self._on_reach = self._on_reach, []
        for callback in callbacks:
            callback()

    def on_reach(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the operation's end is seen, at once if it was."""
        if self.reached.is_set():
            callback()
        else:
            self._on_reach.append(callback)

    async def wait(self, timeout_s: float) -> bool:
        if self.reached.is_set():
            return True
        try:
            async with asyncio.timeout(timeout_s):  # no task in between, as wait_for has
                await self.reached.wait()
        except TimeoutError:
            return False
        return True

    def credits(self, transition: Transition) -> bool:
        """Whether the operation brought ``transition`` about."""
        return not self.reached.is_set() and transition in self.until | self.via


class Monitor:
    def __init__(
        self,
        host: str,
        domains: DomainTable,
        store: Store,
        driver: Driver,
        on_queued: Callable[[], None],
        on_reconnect: Callable[[], None] = lambda: None,
        on_answering: Callable[[], None] = lambda: None,
        restarts: Restarts | None = None,
    ) -> None:
        self.host = host
        self.restarts = restarts or Restarts()
        self._on_reconnect = on_reconnect
        self._domains = domains
        self._store = store
        self._driver = driver
        self._on_queued = on_queued
        self._on_answering = on_answering
        self._expectations: dict[UUID, Expectation] = {}
        self._discards: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        self._applied: OrderedDict[tuple[int, str, str], None] = OrderedDict()
        self.connected = asyncio.Event()
        self._unwritten_ns: int | None = None
        """Docker's time of the first event the store could not take, where a replay
        starts (the store's own mark may be older, or unset on a new host)."""
        self._current = asyncio.Event()
        """Cleared while Docker's events wait for the store: the monitor is behind."""
        self._current.set()

    @contextmanager
    def expect(
        self,
        domain: DomainObj,
        cause: str,
        until: frozenset[Transition],
        mode: Mode = Mode.PLAIN,
        params: dict[str, int] | None = None,
        via: frozenset[Transition] = frozenset(),
    ) -> Iterator[Expectation]:
        expectation = Expectation(cause, until, mode, params or {}, via)
        log.debug("expect %s on %s: %s", cause, domain.name, sorted(t.name for t in until))
        with self._store.transaction() as tx:
            tx.intend(cause, domain.uuid, mode.value, sorted(t.name for t in until))
        self._expectations[domain.uuid] = expectation
        try:
            yield expectation
        except StoreUnwritable:
            # the command runs again once the store can write: Docker's events read
            # meanwhile are still its doing, as an operation's of a previous run are
            expectation.waiting, expectation.held = False, True
            raise
        finally:
            log.debug("done %s on %s", cause, domain.name)
            if self._expectations.get(domain.uuid) is expectation and expectation.waiting:
                del self._expectations[domain.uuid]

    async def name_free(self, name: str) -> None:
        """Wait until the removal of the container of a transient domain that was named
        ``name`` has ended (tried a few times; a later re-list takes over if it failed)."""
        task = self._discards.get(name)
        if task is not None:
            await asyncio.shield(task)

    async def removals_done(self) -> None:
        """Wait until every container removal running in the background has ended: what
        a stopped transient domain held (a volume, a name) is free once it returns,
        unless its removal failed and was left to a re-list."""
        tasks = list(self._discards.values())
        if tasks:
            await asyncio.gather(*(asyncio.shield(task) for task in tasks), return_exceptions=True)

    @contextmanager
    def kept(self, *domains: DomainObj) -> Iterator[None]:
        """Changes made inside to ``domains`` (their fields, their place in the domain
        table) are undone if the store cannot write them: the agent's view never runs
        ahead of its store, and what was not written is left for a retry or a re-read of
        Docker to find."""
        saved = [(d, d.copy(), self._domains.by_uuid(d.uuid) is d) for d in domains]
        try:
            yield
        except StoreUnwritable:
            for domain, before, listed in saved:
                self._domains.remove(domain)
                # the handle is set by an operation as Docker answers it, maybe meanwhile
                handle = domain.handle
                domain.restore(before)
                domain.handle = handle
                if listed:
                    self._domains.add(domain)
            raise

    @property
    def behind(self) -> bool:
        """Docker's events wait for the store: what the monitor has not seen may be there."""
        return not self._current.is_set()

    async def recovered(self) -> None:
        """Returns once the store can write and, if Docker's events waited for it, the
        monitor has caught up with them."""
        await self._store.writable()
        await self._current.wait()

    async def claim(self, name: str) -> None:
        """Make ``name`` free for a new domain: a container Docker still holds under that
        name for a domain this agent no longer has (``_leftover``) is removed. Raises if
        Docker cannot remove it."""
        await self.name_free(name)
        found = await self._driver.named(name)
        if found is not None and self._leftover(found):
            log.warning("domain name %s: removing the container left by a gone domain", name)
            await self._driver.remove(found.handle)

    def _leftover(self, found: Observed) -> bool:
        """A container of a domain this agent made and no longer has: a transient domain
        that stopped while Docker could not remove its container or the agent was killed
        in between, or a start the agent was killed in the middle of. Nothing can manage
        it any more. A container of a domain the agent never knew (its state deleted)
        is not one: that is left alone."""
        return self._domains.by_uuid(found.uuid) is None and self._store.made(found.uuid)

    def announce(
        self, domain: DomainObj, transition: Lifecycle, cause: str, whole: bool = False
    ) -> None:
        """Publish a transition that has no Docker event of its own. ``whole``: it is the
        whole effect of command ``cause``, whose retry then answers at once."""
        with self.kept(domain), self._store.transaction() as tx:
            self._emit(tx, domain, transition, "agent", cause, datetime.now(UTC))
            if whole:
                tx.intend(cause, domain.uuid, Mode.PLAIN.value, [transition.name])
                tx.reached(cause)
            if self._domains.by_uuid(domain.uuid) is domain:
                tx.save(domain)
        self._on_queued()

    def _health(self, domain: DomainObj, event: RuntimeEvent) -> None:
        """A health check's verdict: an event of its own, no state change."""
        if event.status not in ("healthy", "unhealthy"):
            return
        status: Literal["healthy", "unhealthy"] = (
            "healthy" if event.status == "healthy" else "unhealthy"
        )
        ref = DomainRef(name=domain.name, uuid=domain.uuid, id=domain.id)
        when = datetime.fromtimestamp(event.time_ns / 1e9, UTC)
        with self._store.transaction() as tx:
            tx.enqueue(
                lambda seq: HealthEvent(
                    seq=seq,
                    host=self.host,
                    time=when,
                    domain=ref,
                    origin="external",
                    status=status,
                )
            )
            tx.set_counter(DOCKER_TIME, event.time_ns)
        self._on_queued()

    def publish(
        self, domain: DomainObj, build: Callable[[int, dict[str, Any]], DomainEventBase]
    ) -> None:
        """Store the domain and queue an event of a change Docker does not see (its
        metadata) in one transaction. ``build`` gets the event's ``seq`` and the fields
        every domain event shares."""
        ref = DomainRef(name=domain.name, uuid=domain.uuid, id=domain.id)
        with self._store.transaction() as tx:
            if self._domains.by_uuid(domain.uuid) is domain:
                tx.save(domain)
            common = {"host": self.host, "time": datetime.now(UTC), "domain": ref}
            tx.enqueue(lambda seq: build(seq, common))
        self._on_queued()

    def stopped(
        self,
        domain: DomainObj,
        transition: Lifecycle,
        cause: str | None,
        exit_code: int | None = None,
    ) -> None:
        """Publish a stop that has no Docker event of its own (the domain's container is
        already down: a crash restart cancelled or refused), and bring the domain there."""
        with self.kept(domain), self._store.transaction() as tx:
            self._settle(tx, domain, transition)
            self._emit(tx, domain, transition, "agent", cause, datetime.now(UTC), exit_code)
            if self._domains.by_uuid(domain.uuid) is domain:
                tx.save(domain)
        self._on_queued()

    def _restarting(
        self,
        domain: DomainObj,
        expectation: Expectation | None,
        transitions: tuple[Transition, ...] | list[Transition],
        exit_code: int | None,
    ) -> bool:
        """Whether a crash is left to the agent's restart (scheduled here) instead of
        being reported: a domain with ``on_crash: restart`` stays active through it,
        unless an operation is taking it down."""
        if (
            domain.spec.on_crash != "restart"
            or not domain.active
            or len(transitions) != 1
            or transitions[0] not in _CRASHES
            or (expectation is not None and expectation.until & STOPPED)
        ):
            return False
        crash = transitions[0]
        assert isinstance(crash, Lifecycle)
        return self.restarts.schedule(domain, crash, exit_code)

    def save(self, domain: DomainObj) -> None:
        with self._store.transaction() as tx:
            tx.save(domain)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A store transaction whose queued events go out once it has committed."""
        with self._store.transaction() as tx:
            yield tx
        self._on_queued()

    def device_changed(
        self, domain: DomainObj, event: Literal["added", "removed"], alias: str, cause: str
    ) -> None:
        """Save the domain and publish libvirt's DEVICE_ADDED or DEVICE_REMOVED with it."""
        with self.transaction() as tx:
            tx.enqueue(
                lambda seq: DeviceEvent.of(
                    event,
                    seq=seq,
                    host=self.host,
                    time=datetime.now(UTC),
                    domain=DomainRef(name=domain.name, uuid=domain.uuid, id=domain.id),
                    origin="agent",
                    cause=cause,
                    alias=alias,
                )
            )
            if self._domains.by_uuid(domain.uuid) is domain:
                tx.save(domain)

    async def run(self) -> None:
        """Follow Docker's events for good. Each time the stream (re)starts, first catch
        up: replay what Docker still holds since the last event applied, then re-list.
        An event the store cannot take ends the stream the same way: once the store can
        write, the replay starts at that event."""
        lost = False
        while True:
            try:
                live_from = time.time_ns()
                await self._catch_up(live_from)
                self._current.set()
                self.connected.set()
                if lost:
                    self._on_reconnect()
                lost = False
                async for event in self._driver.events(live_from):
                    await self._apply_once(event, None)
            except VirtError as error:
                log.warning("Docker event stream lost: %s", error)
            except StoreUnwritable:
                self._current.clear()
                await self._store.writable()
                continue
            self.connected.clear()
            lost = True
            await asyncio.sleep(RESUBSCRIBE_DELAY_S)

    async def _catch_up(self, until_ns: int) -> None:
        """Replay, re-list, then settle the operations whose events were lost."""
        self._adopt_intents()
        applied_ns = self._store.counter(DOCKER_TIME)
        since_ns = min(applied_ns + 1 if applied_ns else until_ns, self._unwritten_ns or until_ns)
        if since_ns < until_ns:
            async for event in self._driver.events(since_ns, until_ns):
                await self._apply_once(event, "reconcile")
        self._unwritten_ns = None
        await self.reconcile()
        for uuid in list(self._expectations):
            domain = self._domains.by_uuid(uuid)
            if domain is not None:
                await self.resync(domain)

    def _adopt_intents(self) -> None:
        """Operations a previous run of the agent left acting on a domain it knows
        (Docker may still be finishing them): read their events in the operation's mode
        and credit the command, until their effect is seen, a new operation takes the
        domain over, or ORPHAN_TTL_S passes."""
        for intent in self._store.intents():
            known = self._domains.by_uuid(intent.uuid) is not None
            if intent.reached or intent.uuid in self._expectations or not known:
                continue
            until = frozenset(_transition(name) for name in intent.until)
            self._expectations[intent.uuid] = Expectation(
                intent.command_id, until, Mode(intent.mode), waiting=False
            )

    async def orphan_settled(self, command_id: str, timeout_s: float) -> bool:
        """For a command retried after a restart: wait (bounded) for the effect of its
        first attempt, which Docker may still be carrying out. True once seen."""
        orphan = next(
            (e for e in self._expectations.values() if e.cause == command_id and not e.waiting),
            None,
        )
        if orphan is None:
            return False
        if orphan.held:
            return orphan.reached.is_set()
        return await orphan.wait(timeout_s)

    def _settled(
        self, uuid: UUID, expectation: Expectation | None, emitted: set[Transition]
    ) -> bool:
        """Whether the transitions ended an operation someone waits for (woken now)."""
        if expectation is None or not expectation.until & emitted:
            return False
        expectation.reach()
        if not expectation.waiting and self._expectations.get(uuid) is expectation:
            del self._expectations[uuid]
        return expectation.waiting

    def _drop_stale_orphans(self) -> None:
        now = time.monotonic()
        for uuid, expectation in list(self._expectations.items()):
            if not expectation.waiting and now - expectation.since > ORPHAN_TTL_S:
                del self._expectations[uuid]

    async def resync(self, domain: DomainObj, acted: bool = False) -> None:
        """Bring one domain in line with what Docker has now, crediting the operation in
        flight on it: for when Docker's events of that operation were lost. ``acted``:
        the operation has made its last call, so a reboot's stop found now is no step of
        it but the domain's end."""
        async with self._lock:
            seen_ns = time.time_ns()
            found = await self._driver.observe(domain.handle) if domain.handle else None
            with self.kept(domain), self._store.transaction() as tx:
                self._catch_up_domain(tx, domain, found, seen_ns, acted)
                queued = tx.queued
            if queued:
                self._on_queued()

    def _catch_up_domain(
        self,
        tx: Transaction,
        domain: DomainObj,
        found: Observed | None,
        seen_ns: int,
        acted: bool = False,
    ) -> None:
        """Publish the transitions Docker's present state shows were missed (origin
        reconcile), credited to the operation in flight on the domain, if any. What
        Docker showed reflects its events before ``seen_ns``: a replay skips them."""
        when = datetime.now(UTC)
        expectation = self._expectations.get(domain.uuid)
        if found is None and _defining(expectation):
            # Docker lost the container it made (its engine restarted): never defined,
            # so nothing to publish; the define fails
            return
        missed = self._missed(domain, found)
        if acted and _rebooting(expectation) and not missed and _new_init(domain, found):
            # the reboot's report was lost: the container runs another init
            missed = [Special.REBOOT]
        if found is not None:
            domain.handle, domain.pid = found.handle, found.pid
        emitted: set[Transition] = set()
        if found is not None and _defining(expectation):
            # Docker made the container and its create event was lost (dockerd restarted)
            missed.insert(0, Lifecycle.DEFINED_ADDED)
        exit_code = found.exit_code if found else None
        if self._restarting(domain, expectation, missed, exit_code) or (
            _rebooting(expectation) and not acted and all(t in STOPPED for t in missed)
        ):
            missed = []
        for transition in missed:
            if self._redundant(domain, transition):
                continue
            exit_code = found.exit_code if found and transition in STOPPED else None
            credited = expectation is not None and expectation.credits(transition)
            if credited and expectation and transition in STOPPED:
                # the signals that would tell were lost with the events: the stop is the
                # take-down's own, as a domain that dies while being destroyed is
                transition = _OWN_STOPS.get(expectation.mode, transition)
            self._settle(tx, domain, transition)
            cause = expectation.cause if expectation and credited else None
            self._emit(tx, domain, transition, "reconcile", cause, when, exit_code)
            emitted.add(transition)
        if self._domains.by_uuid(domain.uuid) is domain:
            domain.applied_ns = max(domain.applied_ns, seen_ns)
            tx.save(domain)
        if expectation and expectation.until & emitted:
            tx.reached(expectation.cause)
        # once committed: an operation answered on a transition the store then could
        # not take would be answered with no event, and its retry credited with nothing
        tx.after(lambda: self._settled(domain.uuid, expectation, emitted))

    async def _apply_once(self, event: RuntimeEvent, origin: Origin | None) -> None:
        """Apply an event not applied before (a replay overlaps the live stream). One
        the store could not take stays unapplied, for the replay, and raises."""
        key = (event.time_ns, event.handle, event.action)
        if key in self._applied:
            return
        self._applied[key] = None
        if len(self._applied) > APPLIED_KEPT:
            self._applied.popitem(last=False)
        try:
            await self.apply(event, origin)
        except StoreUnwritable:
            self._applied.pop(key, None)
            self._unwritten_ns = min(self._unwritten_ns or event.time_ns, event.time_ns)
            raise
        except Exception:
            log.exception("could not translate Docker event %s", event)

    async def apply(self, event: RuntimeEvent, origin: Origin | None = None) -> None:
        """Translate one Docker event; ``origin`` overrides who is credited. Raises
        StoreUnwritable, with the domain as it was, if the store cannot take it."""
        async with self._lock:
            domain = self._domains.by_uuid(event.uuid)
            with self.kept(domain) if domain else nullcontext():
                await self._apply(event, origin)

    async def _apply(self, event: RuntimeEvent, origin_override: Origin | None) -> None:
        domain = self._domains.by_uuid(event.uuid)
        log.debug(
            "docker %s on %s (signal %s, exit %s)%s",
            event.action,
            domain.name if domain else event.uuid,
            event.signal,
            event.exit_code,
            f" as {origin_override}" if origin_override else "",
        )
        if domain is None:
            return
        if origin_override == "reconcile" and event.time_ns <= domain.applied_ns:
            # a replay reaches back past what was applied (Docker's times of concurrent
            # events need not follow the order it reported them in)
            return
        if event.action == HEALTH_STATUS:
            self._health(domain, event)
            return
        expectation = self._expectations.get(event.uuid)
        if event.action in _TOGGLES and await self._stale(
            domain, event.action, _awaited(expectation, _TOGGLES[event.action])
        ):
            return
        reported = domain.evidence.copy()
        domain.evidence.observe(event.action, event.signal)
        transitions = translate(
            event.action,
            mode=expectation.mode if expectation else Mode.PLAIN,
            persistent=domain.persistent,
            evidence=domain.evidence,
            exit_code=event.exit_code,
        )
        if not transitions or self._restarting(domain, expectation, transitions, event.exit_code):
            if domain.evidence != reported:
                domain.applied_ns = max(domain.applied_ns, event.time_ns)
                with self._store.transaction() as tx:
                    tx.save(domain)
                    tx.set_counter(DOCKER_TIME, event.time_ns)
            return
        params: dict[str, int] = {}
        if Special.TUNABLE in transitions:
            tuning = expectation is not None and expectation.credits(Special.TUNABLE)
            params = expectation.params if expectation and tuning else await self._tunables(domain)
            if not tuning and params == domain.spec.tunables():
                # an update of something else (the restart policy): no tunable changed
                return
        when = datetime.fromtimestamp(event.time_ns / 1e9, UTC)
        emitted: set[Transition] = set()
        with self._store.transaction() as tx:
            for transition in transitions:
                if self._redundant(domain, transition) or _defined(transition, expectation):
                    continue
                if _defining(expectation) and transition is not Lifecycle.DEFINED_ADDED:
                    # not defined yet: its container went before Docker reported making it
                    # (the engine restarting), and the define fails for want of it
                    continue
                credited = expectation is not None and expectation.credits(transition)
                origin: Origin = origin_override or ("agent" if credited else "external")
                # a replayed event of the operation is still its doing, as a re-listed one is
                cause = expectation.cause if expectation and credited else None
                if transition in _STARTS:
                    domain.pid = event.pid
                if transition is Lifecycle.UNDEFINED_RENAMED:
                    self._emit(tx, domain, transition, origin, cause, when)
                    self._domains.rename(domain, event.name)
                    emitted.add(transition)
                    continue
                self._settle(tx, domain, transition)
                self._emit(tx, domain, transition, origin, cause, when, event.exit_code, params)
                emitted.add(transition)
            if self._domains.by_uuid(domain.uuid) is domain:
                domain.applied_ns = max(domain.applied_ns, event.time_ns)
                tx.save(domain)
            tx.set_counter(DOCKER_TIME, event.time_ns)
            if expectation and expectation.until & emitted:
                tx.reached(expectation.cause)
        if emitted:
            if self._settled(event.uuid, expectation, emitted):
                self._on_answering()
            self._on_queued()

    async def _stale(self, domain: DomainObj, action: str, awaited: bool) -> bool:
        """Docker 20.10 may report a pause or unpause twice (from its API and from
        containerd's event, racing); the late copy no longer matches the container. The
        change an operation awaits is checked with the kernel only (Docker's answer
        would wait for the operation's own call to end), and taken when the kernel
        cannot tell: a stale copy must not answer the operation before its call acted."""
        if domain.handle is None:
            return action == "pause"
        if awaited:
            frozen = await self._driver.frozen(domain.handle, domain.pid)
            return frozen is not None and frozen != (action == "pause")
        paused = await self._driver.paused(domain.handle, domain.pid)
        return bool(paused) != (action == "pause")

    async def _tunables(self, domain: DomainObj) -> dict[str, int]:
        observed = await self._driver.observe(domain.handle) if domain.handle else None
        if observed is None:
            return {}
        return dict(observed.tunables)

    @staticmethod
    def _redundant(domain: DomainObj, transition: Transition) -> bool:
        """A transition the domain has already made: a replayed or re-listed step."""
        if transition in (Lifecycle.STARTED_BOOTED, Lifecycle.STARTED_FROM_SNAPSHOT):
            return domain.active
        if transition in STOPPED or transition is Special.REBOOT:
            return not domain.active
        if transition is Lifecycle.SUSPENDED_PAUSED:
            return domain.state is not DomainState.RUNNING
        if transition is Lifecycle.RESUMED_UNPAUSED:
            return domain.state is not DomainState.PAUSED
        return False

    def _settle(self, tx: Transaction, domain: DomainObj, transition: Transition) -> None:
        """Bring the domain to where the transition leaves it."""
        if transition in _STARTS:
            domain.evidence = Evidence()
        if transition is Special.REBOOT:
            domain.state, domain.reason = DomainState.RUNNING, RunningReason.BOOTED
        elif isinstance(transition, Lifecycle) and transition.outcome is not None:
            domain.state, domain.reason = transition.outcome
        if transition in STOPPED:
            domain.pid = 0
            if not domain.persistent:
                self._forget(tx, domain)
                tx.after(lambda: self._discard(domain))
        elif transition is Lifecycle.UNDEFINED_REMOVED:
            domain.persistent = domain.autostart = False
            self._forget(tx, domain)

    def _forget(self, tx: Transaction, domain: DomainObj) -> None:
        self._domains.remove(domain)
        tx.forget(domain)

    def _discard(self, domain: DomainObj) -> None:
        """Remove a transient domain's container now that it has stopped."""
        if domain.handle is not None:
            self._remove_later(domain.name, domain.handle)

    def _remove_later(self, name: str, handle: str) -> None:
        if name in self._discards:
            return

        async def remove() -> None:
            try:
                await self._remove(name, handle)
            finally:
                if self._discards.get(name) is task:
                    del self._discards[name]

        task = asyncio.create_task(remove(), name=f"remove {name}")
        self._discards[name] = task

    def discard_made(self, name: str, uuid: UUID) -> None:
        """After a define that failed: remove, in the background, a container Docker may
        have made for ``uuid`` under ``name`` with its answer lost (the engine
        restarting). ``name_free`` waits for it; a re-list does it if Docker is away."""
        if name in self._discards:
            return

        async def sweep() -> None:
            delay = DISCARD_DELAY_S
            try:
                for _ in range(DISCARD_TRIES):
                    with contextlib.suppress(VirtError):
                        found = await self._driver.named(name)
                        if found is not None and found.uuid == uuid and self._leftover(found):
                            await self.remove(found.handle)
                        return
                    await asyncio.sleep(delay)
                    delay *= 2
            finally:
                if self._discards.get(name) is task:
                    del self._discards[name]

        task = asyncio.create_task(sweep(), name=f"sweep {name}")
        self._discards[name] = task

    async def _remove(self, name: str, handle: str) -> None:
        try:
            await self.remove(handle)
        except VirtError as error:
            log.warning(
                "could not remove the container of stopped domain %s (%d tries), "
                "left to the next re-list: %s",
                name,
                DISCARD_TRIES,
                error,
            )

    async def remove(self, handle: str) -> None:
        """Remove a domain's container for good, by its id. Docker may fail a removal
        for a while (its overlay mount still busy right after the stop, the engine
        restarting), or do it and lose its answer: tried again, DISCARD_TRIES times,
        until Docker no longer has it. Raises Docker's last error if it still does."""
        delay = DISCARD_DELAY_S
        for attempt in range(1, DISCARD_TRIES + 1):
            try:
                await self._driver.remove(handle)
                return
            except VirtError:
                with contextlib.suppress(VirtError):
                    if await self._driver.observe(handle) is None:
                        return
                if attempt == DISCARD_TRIES:
                    raise
            await asyncio.sleep(delay)
            delay *= 2

    def _emit(
        self,
        tx: Transaction,
        domain: DomainObj,
        transition: Transition,
        origin: Origin,
        cause: str | None,
        when: datetime,
        exit_code: int | None = None,
        params: dict[str, int] | None = None,
    ) -> None:
        ref = DomainRef(name=domain.name, uuid=domain.uuid, id=domain.id)
        common = {"host": self.host, "time": when, "domain": ref, "origin": origin, "cause": cause}
        if isinstance(transition, Lifecycle):
            lifecycle = transition
            tx.enqueue(
                lambda seq: LifecycleEvent(
                    seq=seq,
                    event=lifecycle.event,
                    event_code=lifecycle.event_code,
                    detail=lifecycle.detail,
                    detail_code=lifecycle.detail_code,
                    exit_code=exit_code if lifecycle in STOPPED else None,
                    **common,  # type: ignore[arg-type]
                )
            )
        elif transition is Special.REBOOT:
            tx.enqueue(lambda seq: RebootEvent(seq=seq, **common))  # type: ignore[arg-type]
        else:
            tx.enqueue(
                lambda seq: TunableEvent(seq=seq, params=params or {}, **common)  # type: ignore[arg-type]
            )

    async def reconcile(self) -> None:
        """Compare the domains with what Docker has now and publish what was missed.

        Domains with an operation in flight are left to it: their events are coming.
        A container that carries a Docker restart policy (an earlier agent set them),
        which would mount again with no check, is set to ``no`` first: the agent
        restarts domains itself. Until Docker takes that, the re-list fails.
        """
        async with self._lock:
            seen_ns = time.time_ns()
            observed = {item.uuid: item for item in await self._driver.observe_all()}
            for found in observed.values():
                if found.restart_policy != "no":
                    await self._driver.forbid_restarts(found.handle)
                    log.info("domain %s: Docker's restart policy set to 'no'", found.name)
            self._reconcile(observed, seen_ns)
            self._drop_stale_orphans()

    def _reconcile(self, observed: dict[UUID, Observed], seen_ns: int) -> None:
        with self.kept(*self._domains), self._store.transaction() as tx:
            for domain in self._domains:
                expectation = self._expectations.get(domain.uuid)
                if self.restarts.pending(domain.uuid):
                    continue
                if expectation is None or not expectation.waiting:
                    self._catch_up_domain(tx, domain, observed.get(domain.uuid), seen_ns)
            queued = tx.queued
        for uuid in observed.keys() - {d.uuid for d in self._domains}:
            found = observed[uuid]
            if self._leftover(found):
                self._remove_later(found.name, found.handle)
            else:
                log.warning(
                    "container %s carries this host's labels but no domain; left alone", uuid
                )
        if queued:
            self._on_queued()

    @staticmethod
    def _missed(domain: DomainObj, found: Observed | None) -> list[Transition]:
        if found is None:
            missed: list[Transition] = [Lifecycle.STOPPED_DESTROYED] if domain.active else []
            if domain.persistent:
                missed.append(Lifecycle.UNDEFINED_REMOVED)
            return missed
        state, _ = _DOCKER_STATES.get(found.status, (DomainState.SHUTOFF, None))
        if state in (DomainState.SHUTOFF, DomainState.CRASHED):
            if not domain.active:
                return []
            return [stop_cause_of_exit(found.exit_code, found.oom_killed, domain.evidence)]
        missed = [] if domain.active else [Lifecycle.STARTED_BOOTED]
        if state is DomainState.PAUSED and domain.state is not DomainState.PAUSED:
            missed.append(Lifecycle.SUSPENDED_PAUSED)
        if state is DomainState.RUNNING and domain.state is DomainState.PAUSED:
            missed.append(Lifecycle.RESUMED_UNPAUSED)
        return missed


_STARTS = frozenset({Lifecycle.STARTED_BOOTED, Lifecycle.STARTED_FROM_SNAPSHOT, Special.REBOOT})
_CRASHES = frozenset({Lifecycle.STOPPED_CRASHED, Lifecycle.STOPPED_FAILED})
_OWN_STOPS: dict[Mode, Transition] = {
    Mode.DESTROY: Lifecycle.STOPPED_DESTROYED,
    Mode.SHUTDOWN: Lifecycle.STOPPED_SHUTDOWN,
}
"""The stop a re-list reports for a take-down whose Docker events were lost."""
_TOGGLES = {"pause": Lifecycle.SUSPENDED_PAUSED, "unpause": Lifecycle.RESUMED_UNPAUSED}


def _defining(expectation: Expectation | None) -> bool:
    """A define in flight whose container's creation has not been reported."""
    return (
        expectation is not None
        and Lifecycle.DEFINED_ADDED in expectation.until
        and not expectation.reached.is_set()
    )


def _defined(transition: Transition, expectation: Expectation | None) -> bool:
    """A create event that defines nothing: only a define in flight is defined by its
    container's creation. Any other is late, its define reported already (by a re-list,
    maybe of an agent that ran before and whose events are read again)."""
    return transition is Lifecycle.DEFINED_ADDED and not _defining(expectation)


def _rebooting(expectation: Expectation | None) -> bool:
    """A reboot in flight: it starts the domain again after its stop, which is no event
    of its own (read live, Docker's die is not either); if the start fails, the next
    re-list reports the stop. Docker's restart goes on when the agent that asked for it
    is gone; the agent's own stop-then-start (``SOFT_REBOOT``) does not."""
    return (
        expectation is not None
        and not expectation.reached.is_set()
        and (
            expectation.mode is Mode.REBOOT
            or (expectation.mode is Mode.SOFT_REBOOT and expectation.waiting)
        )
    )


def _new_init(domain: DomainObj, found: Observed | None) -> bool:
    """The domain's container runs, with another init than the one last reported."""
    return (
        found is not None
        and found.handle == domain.handle
        and found.status == "running"
        and domain.pid > 0
        and found.pid not in (0, domain.pid)
    )


def _awaited(expectation: Expectation | None, transition: Transition) -> bool:
    """The event an operation in flight is waiting for."""
    return expectation is not None and expectation.waiting and expectation.credits(transition)


def _transition(name: str) -> Transition:
    return Lifecycle[name] if name in Lifecycle.__members__ else Special[name]
