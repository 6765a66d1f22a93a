"""The store keeps what the agent must know after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from agent.host import store as store_module
from agent.host.domains import DomainObj
from agent.host.outbox import BATCH
from agent.host.store import (
    CHECKPOINT_EVERY,
    OUTBOX_KEPT,
    WAL_LIMIT_BYTES,
    Fingerprint,
    Recorded,
    Store,
)
from agent.host.translate import Evidence
from schemas.codes import Lifecycle
from schemas.domain import DomainSpec
from schemas.events import DomainRef, LifecycleEvent

SPEC = DomainSpec(name="web", image="virtbus-test:latest")


def test_what_docker_reported_before_a_crash_survives_it(tmp_path: Path) -> None:
    domain = DomainObj(uuid=uuid4(), name="web", spec=SPEC, persistent=True, autostart=False)
    domain.evidence.observe("kill", 15)
    with Store(tmp_path) as store, store.transaction() as tx:
        tx.save(domain)
    with Store(tmp_path) as store:
        (restored,) = store.domains()
    assert restored.evidence == Evidence(signals=[15], stopping=True)


def test_a_store_from_before_evidence_was_kept_opens(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute(
            "CREATE TABLE domains (uuid TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "persistent INTEGER NOT NULL, autostart INTEGER NOT NULL, spec TEXT NOT NULL, "
            "pending TEXT, handle TEXT, state INTEGER NOT NULL, reason INTEGER NOT NULL)"
        )
        db.execute(
            "INSERT INTO domains VALUES (?, 'web', 1, 0, ?, NULL, NULL, 5, 0)",
            (str(uuid4()), SPEC.model_dump_json()),
        )
    with Store(tmp_path) as store:
        (restored,) = store.domains()
    assert restored.name == "web" and restored.evidence == Evidence()


def test_a_store_from_before_command_fingerprints_opens_and_keeps_its_replies(
    tmp_path: Path,
) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute(
            "CREATE TABLE replies (id TEXT PRIMARY KEY, body BLOB NOT NULL, "
            "at REAL NOT NULL DEFAULT (julianday('now')))"
        )
        db.execute("CREATE TABLE attempts (id TEXT PRIMARY KEY, count INTEGER NOT NULL)")
        db.execute("INSERT INTO replies (id, body) VALUES ('old', x'7b7d')")
        db.execute("INSERT INTO attempts VALUES ('half', 1)")
    ping = Fingerprint("host.ping", "", "d1")
    with Store(tmp_path) as store:
        assert store.recorded_reply("old") == Recorded(b"{}", None)
        assert store.attempted("half") is None
        assert store.attempt("half", ping) == 2
        store.record_reply("new", b"{}", ping)
    with Store(tmp_path) as store:
        assert store.recorded_reply("new") == Recorded(b"{}", ping)


def test_a_fingerprint_names_what_differs() -> None:
    ping = Fingerprint("host.ping", "", "a")
    assert ping.conflict(ping) is None
    assert ping.conflict(Fingerprint("host.get_info", "", "b")) == "op host.ping, not host.get_info"
    web = Fingerprint("domain.destroy", "name 'web'", "c")
    assert web.conflict(Fingerprint("domain.destroy", "name 'db'", "d")) == (
        "target name 'web', not name 'db'"
    )
    assert web.conflict(Fingerprint("domain.destroy", "name 'web'", "e")) == (
        "other arguments to domain.destroy"
    )


def _event(seq: int) -> LifecycleEvent:
    started = Lifecycle.STARTED_BOOTED
    return LifecycleEvent(
        seq=seq,
        host="h",
        time=datetime.now(UTC),
        domain=DomainRef(name="web", uuid=uuid4(), id=7),
        origin="agent",
        event=started.event,
        event_code=started.event_code,
        detail=started.detail,
        detail_code=started.detail_code,
    )


def test_the_last_seq_moves_with_committed_events_only(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert store.last_seq() == 0
        with store.transaction() as tx:
            tx.enqueue(_event)
            tx.enqueue(_event)
        assert store.last_seq() == 2
        try:
            with store.transaction() as tx:
                tx.enqueue(_event)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        assert store.last_seq() == 2
        assert [item.seq for item in store.pending(10)] == [1, 2]
    with Store(tmp_path) as store:
        assert store.last_seq() == 2
        assert [item.seq for item in store.pending(10)] == [1, 2]


@pytest.mark.parametrize("confirmed", [0, 2, 3])
def test_the_seq_goes_on_after_a_restart_whatever_the_broker_confirmed(
    tmp_path: Path, confirmed: int
) -> None:
    with Store(tmp_path) as store:
        with store.transaction() as tx:
            for _ in range(3):
                tx.enqueue(_event)
        if confirmed:
            store.confirmed(confirmed)
    with Store(tmp_path) as store:
        assert store.last_seq() == 3
        assert store.outbox_size() == 3 - confirmed
        with store.transaction() as tx:
            assert tx.enqueue(_event).seq == 4
    with Store(tmp_path) as store:
        assert [item.seq for item in store.pending(10)] == list(range(confirmed + 1, 5))


def test_a_store_that_counted_seq_in_its_counters_goes_on_from_there(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("INSERT INTO counters VALUES ('seq', 41)")
    with Store(tmp_path) as store:
        assert store.last_seq() == 41
        with store.transaction() as tx:
            assert tx.enqueue(_event).seq == 42


def test_the_outbox_read_from_memory_is_the_stored_one(tmp_path: Path) -> None:
    with Store(tmp_path) as store:

        def stored() -> list[tuple[int, str, bytes]]:
            rows = store.db.execute("SELECT seq, routing_key, body FROM outbox ORDER BY seq")
            return [(seq, key, bytes(body)) for seq, key, body in rows]

        def pending() -> list[tuple[int, str, bytes]]:
            return [(p.seq, p.routing_key, p.body) for p in store.pending(BATCH)]

        assert pending() == stored() == []
        with store.transaction() as tx:
            tx.enqueue(_event)
            tx.enqueue(_event)
        assert pending() == stored() and len(stored()) == 2
        with contextlib.suppress(RuntimeError), store.transaction() as tx:
            tx.enqueue(_event)
            raise RuntimeError("rolled back")
        assert pending() == stored() and store.outbox_size() == 2
        store.confirmed(1)
        assert pending() == stored() and [seq for seq, _, _ in stored()] == [2]
        with store.transaction() as tx:
            for _ in range(OUTBOX_KEPT + 5):
                tx.enqueue(_event)
        assert store.outbox_size() == OUTBOX_KEPT + 6
        assert pending() == stored()[:BATCH]
        store.confirmed(OUTBOX_KEPT + 4)
        assert pending() == stored() and store.outbox_size() == 3


def test_a_changed_definition_is_saved_as_it_now_is(tmp_path: Path) -> None:
    domain = DomainObj(uuid=uuid4(), name="web", spec=SPEC, persistent=True, autostart=False)
    with Store(tmp_path) as store:
        with store.transaction() as tx:
            tx.save(domain)
        domain.spec = SPEC.model_copy(update={"memory_kib": 65536})
        with store.transaction() as tx:
            tx.save(domain)
        (restored,) = store.domains()
    assert restored.spec.memory_kib == 65536


def test_a_domain_saved_again_is_one_row_as_it_now_is(tmp_path: Path) -> None:
    domain = DomainObj(uuid=uuid4(), name="web", spec=SPEC, persistent=True, autostart=False)
    with Store(tmp_path) as store:
        with store.transaction() as tx:
            tx.save(domain)
        domain.name, domain.autostart, domain.handle = "www", True, "c0ffee"
        domain.pending = SPEC.model_copy(update={"name": "www", "memory_kib": 65536})
        domain.evidence.observe("kill", 9)
        with store.transaction() as tx:
            tx.save(domain)
        (restored,) = store.domains()
    assert (restored.name, restored.autostart, restored.handle) == ("www", True, "c0ffee")
    assert restored.pending is not None and restored.pending.memory_kib == 65536
    assert restored.evidence == Evidence(signals=[9], stopping=True)


def write_counters(store: Store, writes: int) -> None:
    for n in range(writes):
        with store.transaction() as tx:
            tx.set_counter("n", n)


def wal_bytes(directory: Path) -> int:
    return (directory / "state.db-wal").stat().st_size


async def test_the_log_is_checkpointed_in_another_thread_and_cut_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    checkpoint = store_module._checkpoint

    def recorded(path: Path) -> bool:
        threads.append(threading.get_ident())
        return checkpoint(path)

    monkeypatch.setattr(store_module, "_checkpoint", recorded)
    with Store(tmp_path) as store:
        write_counters(store, 5 * CHECKPOINT_EVERY)
        await store.checkpointed()
        write_counters(store, 1)
        assert threads and threading.get_ident() not in threads
        assert wal_bytes(tmp_path) <= WAL_LIMIT_BYTES


def test_a_store_that_outlives_its_event_loop_still_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Path] = []
    checkpoint = store_module._checkpoint

    def recorded(path: Path) -> bool:
        started.append(path)
        return checkpoint(path)

    monkeypatch.setattr(store_module, "_checkpoint", recorded)

    async def burst(store: Store) -> None:
        write_counters(store, CHECKPOINT_EVERY)

    with Store(tmp_path) as store:
        asyncio.run(burst(store))
        asyncio.run(burst(store))
        store_module._CHECKPOINTS.submit(lambda: None).result(timeout=10)
    assert len(started) == 2
