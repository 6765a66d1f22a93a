"""The agent's durable state: domains, event ``seq``, the event outbox and recorded replies.

One sqlite file per host. Writes are small and local, so they run on the event loop;
a domain change and the events it causes are committed in one transaction, so after a
crash the store never holds a state whose event was lost, nor an event whose state was.

A write the state directory cannot take (a full disk, an I/O error, a read-only
remount) raises ``StoreUnwritable`` and keeps nothing of its transaction. The store then
counts as unwritable until a write succeeds; ``writable()`` waits for that, probing. The
condition is logged when it starts, at most once per ``LOG_EVERY_S`` while it lasts, and
when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar
from uuid import UUID

from agent.host.domains import DomainObj
from agent.host.translate import Evidence
from schemas.codes import DomainState, ErrorCode
from schemas.domain import DomainRecord, DomainSpec
from schemas.errors import VirtbusError
from schemas.events import EventBase
from schemas.network import NetworkSpec

E = TypeVar("E", bound=EventBase)

log = logging.getLogger(__name__)

PROBE_S = 1.0
"""How often ``writable()`` tries a write while the store cannot write."""
LOG_EVERY_S = 30.0
WAL_LIMIT_BYTES = 1024 * 1024
CHECKPOINT_EVERY = 64
"""Writes between two checkpoints of the write-ahead log, well before sqlite's own
(at 1,000 pages, in the writing connection), which stays as the backstop."""
CHECKPOINT_AGAIN = 1
"""Checkpoints that may follow one at once, taking what was written while it ran (the
log starts over only once all of it is in the database)."""
_CHECKPOINTS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-checkpoint")
"""Every store's checkpoints, one at a time: they wait for the disk, and must not hold
the threads the event loop's other blocking calls run in."""

_UNWRITABLE = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY})


class StoreUnwritable(VirtbusError):
    """The state directory cannot take a write now; nothing of the write was kept. Not
    a VirtError: it never becomes a reply, the command waits instead."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.OPERATION_FAILED, f"cannot write the state store: {detail}")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    persistent INTEGER NOT NULL,
    autostart INTEGER NOT NULL,
    spec TEXT NOT NULL,
    pending TEXT,
    handle TEXT,
    state INTEGER NOT NULL,
    reason INTEGER NOT NULL,
    evidence TEXT,
    applied_ns INTEGER
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    routing_key TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS outbox_confirmed AFTER DELETE ON outbox BEGIN
    INSERT INTO counters VALUES ('seq', OLD.seq)
    ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value);
END;
CREATE TABLE IF NOT EXISTS replies (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    at REAL NOT NULL DEFAULT (julianday('now')),
    op TEXT,
    target TEXT,
    digest TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    id TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    op TEXT,
    target TEXT,
    digest TEXT
);
CREATE TABLE IF NOT EXISTS intents (
    command_id TEXT PRIMARY KEY,
    uuid TEXT NOT NULL,
    mode TEXT NOT NULL,
    until TEXT NOT NULL,
    reached INTEGER NOT NULL DEFAULT 0,
    at REAL NOT NULL DEFAULT (julianday('now'))
);
CREATE TABLE IF NOT EXISTS gone (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    record TEXT NOT NULL,
    at REAL NOT NULL DEFAULT (julianday('now'))
);
CREATE TABLE IF NOT EXISTS made (
    uuid TEXT PRIMARY KEY,
    at REAL NOT NULL DEFAULT (julianday('now'))
);
CREATE TABLE IF NOT EXISTS networks (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    active INTEGER NOT NULL,
    autostart INTEGER NOT NULL,
    persistent INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS signatures (signature BLOB PRIMARY KEY, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS signatures_until ON signatures (until);
"""

REPLIES_KEPT = 100_000

_ADDED_COLUMNS = {
    "domains": ("evidence", "applied_ns"),
    "replies": ("op", "target", "digest"),
    "attempts": ("op", "target", "digest"),
}
"""Columns added since the first release: a state directory from before gets them, empty."""


@dataclass(frozen=True)
class Fingerprint:
    """What a command id was used for: its op, its target as given, and a digest of
    everything the command asks for (op, target, arguments; not its id or deadline)."""

    op: str
    target: str
    digest: str

    def conflict(self, other: Fingerprint) -> str | None:
        """How ``other`` differs from this command, or None if it is the same."""
        if other.digest == self.digest:
            return None
        if other.op != self.op:
            return f"op {self.op}, not {other.op}"
        if other.target != self.target:
            return f"target {self.target or 'none'}, not {other.target or 'none'}"
        return f"other arguments to {self.op}"


@dataclass(frozen=True)
class Recorded:
    """A reply recorded for a command id, and what the command was (None for a reply
    an older agent recorded)."""

    body: bytes
    fingerprint: Fingerprint | None


@dataclass(frozen=True)
class Pending:
    """An event written to the outbox and not yet confirmed by the broker."""

    seq: int
    routing_key: str
    body: bytes


@dataclass(frozen=True)
class Intent:
    """An operation that was acting through Docker; ``reached`` once its effect was seen."""

    command_id: str
    uuid: UUID
    mode: str
    until: list[str]
    reached: bool


@dataclass
class StoredNetwork:
    """A virtbus network as the store keeps it: its definition and whether it is started."""

    uuid: UUID
    spec: NetworkSpec
    active: bool = False
    autostart: bool = False
    persistent: bool = True
    bridge: str | None = None
    """The Linux bridge while active (not stored: Docker is asked at start-up)."""


class Transaction:
    def __init__(self, db: sqlite3.Connection, last_seq: int) -> None:
        self._db = db
        self._seq = last_seq
        self.rows: list[Pending] = []
        """The outbox rows this transaction wrote."""
        self.last_seq: int | None = None
        """The ``seq`` of the last event this transaction queued."""
        self._committed: list[Callable[[], object]] = []

    @property
    def queued(self) -> int:
        """How many events this transaction queued."""
        return len(self.rows)

    def after(self, action: Callable[[], object]) -> None:
        """Do ``action`` once the transaction is committed; never if it is not."""
        self._committed.append(action)

    def save(self, domain: DomainObj) -> None:
        # updated in place: a replace deletes and inserts the row, twice the writing, at
        # every state change
        self._db.execute(
            "INSERT INTO domains VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(uuid) DO "
            "UPDATE SET name = excluded.name, persistent = excluded.persistent, "
            "autostart = excluded.autostart, spec = excluded.spec, pending = excluded.pending, "
            "handle = excluded.handle, state = excluded.state, reason = excluded.reason, "
            "evidence = excluded.evidence, applied_ns = excluded.applied_ns",
            (
                str(domain.uuid),
                domain.name,
                domain.persistent,
                domain.autostart,
                _spec_json(domain.spec),
                _spec_json(domain.pending) if domain.pending else None,
                domain.handle,
                int(domain.state),
                int(domain.reason),
                json.dumps(vars(domain.evidence)),
                domain.applied_ns,
            ),
        )

    def forget(self, domain: DomainObj) -> None:
        """Drop a domain, keeping its last record for a command that is retried after the
        domain went away (``Store.gone``)."""
        self._db.execute("DELETE FROM domains WHERE uuid = ?", (str(domain.uuid),))
        self._db.execute(
            "INSERT OR REPLACE INTO gone (uuid, name, record) VALUES (?, ?, ?)",
            (str(domain.uuid), domain.name, domain.record().model_dump_json()),
        )

    def intend(self, command_id: str, uuid: UUID, mode: str, until: list[str]) -> None:
        """Note an operation about to act through Docker, so that its effect can be told
        after a crash: replayed events are read in its mode, and a retry knows."""
        self._db.execute(
            "INSERT OR REPLACE INTO intents (command_id, uuid, mode, until) VALUES (?, ?, ?, ?)",
            (command_id, str(uuid), mode, ",".join(until)),
        )
        # outlives the intent: Docker may have acted for a command that then failed
        self._db.execute("INSERT OR REPLACE INTO made (uuid) VALUES (?)", (str(uuid),))

    def reached(self, command_id: str) -> None:
        self._db.execute("UPDATE intents SET reached = 1 WHERE command_id = ?", (command_id,))

    def set_counter(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = ?",
            (name, value, value),
        )

    def save_network(self, network: StoredNetwork) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO networks VALUES (?, ?, ?, ?, ?, ?)",
            (
                str(network.uuid),
                network.spec.name,
                network.spec.model_dump_json(),
                network.active,
                network.autostart,
                network.persistent,
            ),
        )

    def forget_network(self, uuid: UUID) -> None:
        self._db.execute("DELETE FROM networks WHERE uuid = ?", (str(uuid),))

    def enqueue(self, build: Callable[[int], E]) -> E:
        """Give the event the host's next ``seq`` and queue it for publishing."""
        self._seq += 1
        self.last_seq = seq = self._seq
        event = build(seq)
        routing_key: str = getattr(event, "routing_key")  # noqa: B009
        row = Pending(seq, routing_key, event.model_dump_json().encode())
        self._db.execute(
            "INSERT INTO outbox VALUES (?, ?, ?)", (row.seq, row.routing_key, row.body)
        )
        self.rows.append(row)
        return event


OUTBOX_KEPT = 1024
"""Outbox rows kept in memory beside the store; beyond it (the broker away for long)
they are read from the store until it drains."""


class Store:
    """The state directory of one host; an open sqlite connection while in use."""

    def __init__(self, directory: Path, on_write_failed: Callable[[], None] = lambda: None) -> None:
        self.path = directory / "state.db"
        self._db: sqlite3.Connection | None = None
        self._last_seq: int | None = None
        """The ``seq`` counter as last committed, read once per open."""
        self._outbox: list[Pending] | None = None
        """The whole outbox, in ``seq`` order, once read and while at most OUTBOX_KEPT
        rows: what each commit queues is published without reading it back."""
        self._on_write_failed = on_write_failed
        self._unwritable_since: float | None = None
        self._failures = 0
        self._logged_at = 0.0
        self._probing = asyncio.Lock()
        self._writes_since_checkpoint = 0
        self._checkpointing: asyncio.Future[bool] | None = None
        self.failed = asyncio.Event()
        """Set when a write fails, cleared when one succeeds again."""

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        # the log is cut back after each checkpoint: on a small state disk it never
        # keeps the space a burst of writes took
        self._db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        self._db.executescript(_SCHEMA)
        for table, added in _ADDED_COLUMNS.items():
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column in added:
                if column not in columns:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")

    def close(self) -> None:
        self._last_seq = None
        self._outbox = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    @property
    def is_writable(self) -> bool:
        """False from a failed write until a write succeeds again."""
        return self._unwritable_since is None

    async def writable(self) -> None:
        """Returns once the store can write: at once unless its last write failed, else
        once a probe write (one every ``PROBE_S``, the first after ``PROBE_S``) succeeds.
        Each probe first moves the write-ahead log into the database and truncates it:
        on a small disk the log itself may be what fills it."""
        while not self.is_writable:
            async with self._probing:
                if self.is_writable:
                    return
                await asyncio.sleep(PROBE_S)
                with contextlib.suppress(sqlite3.OperationalError):
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                with contextlib.suppress(StoreUnwritable), self.transaction() as tx:
                    tx.set_counter("probe", time.time_ns())

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write: a failure of the state directory becomes ``StoreUnwritable``."""
        try:
            yield
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF not in _UNWRITABLE:
                raise
            self._failed(error)
            raise StoreUnwritable(str(error)) from error
        if self._unwritable_since is not None:
            if self._logged_at >= self._unwritable_since:
                log.warning(
                    "the state store can write again after %.1f s (%d failed writes)",
                    time.monotonic() - self._unwritable_since,
                    self._failures,
                )
            self._unwritable_since = None
            self.failed.clear()
        self._written()

    def _written(self) -> None:
        """Every ``CHECKPOINT_EVERY`` writes, move the write-ahead log into the database
        from a thread of its own, on a connection of its own: a checkpoint syncs the
        disk, and on the event loop every command and event would wait for it. Without
        a running event loop, here and now."""
        self._writes_since_checkpoint += 1
        if self._writes_since_checkpoint >= CHECKPOINT_EVERY:
            self._checkpoint_soon(CHECKPOINT_AGAIN)

    def _checkpoint_soon(self, again: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self._running_checkpoint(loop) is not None:
            return
        self._writes_since_checkpoint = 0
        if loop is None:
            _checkpoint(self.path)
            return
        try:
            checkpointing = loop.run_in_executor(_CHECKPOINTS, _checkpoint, self.path)
        except RuntimeError:
            return  # the interpreter is shutting down: sqlite's own checkpoint remains
        checkpointing.add_done_callback(lambda done: self._checkpointed(done, again))
        self._checkpointing = checkpointing

    def _running_checkpoint(
        self, loop: asyncio.AbstractEventLoop | None
    ) -> asyncio.Future[bool] | None:
        """The checkpoint of this loop under way, if any (one of a loop that has ended
        never ends for this one)."""
        running = self._checkpointing
        if running is None or running.done() or running.get_loop() is not loop:
            return None
        return running

    def _checkpointed(self, done: asyncio.Future[bool], again: int) -> None:
        moved = not done.cancelled() and done.exception() is None and done.result()
        # what was written while it ran is still in the log only
        if (not moved or self._writes_since_checkpoint > 0) and again > 0 and self.is_open:
            self._checkpoint_soon(again - 1)

    async def checkpointed(self) -> None:
        """Returns once no checkpoint is under way."""
        while (running := self._running_checkpoint(asyncio.get_running_loop())) is not None:
            await asyncio.shield(running)

    def _failed(self, error: sqlite3.OperationalError) -> None:
        """Logged at most once per LOG_EVERY_S, however often it fails and recovers."""
        self._on_write_failed()
        now = time.monotonic()
        if self._unwritable_since is None:
            self._unwritable_since, self._failures = now, 0
            self.failed.set()
        self._failures += 1
        if self._logged_at == 0.0 or now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.error(
                "the state store %s cannot write (%s) for %.0f s, %d failed writes: commands "
                "wait, Docker's events are read again once it can",
                self.path,
                error,
                now - self._unwritable_since,
                self._failures,
            )

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """All or nothing: a failed statement or commit leaves the store as it was, and
        the ``after`` actions run only once committed."""
        with self._writing():
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            tx = Transaction(db, self.last_seq())
            try:
                yield tx
                db.execute("COMMIT")
            except BaseException:
                # sqlite may have rolled back by itself (a full disk does)
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        if tx.last_seq is not None:
            self._last_seq = tx.last_seq
        if self._outbox is not None and tx.rows:
            self._outbox.extend(tx.rows)
            if len(self._outbox) > OUTBOX_KEPT:
                self._outbox = None
        for action in tx._committed:
            action()

    def domains(self) -> list[DomainObj]:
        cursor = self.db.execute("SELECT * FROM domains")
        cursor.row_factory = sqlite3.Row
        return [
            DomainObj(
                uuid=UUID(row["uuid"]),
                name=row["name"],
                persistent=bool(row["persistent"]),
                autostart=bool(row["autostart"]),
                spec=DomainSpec.model_validate_json(row["spec"]),
                pending=DomainSpec.model_validate_json(row["pending"]) if row["pending"] else None,
                handle=row["handle"],
                state=DomainState(row["state"]),
                reason=row["reason"],
                evidence=Evidence(**json.loads(row["evidence"])) if row["evidence"] else Evidence(),
                applied_ns=int(row["applied_ns"] or 0),
            )
            for row in cursor
        ]

    def networks(self) -> list[StoredNetwork]:
        cursor = self.db.execute("SELECT uuid, spec, active, autostart, persistent FROM networks")
        return [
            StoredNetwork(
                UUID(uuid), NetworkSpec.model_validate_json(spec), bool(on), bool(auto), bool(kept)
            )
            for uuid, spec, on, auto, kept in cursor
        ]

    def counter(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def last_seq(self) -> int:
        """The ``seq`` of the last event committed (kept in memory: asked before every
        command, and only this store's transactions move it). Stored as the highest
        ``seq`` in the outbox, else in the counter its deletions raise: queueing an event
        writes no counter, one statement less on every event's path."""
        if self._last_seq is None:
            (queued,) = self.db.execute("SELECT max(seq) FROM outbox").fetchone()
            self._last_seq = max(self.counter("seq"), queued or 0)
        return self._last_seq

    def intents(self) -> list[Intent]:
        rows = self.db.execute(
            "SELECT command_id, uuid, mode, until, reached FROM intents ORDER BY at"
        ).fetchall()
        return [
            Intent(command_id, UUID(uuid), mode, until.split(","), bool(reached))
            for command_id, uuid, mode, until, reached in rows
        ]

    def intended(self, command_id: str) -> bool:
        """Whether the command got as far as acting through Docker (an intent noted)."""
        row = self.db.execute(
            "SELECT 1 FROM intents WHERE command_id = ?", (command_id,)
        ).fetchone()
        return row is not None

    def intent_reached(self, command_id: str) -> bool:
        row = self.db.execute(
            "SELECT reached FROM intents WHERE command_id = ?", (command_id,)
        ).fetchone()
        return bool(row and row[0])

    def attempt(
        self, command_id: str, fingerprint: Fingerprint | None = None, uncounted: int = 0
    ) -> int:
        """Count one more delivery of a command; returns how many there have been.
        ``uncounted``: deliveries before this one that were not counted, if none was."""
        op, target, digest = _columns(fingerprint)
        with self._writing():
            (count,) = self.db.execute(
                "INSERT INTO attempts VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET count = count + 1 RETURNING count",
                (command_id, 1 + uncounted, op, target, digest),
            ).fetchone()
        return int(count)

    def attempted(self, command_id: str) -> Fingerprint | None:
        """What a command id delivered before, and not answered yet, was used for."""
        row = self.db.execute(
            "SELECT op, target, digest FROM attempts WHERE id = ?", (command_id,)
        ).fetchone()
        return _fingerprint(row) if row else None

    def gone(self, name: str | None, uuid: UUID | None) -> DomainRecord | None:
        """The last record of a domain that no longer exists."""
        row = self.db.execute(
            "SELECT record FROM gone WHERE name = ? OR uuid = ? ORDER BY at DESC LIMIT 1",
            (name, str(uuid) if uuid else None),
        ).fetchone()
        return DomainRecord.model_validate_json(row[0]) if row else None

    def made(self, uuid: UUID) -> bool:
        """Whether this agent acted through Docker for a domain with this uuid (an
        operation's intent, kept after the command ended whatever its outcome, or the
        domain's last record once it went away)."""
        row = self.db.execute(
            "SELECT 1 FROM made WHERE uuid = ? UNION ALL SELECT 1 FROM gone WHERE uuid = ? "
            "UNION ALL SELECT 1 FROM intents WHERE uuid = ?",
            (str(uuid), str(uuid), str(uuid)),
        ).fetchone()
        return row is not None

    def pending(self, limit: int) -> list[Pending]:
        """The first ``limit`` events of the outbox, in ``seq`` order."""
        if self._outbox is not None:
            return self._outbox[:limit]
        rows = self.db.execute(
            "SELECT seq, routing_key, body FROM outbox ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        pending = [Pending(seq, key, bytes(body)) for seq, key, body in rows]
        if len(pending) < min(limit, OUTBOX_KEPT):
            self._outbox = list(pending)
        return pending

    def confirmed(self, up_to_seq: int) -> None:
        with self._writing():
            self.db.execute("DELETE FROM outbox WHERE seq <= ?", (up_to_seq,))
        if self._outbox is not None:
            self._outbox = [row for row in self._outbox if row.seq > up_to_seq]

    def outbox_size(self) -> int:
        if self._outbox is not None:
            return len(self._outbox)
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def recorded_reply(self, command_id: str) -> Recorded | None:
        row = self.db.execute(
            "SELECT body, op, target, digest FROM replies WHERE id = ?", (command_id,)
        ).fetchone()
        return Recorded(bytes(row[0]), _fingerprint(row[1:])) if row else None

    def record_reply(
        self, command_id: str, body: bytes, fingerprint: Fingerprint | None = None
    ) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO replies (id, body, op, target, digest) "
                "VALUES (?, ?, ?, ?, ?)",
                (command_id, body, *_columns(fingerprint)),
            )
            self.db.execute("DELETE FROM attempts WHERE id = ?", (command_id,))
            self.db.execute("DELETE FROM intents WHERE command_id = ?", (command_id,))

    def signature_seen(self, signature: bytes, until: float, now: float) -> bool:
        """Note an accepted command signature until ``until`` (Unix time); True if it was
        noted already and has not run out. Run-out signatures are dropped here, so the
        table holds only those still inside the signing window."""
        with self.transaction():
            self.db.execute("DELETE FROM signatures WHERE until < ?", (now,))
            inserted = self.db.execute(
                "INSERT OR IGNORE INTO signatures VALUES (?, ?)", (signature, until)
            ).rowcount
        return inserted == 0

    def prune(self, keep: int = REPLIES_KEPT) -> None:
        """Keep the newest ``keep`` recorded replies, records of gone domains and uuids
        the agent acted for."""
        with self.transaction():
            self.db.execute("DELETE FROM intents WHERE at < julianday('now') - 1")
            for table, key in (("replies", "id"), ("gone", "uuid"), ("made", "uuid")):
                self.db.execute(
                    f"DELETE FROM {table} WHERE {key} NOT IN "
                    f"(SELECT {key} FROM {table} ORDER BY at DESC LIMIT ?)",
                    (keep,),
                )


_SPEC_JSON: dict[int, tuple[DomainSpec, str]] = {}
_SPEC_JSON_KEPT = 4096


def _spec_json(spec: DomainSpec) -> str:
    """A definition's JSON, serialised once per definition: a domain is saved at every
    state change and its (frozen) definition rarely changes. Keyed by identity, holding
    the definition so that the key stays its own."""
    cached = _SPEC_JSON.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    if len(_SPEC_JSON) >= _SPEC_JSON_KEPT:
        _SPEC_JSON.clear()
    text = spec.model_dump_json()
    _SPEC_JSON[id(spec)] = (spec, text)
    return text


def _checkpoint(path: Path) -> bool:
    """A passive checkpoint (writes go on meanwhile); True if it moved the whole log as
    it was when it began into the database. A store whose file has gone is left alone."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
        ) as db:
            busy, logged, moved = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error as error:
        # the next checkpoint takes what this one left; a full disk is the probe's
        log.debug("checkpoint of %s left for later: %s", path, error)
        return False
    return bool(busy == 0 and logged == moved)


def _columns(fingerprint: Fingerprint | None) -> tuple[str | None, str | None, str | None]:
    if fingerprint is None:
        return None, None, None
    return fingerprint.op, fingerprint.target, fingerprint.digest


def _fingerprint(row: tuple[str | None, ...]) -> Fingerprint | None:
    op, target, digest = row
    if op is None or target is None or digest is None:
        return None
    return Fingerprint(op, target, digest)
