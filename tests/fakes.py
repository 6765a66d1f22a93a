"""A fake Docker behind the ``Driver`` protocol, for unit tests.

It reports the same event sequences the real engine does (recorded in
tests/fixtures/docker_events), so the monitor cannot tell it from Docker.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import agent.host.networks  # noqa: F401 (its handlers, which operations.py does not import)
from agent.errors import VirtError, invalid
from agent.host import (  # noqa: F401  (their handlers, as the agent has them)
    console,
    metadata,
    snapshots,
    storage,
)
from agent.host.credentials import RegistryCredentials
from agent.host.domains import DomainTable
from agent.host.driver import (
    SNAPSHOT_REPOSITORY,
    Credentials,
    Endpoint,
    EngineFacts,
    EngineVolume,
    NetworkFacts,
    Observed,
    PullListener,
    PullProgress,
    RuntimeEvent,
    SnapshotImage,
    Usage,
    _HostConfig,
    _limits,
)
from agent.host.monitor import Monitor
from agent.host.operations import Operations
from agent.host.store import Store
from schemas.codes import ErrorCode
from schemas.domain import DomainSpec
from schemas.network import NetworkSpec


class FakeTerminal:
    """A terminal that echoes what is written to it, as ``cat`` on a tty does."""

    def __init__(self) -> None:
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    async def read(self) -> bytes | None:
        return await self._out.get()

    async def write(self, data: bytes) -> None:
        self._out.put_nowait(data)

    def hang_up(self) -> None:
        self._out.put_nowait(None)

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeContainer:
    handle: str
    uuid: UUID
    name: str
    spec: DomainSpec
    status: str = "created"
    pid: int = 0
    exit_code: int = 0
    host_config: dict[str, int] = field(default_factory=dict)
    """The limits Docker holds, in HostConfig's fields."""
    tunables: dict[str, int] = field(default_factory=dict)
    restart_policy: str = "no"


class FakeDriver:
    def __init__(self, cpus: int = 2) -> None:
        self.cpus = cpus
        self.containers: dict[str, FakeContainer] = {}
        self.images: dict[str, list[str] | None] = {
            "virtbus-test:latest": ["/bin/sh"],
            "virtbus-test:nocmd": None,
        }
        self.pullable: dict[str, list[PullProgress]] = {}
        """Image → the steps its pull reports before the image is there."""
        self.calls: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        """Verb → event: a call of that verb waits until the event is set."""
        self.answers: dict[str, asyncio.Event] = {}
        """Verb → event: a call of that verb, having acted and reported, answers only
        once the event is set (Docker reports an effect before it answers the call)."""
        self.failures: dict[str, Exception] = {}
        """Verb → exception raised (once) by the next call of that verb."""
        self.lost: dict[str, Exception] = {}
        """Verb → exception raised (once) by the next call of that verb after it acted:
        Docker did it, its answer was lost (the engine restarting)."""
        self.called = asyncio.Condition()
        self.history: list[RuntimeEvent] = []
        """Every event reported, for a replay (Docker keeps its recent events)."""
        self.deaf: set[str] = set()
        """Handles of containers whose init ignores SIGTERM."""
        self.written: dict[str, bytes] = {}
        """Handle → what the container wrote (its console output)."""
        self._events: asyncio.Queue[RuntimeEvent | None] = asyncio.Queue()
        self.networks: dict[str, NetworkSpec] = {}
        """Virtbus network name → its spec, for each Docker network of one."""
        self.joined: dict[str, dict[str, str | None]] = {}
        """Handle → network → MAC address: the networks a container is on."""
        self._ids = itertools.count(1)
        self._pids = itertools.count(1000)
        self.volumes_held: dict[str, EngineVolume] = {}
        self.snapshots: dict[str, SnapshotImage] = {}
        """Tag → snapshot image."""

    async def _enter(self, verb: str) -> None:
        self.calls.append(verb)
        async with self.called:
            self.called.notify_all()
        gate = self.gates.get(verb)
        if gate is not None:
            await gate.wait()
        failure = self.failures.pop(verb, None)
        if failure is not None:
            raise failure

    async def _answer(self, verb: str) -> None:
        answer = self.answers.get(verb)
        if answer is not None:
            await answer.wait()
        lost = self.lost.pop(verb, None)
        if lost is not None:
            raise lost

    def _emit(self, container: FakeContainer, action: str, **facts: int | None) -> None:
        event = RuntimeEvent(
            action=action,
            handle=container.handle,
            uuid=container.uuid,
            name=container.name,
            time_ns=time.time_ns(),
            exit_code=facts.get("exit_code"),
            signal=facts.get("signal"),
            pid=container.pid if action in ("start", "restart") else 0,
        )
        self.history.append(event)
        self._events.put_nowait(event)

    def _get(self, handle: str) -> FakeContainer:
        container = self.containers.get(handle)
        if container is None:
            raise VirtError(ErrorCode.OPERATION_FAILED, f"No such container: {handle}")
        return container

    async def wait_calls(self, verb: str, count: int, timeout_s: float = 5.0) -> None:
        async with self.called:
            await asyncio.wait_for(
                self.called.wait_for(lambda: self.calls.count(verb) >= count), timeout_s
            )

    def end_stream(self) -> None:
        self._events.put_nowait(None)

    async def observe_all(self) -> list[Observed]:
        return [self._observed(c) for c in self.containers.values()]

    async def paused(self, handle: str, pid: int) -> bool | None:
        container = self.containers.get(handle)
        return None if container is None else container.status == "paused"

    async def frozen(self, handle: str, pid: int) -> bool | None:
        return await self.paused(handle, pid)

    async def observe(self, handle: str) -> Observed | None:
        container = self.containers.get(handle)
        return self._observed(container) if container else None

    async def named(self, name: str) -> Observed | None:
        found = [c for c in self.containers.values() if c.name == name]
        return self._observed(found[0]) if found else None

    @staticmethod
    def _observed(c: FakeContainer) -> Observed:
        return Observed(
            handle=c.handle,
            uuid=c.uuid,
            name=c.name,
            status=c.status,
            pid=c.pid,
            exit_code=c.exit_code,
            oom_killed=False,
            tunables=dict(c.tunables),
            mounts={m.target: m.source for m in c.spec.mounts},
            restart_policy=c.restart_policy,
        )

    async def create(self, name: str, uuid: UUID, spec: DomainSpec) -> str:
        await self._enter("create")
        for wanted in spec.volumes:
            if wanted.volume not in self.volumes_held:
                raise VirtError(ErrorCode.NO_STORAGE_VOL, f"no volume '{wanted.volume}'")
        if any(c.name == name for c in self.containers.values()):
            raise invalid(f"Conflict. The container name '{name}' is already in use")
        handle = f"c{next(self._ids)}"
        container = FakeContainer(
            handle,
            uuid,
            name,
            spec,
            host_config=_limits(spec),
            tunables=_HostConfig.model_validate(_limits(spec)).tunables(),
        )
        self.containers[handle] = container
        self._emit(container, "create")
        await self._answer("create")
        return handle

    async def remove(self, handle: str) -> None:
        await self._enter("remove")
        container = self._get(handle)
        if container.status in ("running", "paused"):
            self._die(container, signal=9, exit_code=137)
        del self.containers[handle]
        self._emit(container, "destroy")
        await self._answer("remove")

    async def start(self, handle: str) -> None:
        await self._enter("start")
        container = self._get(handle)
        if container.status in ("running", "paused"):
            raise invalid("container is already running")
        container.status, container.pid = "running", next(self._pids)
        self._emit(container, "start")

    def _die(self, container: FakeContainer, signal: int, exit_code: int) -> None:
        self._emit(container, "kill", signal=signal)
        if container.status == "paused" and signal != 9:
            self._emit(container, "unpause")
        container.status, container.pid, container.exit_code = "exited", 0, exit_code
        self._emit(container, "die", exit_code=exit_code)

    async def stop(self, handle: str, timeout_s: int) -> None:
        await self._enter("stop")
        container = self._get(handle)
        if container.status in ("running", "paused"):
            self._die(container, signal=15, exit_code=143)
            self._emit(container, "stop")

    async def kill(self, handle: str) -> None:
        await self._enter("kill")
        container = self._get(handle)
        if container.status not in ("running", "paused"):
            raise invalid(f"Container {handle} is not running")
        self._die(container, signal=9, exit_code=137)

    async def restart(self, handle: str, timeout_s: int = 10) -> None:
        await self._enter("restart")
        container = self._get(handle)
        self._die(container, signal=15, exit_code=143)
        self._emit(container, "stop")
        container.status, container.pid = "running", next(self._pids)
        self._emit(container, "start")
        self._emit(container, "restart")

    async def signal(self, handle: str, signal: str) -> None:
        await self._enter("signal")
        container = self._get(handle)
        if container.status not in ("running", "paused"):
            raise invalid(f"Container {handle} is not running")
        self._emit(container, "kill", signal=15)
        if handle not in self.deaf:
            container.status, container.pid, container.exit_code = "exited", 0, 143
            self._emit(container, "die", exit_code=143)

    async def wait_stopped(self, handle: str) -> None:
        await self._enter("wait_stopped")

    async def output(self, handle: str, max_bytes: int) -> tuple[bytes, bool]:
        await self._enter("output")
        written = self.written.get(handle, b"")
        return written[-max_bytes:], len(written) > max_bytes

    async def attach(self, handle: str) -> FakeTerminal:
        await self._enter("attach")
        self._get(handle)
        return FakeTerminal()

    async def pause(self, handle: str) -> None:
        await self._enter("pause")
        container = self._get(handle)
        if container.status != "running":
            raise VirtError(ErrorCode.OPERATION_INVALID, f"Container {handle} is not running")
        container.status = "paused"
        self._emit(container, "pause")
        await self._answer("pause")

    async def unpause(self, handle: str) -> None:
        await self._enter("unpause")
        container = self._get(handle)
        if container.status != "paused":
            raise VirtError(ErrorCode.OPERATION_INVALID, f"Container {handle} is not paused")
        container.status = "running"
        self._emit(container, "unpause")

    async def rename(self, handle: str, name: str) -> None:
        await self._enter("rename")
        container = self._get(handle)
        container.name = name
        self._emit(container, "rename")

    async def update(self, handle: str, spec: DomainSpec) -> None:
        """As Docker's: a field left 0 keeps its value."""
        await self._enter("update")
        container = self._get(handle)
        container.host_config.update(_limits(spec))
        container.tunables = _HostConfig.model_validate(container.host_config).tunables()
        self._emit(container, "update")

    async def forbid_restarts(self, handle: str) -> None:
        await self._enter("forbid_restarts")
        self._get(handle).restart_policy = "no"
        self._emit(self._get(handle), "update")

    async def usage(self, handle: str) -> Usage:
        await self._enter("usage")
        return Usage(memory_kib=1024, cpu_time_ns=42)

    async def create_network(self, uuid: UUID, spec: NetworkSpec) -> NetworkFacts:
        await self._enter("create_network")
        if spec.name in self.networks:
            raise invalid(f"network with name {spec.name} already exists")
        self.networks[spec.name] = spec
        return NetworkFacts(id=f"n-{spec.name}", bridge=spec.bridge or f"br-{spec.name}")

    async def network_facts(self, name: str) -> NetworkFacts | None:
        spec = self.networks.get(name)
        return None if spec is None else NetworkFacts(f"n-{name}", spec.bridge or f"br-{name}")

    async def remove_network(self, name: str) -> None:
        await self._enter("remove_network")
        if any(name in joined for joined in self.joined.values()):
            raise VirtError(ErrorCode.OPERATION_FAILED, f"network {name} has active endpoints")
        self.networks.pop(name, None)

    async def connect(self, handle: str, network: str, mac: str | None) -> None:
        await self._enter("connect")
        self._get(handle)
        self.joined.setdefault(handle, {})[network] = mac

    async def disconnect(self, handle: str, network: str) -> None:
        await self._enter("disconnect")
        self.joined.get(handle, {}).pop(network, None)

    async def endpoints(self, handle: str) -> list[Endpoint]:
        container = self._get(handle)
        joined = {nic.network: nic.mac for nic in container.spec.nics()[:1]}
        joined.update(self.joined.get(handle, {}))
        return [
            Endpoint(network, mac, f"10.0.0.{index + 2}", 24, None, 0)
            for index, (network, mac) in enumerate(joined.items())
        ]

    async def default_command(
        self, image: str, credentials: Credentials, listener: PullListener | None = None
    ) -> list[str] | None:
        await self._enter("default_command")
        if image in self.pullable:
            for step in self.pullable.pop(image):
                if listener is not None:
                    await listener(step)
            self.images[image] = ["/bin/sh"]
        if image not in self.images:
            raise VirtError(ErrorCode.OPERATION_FAILED, f"cannot pull image '{image}'")
        return self.images[image]

    async def engine(self) -> EngineFacts:
        return EngineFacts(cpus=self.cpus, memory_kib=1 << 20, version="fake")

    async def volumes(self) -> list[EngineVolume]:
        await self._enter("volumes")
        return list(self.volumes_held.values())

    async def create_volume(self, pool: str, name: str, capacity: int) -> EngineVolume:
        await self._enter("create_volume")
        volume = EngineVolume(pool, name, f"/fake/volumes/{name}/_data", capacity)
        self.volumes_held[name] = volume
        return volume

    async def remove_volume(self, name: str) -> None:
        await self._enter("remove_volume")
        self.volumes_held.pop(name, None)

    async def commit(self, handle: str, tag: str, labels: Mapping[str, str]) -> str:
        await self._enter("commit")
        self._get(handle)
        image = SnapshotImage(id=f"sha256:{tag}", tag=tag, labels=dict(labels))
        self.snapshots[tag] = image
        self.images[f"{SNAPSHOT_REPOSITORY}:{tag}"] = ["/bin/sh"]
        return image.id

    async def snapshot_images(self) -> list[SnapshotImage]:
        await self._enter("snapshot_images")
        return list(self.snapshots.values())

    async def remove_snapshot_image(self, tag: str) -> None:
        await self._enter("remove_snapshot_image")
        self.snapshots.pop(tag, None)

    async def prune_snapshot_images(self) -> None:
        await self._enter("prune_snapshot_images")

    async def events(
        self, since_ns: int, until_ns: int | None = None
    ) -> AsyncIterator[RuntimeEvent]:
        if until_ns is not None:
            for past in list(self.history):
                if since_ns <= past.time_ns <= until_ns:
                    yield past
            return
        while (event := await self._events.get()) is not None:
            yield event

    def exit(self, handle: str, exit_code: int) -> None:
        """The domain's main process exits by itself."""
        container = self._get(handle)
        container.status, container.pid, container.exit_code = "exited", 0, exit_code
        self._emit(container, "die", exit_code=exit_code)

    async def close(self) -> None:
        self.end_stream()


class FillableStore(Store):
    """A store whose disk can be made full: while ``full``, a commit and a write outside
    a transaction fail as sqlite fails on a full disk (what the transaction wrote before
    its commit is there until rolled back, as on a real disk)."""

    def __init__(self, directory: Path, on_write_failed: Callable[[], None] = lambda: None) -> None:
        super().__init__(directory, on_write_failed)
        self.full = False
        self.only: str | None = None
        """While set, only statements containing it fail (at once, in a transaction too)."""
        self.failed_writes = 0
        self.failing = asyncio.Event()

    @property
    def db(self) -> sqlite3.Connection:
        db = super().db
        return _FullDisk(db, self) if self.full else db  # type: ignore[return-value]

    async def failures(self, count: int) -> None:
        """Returns once ``count`` writes have failed so far."""
        while self.failed_writes < count:
            self.failing.clear()
            await self.failing.wait()


class _FullDisk:
    def __init__(self, db: sqlite3.Connection, store: FillableStore) -> None:
        self._db = db
        self._store = store

    def execute(self, sql: str, *parameters: Any) -> sqlite3.Cursor:
        verb = sql.split(None, 1)[0].upper()
        if self._store.only is not None:
            fails = self._store.only in sql
        else:
            writes = verb in ("INSERT", "UPDATE", "DELETE") and not self._db.in_transaction
            fails = writes or verb == "COMMIT"
        if fails:
            self._store.failed_writes += 1
            self._store.failing.set()
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise error
        return self._db.execute(sql, *parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@dataclass
class FakeHost:
    """Host ``h1`` over a fake engine: its store, its domains and the monitor following
    the engine's events, ready for operations."""

    driver: FakeDriver
    store: Store
    domains: DomainTable
    monitor: Monitor
    engine: EngineFacts
    state: Path

    def operations(self, **options: Any) -> Operations:
        return Operations(
            "h1",
            [],
            self.domains,
            self.driver,
            self.monitor,
            RegistryCredentials(self.state / "registries.json"),
            self.engine,
            gone=self.store.gone,
            intent_reached=self.store.intent_reached,
            **options,
        )


@asynccontextmanager
async def fake_host(
    store: Store, state: Path, on_queued: Callable[[], None] = lambda: None
) -> AsyncIterator[FakeHost]:
    """A FakeHost on an open store; its monitor runs until the block ends and calls
    ``on_queued`` whenever it queued events."""
    driver, domains = FakeDriver(), DomainTable()
    monitor = Monitor("h1", domains, store, driver, on_queued)
    watching = asyncio.create_task(monitor.run())
    try:
        await asyncio.wait_for(monitor.connected.wait(), 5)
        yield FakeHost(driver, store, domains, monitor, await driver.engine(), state)
    finally:
        watching.cancel()


@dataclass(frozen=True)
class Envelope:
    """A delivery as the bus hands it over."""

    body: bytes
    headers: Mapping[str, object] = field(default_factory=dict)
    exchange: str = "virtbus.commands"
    routing_key: str = "h1"
    message_id: str | None = "c1"
    correlation_id: str | None = "c1"
    redelivered: bool = False
