"""A state store that cannot write (a full disk), path by path, over a store whose
writes fail on demand: nothing is kept of a failed write, no Docker event is dropped,
no command is answered before its reply is recorded, and everything carries on by
itself once the store can write again."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from agent.errors import VirtError
from agent.host import operations, store
from agent.host.dispatch import Dispatcher, Outcome
from agent.host.outbox import Outbox
from agent.host.store import StoreUnwritable
from schemas.codes import DomainState, ErrorCode, Lifecycle
from schemas.events import EVENT_ADAPTER, DomainRef, LifecycleEvent, RebootEvent
from tests.fakes import FakeDriver, FakeHost, FillableStore, fake_host

WAIT_S = 5.0
SPEC = {"name": "web", "image": "virtbus-test:latest", "command": ["sleep", "60"]}


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "PROBE_S", 0.01)


def events(disk: FillableStore) -> list[LifecycleEvent]:
    decoded = [EVENT_ADAPTER.validate_json(p.body) for p in disk.pending(10_000)]
    return [e for e in decoded if isinstance(e, LifecycleEvent)]


def assert_gap_free(disk: FillableStore) -> None:
    seqs = [p.seq for p in disk.pending(10_000)]
    assert seqs == list(range(1, disk.last_seq() + 1))


def test_a_write_that_fails_keeps_nothing_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failed: list[None] = []
    with FillableStore(tmp_path, lambda: failed.append(None)) as disk:
        ref = DomainRef(name="web", uuid=uuid4(), id=1)
        disk.full = True
        for _ in range(3):
            with pytest.raises(StoreUnwritable), disk.transaction() as tx:
                tx.enqueue(
                    lambda seq: RebootEvent(
                        host="h1", time=datetime.now(UTC), seq=seq, domain=ref, origin="agent"
                    )
                )
        with pytest.raises(StoreUnwritable):
            disk.attempt("cmd-1")
        assert not disk.is_writable and disk.failed.is_set()
        assert len(failed) == 4
        cannot = [r for r in caplog.records if "cannot write" in r.getMessage()]
        assert len(cannot) == 1 and cannot[0].levelno == logging.ERROR
        disk.full = False
        assert disk.last_seq() == 0 and disk.outbox_size() == 0
        assert disk.attempted("cmd-1") is None
        assert disk.attempt("cmd-1") == 1
        assert disk.is_writable and not disk.failed.is_set()


async def test_writable_waits_until_a_write_succeeds(tmp_path: Path) -> None:
    with FillableStore(tmp_path) as disk:
        disk.full = True
        with pytest.raises(StoreUnwritable):
            disk.attempt("cmd-1")
        waiting = asyncio.create_task(disk.writable())
        await asyncio.wait_for(disk.failures(3), WAIT_S)
        assert not waiting.done()
        disk.full = False
        await asyncio.wait_for(waiting, WAIT_S)
        assert disk.is_writable


@dataclass
class Rig:
    host: FakeHost
    disk: FillableStore
    dispatcher: Dispatcher
    counter: int = 0

    @property
    def driver(self) -> FakeDriver:
        return self.host.driver

    def submit(
        self, op: str, target: dict[str, Any] | None = None, args: dict[str, Any] | None = None
    ) -> asyncio.Task[Outcome]:
        self.counter += 1
        document: dict[str, Any] = {"id": f"cmd-{self.counter}", "op": op}
        if target is not None:
            document["target"] = target
        if args is not None:
            document["args"] = args
        pending = self.dispatcher.submit(json.dumps(document).encode(), None)

        async def outcome() -> Outcome:
            return await pending

        return asyncio.ensure_future(outcome())

    async def ok(
        self, op: str, target: dict[str, Any] | None = None, args: dict[str, Any] | None = None
    ) -> Outcome:
        outcome = await asyncio.wait_for(self.submit(op, target, args), WAIT_S)
        assert outcome.reply.ok, outcome.reply
        return outcome

    async def running(self) -> None:
        await self.ok("domain.define", args={"spec": SPEC})
        await self.ok("domain.create", {"name": "web"})


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with FillableStore(tmp_path / "h1") as disk:
        async with fake_host(disk, tmp_path) as host:
            dispatcher = Dispatcher(
                "h1",
                host.operations(),
                host.domains,
                disk,
                concurrency=2,
                recovered=host.monitor.recovered,
            )
            yield Rig(host, disk, dispatcher)


async def test_a_docker_event_the_store_cannot_take_is_read_again_once_it_can(rig: Rig) -> None:
    await rig.running()
    web = rig.host.domains.by_name("web")
    assert web is not None and web.handle is not None
    rig.disk.full = True
    await rig.driver.pause(web.handle)
    await asyncio.wait_for(rig.disk.failures(2), WAIT_S)
    assert web.state is DomainState.RUNNING
    rig.disk.full = False
    await asyncio.wait_for(rig.host.monitor.recovered(), WAIT_S)
    paused = [e for e in events(rig.disk) if e.lifecycle is Lifecycle.SUSPENDED_PAUSED]
    assert [(e.origin, e.cause) for e in paused] == [("reconcile", None)]
    assert web.record().state == DomainState.PAUSED
    assert [d.state for d in rig.disk.domains()] == [DomainState.PAUSED]
    assert_gap_free(rig.disk)


async def test_a_transient_domain_is_not_forgotten_nor_removed_by_a_failed_write(
    rig: Rig,
) -> None:
    await rig.ok("domain.create_xml", args={"spec": SPEC})
    web = rig.host.domains.by_name("web")
    assert web is not None and web.handle is not None
    rig.disk.full = True
    rig.driver.exit(web.handle, 0)
    await asyncio.wait_for(rig.disk.failures(2), WAIT_S)
    assert rig.host.domains.by_name("web") is web and web.active
    assert web.handle in rig.driver.containers
    rig.disk.full = False
    await asyncio.wait_for(rig.host.monitor.recovered(), WAIT_S)
    assert rig.host.domains.by_name("web") is None
    await asyncio.wait_for(rig.host.monitor.name_free("web"), WAIT_S)
    assert web.handle not in rig.driver.containers
    assert [e.lifecycle for e in events(rig.disk)][-1] is Lifecycle.STOPPED_SHUTDOWN
    assert_gap_free(rig.disk)


async def test_a_command_whose_event_cannot_be_written_waits_and_is_answered_once(
    rig: Rig,
) -> None:
    await rig.running()
    rig.driver.gates["pause"] = asyncio.Event()
    suspend = rig.submit("domain.suspend", {"name": "web"})
    await rig.driver.wait_calls("pause", 1)
    rig.disk.full = True
    rig.driver.gates["pause"].set()
    await asyncio.wait_for(rig.disk.failures(4), WAIT_S)
    assert not suspend.done()
    rig.disk.full = False
    outcome = await asyncio.wait_for(suspend, WAIT_S)
    assert outcome.reply.ok, outcome.reply
    assert rig.driver.calls.count("pause") == 1
    paused = [e for e in events(rig.disk) if e.lifecycle is Lifecycle.SUSPENDED_PAUSED]
    assert len(paused) == 1
    recorded = rig.disk.recorded_reply(outcome.reply.id)
    assert recorded is not None and recorded.body == outcome.body
    assert_gap_free(rig.disk)


async def test_a_destroy_whose_events_were_lost_while_the_store_was_full_is_the_destroy(
    rig: Rig,
) -> None:
    """Docker's events of the kill waited for the store, then Docker lost them (the
    engine restarted): the re-list that finds the domain stopped reports the destroy's
    own stop, credited to it, never a crash, and the destroy is answered once."""
    await rig.running()
    rig.driver.gates["kill"] = asyncio.Event()
    destroy = rig.submit("domain.destroy", {"name": "web"})
    await rig.driver.wait_calls("kill", 1)
    rig.disk.full = True
    rig.driver.gates["kill"].set()
    await asyncio.wait_for(rig.disk.failures(2), WAIT_S)
    rig.driver.history.clear()
    rig.disk.full = False
    outcome = await asyncio.wait_for(destroy, operations.EVENT_WAIT_S + WAIT_S)
    assert outcome.reply.ok, outcome.reply
    assert rig.driver.calls.count("kill") == 1
    stops = [e for e in events(rig.disk) if e.lifecycle.name.startswith("STOPPED")]
    assert [(e.lifecycle, e.cause) for e in stops] == [
        (Lifecycle.STOPPED_DESTROYED, outcome.reply.id)
    ]
    assert_gap_free(rig.disk)


async def test_a_reply_that_cannot_be_recorded_waits_and_the_op_does_not_run_again(
    rig: Rig,
) -> None:
    await rig.running()
    rig.driver.gates["usage"] = asyncio.Event()
    info = rig.submit("domain.get_info", {"name": "web"})
    await rig.driver.wait_calls("usage", 1)
    rig.disk.full = True
    rig.driver.gates["usage"].set()
    await asyncio.wait_for(rig.disk.failures(3), WAIT_S)
    assert not info.done()
    rig.disk.full = False
    outcome = await asyncio.wait_for(info, WAIT_S)
    assert outcome.reply.ok
    assert rig.driver.calls.count("usage") == 1
    assert rig.disk.recorded_reply(outcome.reply.id) is not None


async def test_a_command_that_cannot_count_its_delivery_waits_before_running(rig: Rig) -> None:
    rig.disk.full = True
    define = rig.submit("domain.define", args={"spec": SPEC})
    await asyncio.wait_for(rig.disk.failures(3), WAIT_S)
    assert not define.done() and "create" not in rig.driver.calls
    rig.disk.full = False
    outcome = await asyncio.wait_for(define, WAIT_S)
    assert outcome.reply.ok
    assert rig.driver.calls.count("create") == 1
    assert [e.lifecycle for e in events(rig.disk)] == [Lifecycle.DEFINED_ADDED]


async def test_an_announced_change_that_cannot_be_written_is_undone_and_done_again(
    rig: Rig,
) -> None:
    await rig.running()
    web = rig.host.domains.by_name("web")
    assert web is not None
    rig.disk.full, rig.disk.only = True, "INSERT INTO outbox"
    undefine = rig.submit("domain.undefine", {"name": "web"})
    await asyncio.wait_for(rig.disk.failures(1), WAIT_S)
    assert web.persistent
    rig.disk.full = False
    outcome = await asyncio.wait_for(undefine, WAIT_S)
    assert outcome.reply.ok, outcome.reply
    assert not web.persistent and web.active
    removed = [e for e in events(rig.disk) if e.lifecycle is Lifecycle.UNDEFINED_REMOVED]
    assert [e.cause for e in removed] == [outcome.reply.id]
    assert_gap_free(rig.disk)


async def test_a_define_whose_event_cannot_be_written_leaves_no_container(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operations, "EVENT_WAIT_S", 1.0)
    rig.disk.full, rig.disk.only = True, "INSERT INTO outbox"
    define = rig.submit("domain.define", args={"spec": SPEC})
    # the op waits as long as it would for Docker's report, then gives up on it
    await rig.driver.wait_calls("remove", 1, timeout_s=operations.EVENT_WAIT_S + WAIT_S)
    assert rig.driver.containers == {}
    rig.disk.full = False
    outcome = await asyncio.wait_for(define, WAIT_S)
    assert outcome.reply.ok, outcome.reply
    assert len(rig.driver.containers) == 1
    added = [e for e in events(rig.disk) if e.lifecycle is Lifecycle.DEFINED_ADDED]
    assert len(added) == 1
    assert_gap_free(rig.disk)


class Sink:
    def __init__(self) -> None:
        self.published: list[str | None] = []

    async def publish_event(self, routing_key: str, body: bytes, message_id: str | None) -> None:
        self.published.append(message_id)

    async def wait_connected(self) -> None:
        return


async def test_a_confirmation_that_cannot_be_written_waits_and_the_event_stays(
    tmp_path: Path,
) -> None:
    with FillableStore(tmp_path) as disk:
        ref = DomainRef(name="web", uuid=uuid4(), id=1)
        with disk.transaction() as tx:
            tx.enqueue(
                lambda seq: RebootEvent(
                    host="h1", time=datetime.now(UTC), seq=seq, domain=ref, origin="agent"
                )
            )
        sink = Sink()
        outbox = Outbox("h1", disk, sink, limit=10)
        disk.full = True
        outbox.start()
        try:
            await asyncio.wait_for(disk.failures(3), WAIT_S)
            assert disk.outbox_size() == 1
            assert sink.published == ["h1:1"]
            disk.full = False
            await outbox.flushed(WAIT_S)
        finally:
            await outbox.kill()
        assert disk.outbox_size() == 0
        assert set(sink.published) == {"h1:1"}


async def test_an_undefine_whose_relisted_removal_cannot_be_committed_is_not_answered_yet(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker removed the domain's container and its event was lost: the re-read after
    the wait finds it gone. If the disk fills as that removal is being committed, the
    undefine waits: it is not answered (nor counted as done) on an event that was never
    committed, and once the store can write its one undefined/removed is its own."""
    monkeypatch.setattr(operations, "EVENT_WAIT_S", 0.05)
    await rig.ok("domain.define", args={"spec": SPEC})
    web = rig.host.domains.by_name("web")
    assert web is not None and web.handle is not None

    async def remove_unreported(handle: str) -> None:
        if rig.driver.containers.pop(handle, None) is None:
            raise VirtError(ErrorCode.OPERATION_FAILED, f"No such container: {handle}")
        rig.disk.full = True

    monkeypatch.setattr(rig.driver, "remove", remove_unreported)
    undefine = rig.submit("domain.undefine", {"name": "web"})
    await asyncio.wait_for(rig.disk.failures(2), WAIT_S)
    assert not undefine.done()
    assert rig.host.domains.by_name("web") is web and web.persistent
    rig.disk.full = False
    outcome = await asyncio.wait_for(undefine, WAIT_S)
    assert outcome.reply.ok, outcome.reply
    await rig.host.monitor.reconcile()
    removed = [e for e in events(rig.disk) if e.lifecycle is Lifecycle.UNDEFINED_REMOVED]
    assert [(e.origin, e.cause) for e in removed] == [("reconcile", outcome.reply.id)]
    assert rig.host.domains.by_name("web") is None and rig.disk.domains() == []
    assert_gap_free(rig.disk)
