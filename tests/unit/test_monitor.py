"""The monitor over the fake driver: it turns Docker's reports into domain state and
events, crediting the operation that expected them, and catches up on what it missed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from agent.host.domains import DomainObj, DomainTable
from agent.host.monitor import STOPPED, Expectation, Monitor
from agent.host.store import Store, StoreUnwritable
from agent.host.translate import Mode, Special
from schemas.codes import DomainState, Lifecycle, RunningReason
from schemas.domain import DomainSpec
from schemas.events import EVENT_ADAPTER, LifecycleEvent, RebootEvent
from tests.fakes import FakeContainer, FakeDriver

WAIT_S = 5.0


@dataclass
class Watched:
    """A monitor following a fake engine, and what it queued."""

    driver: FakeDriver
    store: Store
    domains: DomainTable
    monitor: Monitor
    queued: asyncio.Event
    answering: list[None]

    def adopt(self, name: str, persistent: bool = True) -> DomainObj:
        """A running domain whose container Docker has, known to the monitor already."""
        spec = DomainSpec(name=name, image="virtbus-test:latest", command=["sleep", "60"])
        domain = DomainObj(
            uuid=uuid4(),
            name=name,
            spec=spec,
            persistent=persistent,
            autostart=False,
            handle=f"h-{name}",
            state=DomainState.RUNNING,
            reason=RunningReason.BOOTED,
            pid=4242,
        )
        self.driver.containers[domain.handle or ""] = FakeContainer(
            domain.handle or "", domain.uuid, name, spec, status="running", pid=4242
        )
        self.domains.add(domain)
        self.monitor.save(domain)
        return domain

    def being_defined(self, name: str) -> tuple[DomainObj, FakeContainer]:
        """A domain whose define has made its container, not yet reported by Docker."""
        domain = self.adopt(name)
        domain.state, domain.pid = DomainState.SHUTOFF, 0
        container = self.driver.containers[domain.handle or ""]
        container.status, container.pid = "created", 0
        return domain, container

    def events(self) -> list[LifecycleEvent]:
        return [
            event
            for event in (EVENT_ADAPTER.validate_json(p.body) for p in self.store.pending(1000))
            if isinstance(event, LifecycleEvent)
        ]

    async def published(self, count: int) -> list[LifecycleEvent]:
        async def enough() -> None:
            while len(self.events()) < count:
                await self.queued.wait()
                self.queued.clear()

        await asyncio.wait_for(enough(), WAIT_S)
        return self.events()


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Watched]:
    with Store(tmp_path) as store:
        driver, domains, queued = FakeDriver(), DomainTable(), asyncio.Event()
        answering: list[None] = []
        monitor = Monitor(
            "h1", domains, store, driver, queued.set, on_answering=lambda: answering.append(None)
        )
        running = asyncio.create_task(monitor.run())
        try:
            await asyncio.wait_for(monitor.connected.wait(), WAIT_S)
            yield Watched(driver, store, domains, monitor, queued, answering)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


async def test_a_change_nobody_asked_for_is_external_and_committed_with_its_state(
    watched: Watched,
) -> None:
    web = watched.adopt("web")
    watched.driver.exit(web.handle or "", 0)
    (event,) = await watched.published(1)
    assert (event.lifecycle, event.origin, event.cause) == (
        Lifecycle.STOPPED_SHUTDOWN,
        "external",
        None,
    )
    (stored,) = watched.store.domains()
    assert stored.state is DomainState.SHUTOFF and not web.active


async def test_an_expected_change_is_credited_to_its_command(watched: Watched) -> None:
    web = watched.adopt("web")
    until = frozenset({Lifecycle.SUSPENDED_PAUSED})
    with watched.monitor.expect(web, "cmd-1", until) as expectation:
        await watched.driver.pause(web.handle or "")
        assert await expectation.wait(WAIT_S)
    (event,) = watched.events()
    assert (event.lifecycle, event.origin, event.cause) == (
        Lifecycle.SUSPENDED_PAUSED,
        "agent",
        "cmd-1",
    )
    assert watched.store.intent_reached("cmd-1")
    assert web.state is DomainState.PAUSED


async def test_the_outbox_hears_that_a_reply_follows_only_events_that_answer_a_command(
    watched: Watched,
) -> None:
    web = watched.adopt("web")
    await watched.driver.pause(web.handle or "")
    await watched.published(1)
    assert watched.answering == []
    with watched.monitor.expect(web, "cmd-1", frozenset({Lifecycle.RESUMED_UNPAUSED})) as resume:
        await watched.driver.unpause(web.handle or "")
        assert await resume.wait(WAIT_S)
    assert len(watched.events()) == 2
    assert watched.answering == [None]


async def test_a_stop_right_after_a_start_is_not_credited_to_the_start(
    watched: Watched,
) -> None:
    """dockerd going down stops a domain just started: Docker reports the stop before
    the start's command has ended, and the stop is not that command's doing."""
    web = watched.adopt("web")
    watched.driver.exit(web.handle or "", 0)
    await watched.published(1)
    until = frozenset({Lifecycle.STARTED_BOOTED})
    with watched.monitor.expect(web, "create-1", until) as expectation:
        await watched.driver.start(web.handle or "")
        watched.driver.exit(web.handle or "", 0)
        _, booted, stopped = await watched.published(3)
        assert await expectation.wait(WAIT_S)
    assert (booted.lifecycle, booted.origin, booted.cause) == (
        Lifecycle.STARTED_BOOTED,
        "agent",
        "create-1",
    )
    assert (stopped.lifecycle, stopped.origin, stopped.cause) == (
        Lifecycle.STOPPED_SHUTDOWN,
        "external",
        None,
    )


async def test_a_step_on_the_way_is_credited_and_nothing_else(watched: Watched) -> None:
    """A start into the paused state causes its boot on the way; a stop seen while it
    waits for the pause is not its doing."""
    web = watched.adopt("web")
    watched.driver.exit(web.handle or "", 0)
    await watched.published(1)
    until, via = frozenset({Lifecycle.SUSPENDED_PAUSED}), frozenset({Lifecycle.STARTED_BOOTED})
    with watched.monitor.expect(web, "create-1", until, via=via):
        await watched.driver.start(web.handle or "")
        watched.driver.exit(web.handle or "", 1)
        _, booted, failed = await watched.published(3)
    assert (booted.lifecycle, booted.cause) == (Lifecycle.STARTED_BOOTED, "create-1")
    assert (failed.lifecycle, failed.origin, failed.cause) == (
        Lifecycle.STOPPED_FAILED,
        "external",
        None,
    )


async def test_a_missed_stop_found_while_an_operation_waits_is_not_its_doing(
    watched: Watched,
) -> None:
    """Docker's events were lost (dockerd restarted): the stop the re-list finds is
    published, but not credited to the suspend that was waiting for a pause."""
    web = watched.adopt("web")
    container = watched.driver.containers[web.handle or ""]
    with watched.monitor.expect(web, "suspend-1", frozenset({Lifecycle.SUSPENDED_PAUSED})):
        container.status, container.pid, container.exit_code = "exited", 0, 0
        await watched.monitor.resync(web)
    (event,) = watched.events()
    assert (event.lifecycle, event.origin, event.cause) == (
        Lifecycle.STOPPED_SHUTDOWN,
        "reconcile",
        None,
    )


@pytest.mark.parametrize(
    ("mode", "exit_code", "stop"),
    [
        (Mode.DESTROY, 0, Lifecycle.STOPPED_DESTROYED),
        (Mode.SHUTDOWN, 143, Lifecycle.STOPPED_SHUTDOWN),
    ],
)
async def test_a_stop_found_by_a_re_list_during_a_take_down_is_the_take_down(
    watched: Watched, mode: Mode, exit_code: int, stop: Lifecycle
) -> None:
    """The signals that tell a stop's kind were lost with Docker's events (the agent or
    dockerd restarted): whatever the exit code, the stop is the one the command makes."""
    web = watched.adopt("web")
    container = watched.driver.containers[web.handle or ""]
    stops = frozenset(
        {
            Lifecycle.STOPPED_SHUTDOWN,
            Lifecycle.STOPPED_DESTROYED,
            Lifecycle.STOPPED_FAILED,
            Lifecycle.STOPPED_CRASHED,
        }
    )
    with watched.monitor.expect(web, "stop-1", stops, mode) as expectation:
        container.status, container.pid, container.exit_code = "exited", 0, exit_code
        await watched.monitor.resync(web)
        assert expectation.reached.is_set()
    (event,) = watched.events()
    assert (event.lifecycle, event.origin, event.cause) == (stop, "reconcile", "stop-1")


async def test_a_stop_found_after_a_take_down_waited_for_the_store_is_still_its_own(
    watched: Watched,
) -> None:
    """The destroy gave up waiting for Docker's report, which waited for the store, and
    runs again once the store can write: a re-list that finds the domain stopped
    meanwhile credits the destroy, and marks its intent reached for the re-run."""
    web = watched.adopt("web")
    container = watched.driver.containers[web.handle or ""]
    with (
        pytest.raises(StoreUnwritable),
        watched.monitor.expect(web, "stop-1", STOPPED, Mode.DESTROY),
    ):
        raise StoreUnwritable("Docker's report of the effect waits for the store")
    container.status, container.pid, container.exit_code = "exited", 0, 137
    await watched.monitor.resync(web)
    (event,) = watched.events()
    assert (event.lifecycle, event.origin, event.cause) == (
        Lifecycle.STOPPED_DESTROYED,
        "reconcile",
        "stop-1",
    )
    assert watched.store.intent_reached("stop-1")


async def test_a_stop_found_by_a_re_list_during_a_reboot_is_left_to_the_reboot(
    watched: Watched,
) -> None:
    """dockerd restarted while a reboot waited for the domain to stop: the re-list that
    finds it stopped reports nothing, as Docker's die read live would, and the reboot's
    start is the reboot, from a running domain."""
    web = watched.adopt("web")
    container = watched.driver.containers[web.handle or ""]
    until = frozenset({Special.REBOOT})
    with watched.monitor.expect(web, "reboot-1", until, Mode.SOFT_REBOOT) as expectation:
        container.status, container.pid, container.exit_code = "exited", 0, 143
        await watched.monitor.resync(web)
        assert watched.store.pending(10) == [] and web.active
        await watched.driver.start(web.handle or "")
        assert await expectation.wait(WAIT_S)
    (event,) = [EVENT_ADAPTER.validate_json(p.body) for p in watched.store.pending(10)]
    assert isinstance(event, RebootEvent) and event.cause == "reboot-1"


async def test_a_define_whose_create_event_was_lost_is_found_by_the_re_list(
    watched: Watched,
) -> None:
    """Docker made the container, then restarted before its create event was read: the
    re-list reports the define's defined/added, credited to it, and ends it; the create
    event, if it comes after all, adds nothing."""
    web, container = watched.being_defined("web")
    marker = watched.adopt("marker")
    until = frozenset({Lifecycle.DEFINED_ADDED})
    with watched.monitor.expect(web, "define-1", until) as expectation:
        await watched.monitor.resync(web)
        assert expectation.reached.is_set()
    watched.driver._emit(container, "create")
    watched.driver.exit(marker.handle or "", 0)
    event, _ = await watched.published(2)
    assert (event.lifecycle, event.origin, event.cause) == (
        Lifecycle.DEFINED_ADDED,
        "reconcile",
        "define-1",
    )


async def test_a_define_whose_container_docker_removed_unreported_publishes_nothing(
    watched: Watched,
) -> None:
    """Docker made the container and, restarting, removed it before its create event was
    read: the destroy event finds a domain that was never defined. Nothing happened to
    it that libvirt could tell (no undefine of a domain never defined); the define ends
    without its event and fails."""
    web, container = watched.being_defined("web")
    marker = watched.adopt("marker")
    until = frozenset({Lifecycle.DEFINED_ADDED})
    with watched.monitor.expect(web, "define-1", until) as expectation:
        watched.driver._emit(container, "destroy")
        watched.driver.exit(marker.handle or "", 0)
        (event,) = await watched.published(1)
        assert not expectation.reached.is_set()
    assert (event.domain.name, event.lifecycle) == ("marker", Lifecycle.STOPPED_SHUTDOWN)


async def test_a_stale_copy_of_a_toggle_does_not_answer_the_operation_awaiting_it(
    watched: Watched,
) -> None:
    """Docker 20.10 reports a past unpause again while a resume's own unpause has not
    acted yet (the container still frozen): the resume waits for its own."""
    web, marker = watched.adopt("web"), watched.adopt("marker")
    container = watched.driver.containers[web.handle or ""]
    await watched.driver.pause(web.handle or "")
    await watched.published(1)
    until = frozenset({Lifecycle.RESUMED_UNPAUSED})
    with watched.monitor.expect(web, "resume-1", until) as expectation:
        watched.driver._emit(container, "unpause")
        watched.driver.exit(marker.handle or "", 0)
        await watched.published(2)  # the marker's stop, read after the copy
        assert not expectation.reached.is_set()
        assert web.state is DomainState.PAUSED
        await watched.driver.unpause(web.handle or "")
        assert await expectation.wait(WAIT_S)
    *_, resumed = await watched.published(3)
    assert (resumed.lifecycle, resumed.cause) == (Lifecycle.RESUMED_UNPAUSED, "resume-1")


async def test_an_operation_of_a_previous_run_is_credited_after_a_restart(
    watched: Watched, tmp_path: Path
) -> None:
    web = watched.adopt("web")
    with watched.monitor.expect(web, "cmd-1", frozenset({Lifecycle.SUSPENDED_PAUSED})):
        pass  # the agent died acting: the intent stays in the store
    restarted = Monitor("h1", watched.domains, watched.store, watched.driver, lambda: None)
    running = asyncio.create_task(restarted.run())
    try:
        await asyncio.wait_for(restarted.connected.wait(), WAIT_S)
        watched.driver.containers[web.handle or ""].status = "paused"
        assert await restarted.orphan_settled("cmd-1", 0.01) is False
        await restarted.reconcile()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    (event,) = watched.events()
    assert (event.lifecycle, event.origin, event.cause) == (
        Lifecycle.SUSPENDED_PAUSED,
        "reconcile",
        "cmd-1",
    )
    assert watched.store.intent_reached("cmd-1")


async def test_reconcile_publishes_what_docker_shows_was_missed(watched: Watched) -> None:
    web, db = watched.adopt("web"), watched.adopt("db")
    watched.driver.containers[web.handle or ""].status = "paused"
    del watched.driver.containers[db.handle or ""]
    await watched.monitor.reconcile()
    seen = {(e.domain.name, e.lifecycle, e.origin) for e in watched.events()}
    assert seen == {
        ("web", Lifecycle.SUSPENDED_PAUSED, "reconcile"),
        ("db", Lifecycle.STOPPED_DESTROYED, "reconcile"),
        ("db", Lifecycle.UNDEFINED_REMOVED, "reconcile"),
    }
    assert watched.domains.by_name("db") is None
    gone = watched.store.gone("db", None)
    assert gone is not None and gone.uuid == db.uuid


async def test_a_re_list_takes_back_a_restart_policy_docker_was_given(
    watched: Watched,
) -> None:
    """Docker's restarts would mount again with no policy check (an earlier agent set
    them): a re-list sets every one it finds to ``no``, and leaves the others alone."""
    web, db = watched.adopt("web"), watched.adopt("db")
    watched.driver.containers[web.handle or ""].restart_policy = "on-failure"
    await watched.monitor.reconcile()
    assert watched.driver.containers[web.handle or ""].restart_policy == "no"
    assert watched.driver.calls.count("forbid_restarts") == 1
    assert watched.driver.containers[db.handle or ""].restart_policy == "no"
    assert watched.events() == []


async def test_reconcile_leaves_a_domain_with_an_operation_in_flight_to_it(
    watched: Watched,
) -> None:
    web = watched.adopt("web")
    with watched.monitor.expect(web, "cmd-1", frozenset({Lifecycle.SUSPENDED_PAUSED})):
        watched.driver.containers[web.handle or ""].status = "paused"
        await watched.monitor.reconcile()
        assert watched.events() == []
    await watched.monitor.reconcile()
    assert [e.lifecycle for e in watched.events()] == [Lifecycle.SUSPENDED_PAUSED]


async def test_a_replayed_step_already_made_publishes_nothing(watched: Watched) -> None:
    web = watched.adopt("web")
    await watched.driver.pause(web.handle or "")
    await watched.published(1)
    await watched.monitor.resync(web)
    await watched.monitor.reconcile()
    assert [e.lifecycle for e in watched.events()] == [Lifecycle.SUSPENDED_PAUSED]


async def test_a_transient_domain_that_stops_is_forgotten_and_its_container_removed(
    watched: Watched,
) -> None:
    web = watched.adopt("web", persistent=False)
    watched.driver.exit(web.handle or "", 3)
    (event,) = await watched.published(1)
    assert event.lifecycle is Lifecycle.STOPPED_FAILED
    await asyncio.wait_for(watched.monitor.name_free("web"), WAIT_S)
    assert watched.domains.by_name("web") is None
    assert watched.driver.containers == {}
    assert watched.store.domains() == []


async def test_a_re_list_removes_the_container_of_a_gone_domain_and_no_other(
    watched: Watched,
) -> None:
    """What an agent killed between a transient domain's stop and its container's
    removal leaves: Docker still holds the container, the agent only the domain's last
    record. A container of a domain the agent never knew (its state deleted) stays."""
    gone = watched.adopt("gone", persistent=False)
    container = watched.driver.containers[gone.handle or ""]
    container.status, container.pid = "exited", 0
    with watched.store.transaction() as tx:
        tx.forget(gone)
    watched.domains.remove(gone)
    spec = DomainSpec(name="alien", image="virtbus-test:latest", command=["sleep", "60"])
    watched.driver.containers["c-alien"] = FakeContainer("c-alien", uuid4(), "alien", spec)
    await watched.monitor.reconcile()
    await asyncio.wait_for(watched.monitor.name_free("gone"), WAIT_S)
    assert list(watched.driver.containers) == ["c-alien"]
    assert watched.events() == []


async def test_a_transition_without_a_docker_event_is_announced(watched: Watched) -> None:
    web = watched.adopt("web")
    web.persistent = False
    watched.monitor.announce(web, Lifecycle.UNDEFINED_REMOVED, "cmd-1")
    assert watched.queued.is_set()
    (event,) = watched.events()
    assert (event.lifecycle, event.origin, event.cause) == (
        Lifecycle.UNDEFINED_REMOVED,
        "agent",
        "cmd-1",
    )


async def test_whoever_waits_for_an_operation_is_woken_in_the_step_that_ends_it() -> None:
    expectation = Expectation("c1", frozenset({Lifecycle.SUSPENDED_PAUSED}))
    woken: list[str] = []
    expectation.on_reach(lambda: woken.append("first"))
    assert woken == []
    expectation.reach()
    assert woken == ["first"] and expectation.reached.is_set()
    expectation.on_reach(lambda: woken.append("late"))
    assert woken == ["first", "late"]
    assert await expectation.wait(0) is True
