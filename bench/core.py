"""What every benchmark shares: the run's context, statistics, results and the cleanup.

Every figure a benchmark reports is set against a baseline measured in the same run, so
the table holds on a noisy machine. Every resource a run creates is named after the run
(hosts ``bench-<run>-…``) and is removed at the end, also when the run fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiodocker

from agent.host.driver import HOST_LABEL
from schemas.topology import host_queue

PIDFILE_DIR = Path("/tmp/virtbus-bench")
"""``<run>.pid`` for each live run: a later run sweeps only what dead runs left behind."""

HOST_PREFIX = "bench-"
IMAGE = "virtbus-test:latest"


class BenchError(Exception):
    """A benchmark could not measure what it set out to (not a missed goal)."""


def domain_spec(name: str, **fields: Any) -> dict[str, Any]:
    """A domain that sleeps and exits at once on SIGTERM (Docker's init forwards it)."""
    return {"name": name, "image": IMAGE, "command": ["sleep", "3600"], **fields}


# ------------------------------------------------------------------ statistics --


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the closest ranks (as numpy)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Dist:
    """A latency distribution in milliseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Dist:
        ms = [s * 1000 for s in seconds]
        if not ms:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            n=len(ms),
            p50=percentile(ms, 50),
            p90=percentile(ms, 90),
            p99=percentile(ms, 99),
            mean=sum(ms) / len(ms),
            max=max(ms),
        )

    def brief(self) -> str:
        return f"p50 {fmt(self.p50)} ms · p99 {fmt(self.p99)} ms (n={self.n})"


def fmt(value: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, without exponent for usual ranges."""
    if value is None or math.isnan(value):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


# --------------------------------------------------------------------- results --


@dataclass
class Goal:
    """One goal line: what was measured, against what, and whether it was met."""

    bench: str
    what: str
    measured: float
    unit: str
    goal: str
    met: bool
    detail: str = ""


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class BenchResult:
    id: str
    title: str
    metrics: dict[str, Any] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0

    def goal(
        self,
        what: str,
        measured: float,
        unit: str,
        goal: str,
        met: bool,
        detail: str = "",
    ) -> None:
        self.goals.append(Goal(self.id, what, measured, unit, goal, met, detail))

    def table(self, title: str, headers: list[str], rows: Iterable[Iterable[str]]) -> None:
        self.tables.append(Table(title, headers, [list(row) for row in rows]))

    @property
    def missed(self) -> bool:
        return any(not goal.met for goal in self.goals)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------- context --


@dataclass
class Scale:
    """How big each benchmark is: ``full`` for the record, ``quick`` for a smoke run."""

    echo_latency_calls: int
    throughput_s: float
    b1_cycles: int
    b3_pause_cycles: int
    b3_start_cycles: int
    b4_domains: int
    b4_rounds: int
    b5_agents: int
    b5_workers: int
    b5_rounds: int
    b6_domains: int
    b6_running: int
    b6_list_calls: int
    b6_restarts: int
    b7_cycles: int
    b8_hosts: int
    b8_workers: int
    b8_rounds: int
    b8_events_per_host: int
    b9_domains: int
    b9_calls: int
    broker_memory: bool
    """Sample the broker's memory (a few seconds of ``rabbitmq-diagnostics`` each)."""
    b7_warmup: bool

    @classmethod
    def full(cls) -> Scale:
        return cls(
            echo_latency_calls=500,
            throughput_s=5.0,
            b1_cycles=30,
            b3_pause_cycles=100,
            b3_start_cycles=15,
            b4_domains=100,
            b4_rounds=2,
            b5_agents=50,
            b5_workers=2,
            b5_rounds=30,
            b6_domains=1000,
            b6_running=200,
            b6_list_calls=40,
            b6_restarts=2,
            b7_cycles=5,
            b8_hosts=1000,
            b8_workers=4,
            b8_rounds=20,
            b8_events_per_host=10,
            b9_domains=50,
            b9_calls=20,
            broker_memory=True,
            b7_warmup=True,
        )

    @classmethod
    def quick(cls) -> Scale:
        return cls(
            echo_latency_calls=150,
            throughput_s=1.5,
            b1_cycles=3,
            b3_pause_cycles=15,
            b3_start_cycles=3,
            b4_domains=20,
            b4_rounds=1,
            b5_agents=50,
            b5_workers=2,
            b5_rounds=6,
            b6_domains=100,
            b6_running=20,
            b6_list_calls=15,
            b6_restarts=1,
            b7_cycles=1,
            b8_hosts=200,
            b8_workers=2,
            b8_rounds=5,
            b8_events_per_host=4,
            b9_domains=10,
            b9_calls=5,
            broker_memory=False,
            b7_warmup=False,
        )


@dataclass
class Context:
    run_id: str
    quick: bool
    scale: Scale
    amqp_url: str
    workdir: Path
    """Scratch space of this run (state directories, logs); removed at the end."""
    profile_dir: Path
    cleanup: Cleanup
    docker: aiodocker.Docker
    started: float = field(default_factory=time.monotonic)
    baselines: dict[str, Any] = field(default_factory=dict)
    current: str = ""
    """The benchmark running now (names profile files)."""
    profiling: bool = False
    """Set while a benchmark is re-run under the profiler."""
    profiles: list[dict[str, Any]] = field(default_factory=list)
    waited_s: float = 0.0
    """Time spent waiting for a quiet machine (``--quiet-load``)."""

    def host(self, suffix: str) -> str:
        """A host name of this run; its containers and queue are removed at the end."""
        name = f"{HOST_PREFIX}{self.run_id}-{suffix}"
        self.cleanup.hosts.add(name)
        return name

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- cleanup --


@dataclass
class Cleanup:
    """Everything a run created: processes, hosts (containers and queues), extra queues."""

    amqp_url: str
    hosts: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def stop_processes(self, grace_s: float = 20.0) -> None:
        live = [p for p in self.processes if p.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in live:
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self.processes = [p for p in self.processes if p.returncode is None]

    async def sweep(self, docker: aiodocker.Docker, hosts: Iterable[str] | None = None) -> int:
        """Remove the containers and queues of ``hosts`` (default: every host of the run)."""
        chosen = set(self.hosts if hosts is None else hosts)
        removed = await remove_containers(docker, lambda host: host in chosen)
        queues = {host_queue(host) for host in chosen}
        if hosts is None:
            queues |= self.queues
        await delete_queues(self.amqp_url, queues)
        return removed

    async def run(self, docker: aiodocker.Docker) -> None:
        await self.stop_processes()
        await self.sweep(docker)


async def remove_containers(docker: aiodocker.Docker, host_matches: Callable[[str], bool]) -> int:
    """Force-remove every container whose ``virtbus.host`` label matches; returns how many."""
    entries: list[dict[str, Any]] = await docker._query_json(
        "containers/json", params={"all": "1", "filters": json.dumps({"label": [HOST_LABEL]})}
    )
    doomed = [
        str(entry["Id"])
        for entry in entries
        if host_matches(str((entry.get("Labels") or {}).get(HOST_LABEL, "")))
    ]
    slots = asyncio.Semaphore(16)

    async def remove(container_id: str) -> None:
        async with slots:
            with contextlib.suppress(aiodocker.DockerError):
                await docker._query_json(
                    f"containers/{container_id}", method="DELETE", params={"force": "1", "v": "1"}
                )

    await asyncio.gather(*(remove(c) for c in doomed))
    return len(doomed)


async def delete_queues(amqp_url: str, names: Iterable[str]) -> None:
    names = sorted(names)
    if not names:
        return
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(name)


# ---------------------------------------------------------- stale runs, pidfile --


def write_pidfile(run_id: str) -> Path:
    PIDFILE_DIR.mkdir(parents=True, exist_ok=True)
    path = PIDFILE_DIR / f"{run_id}.pid"
    path.write_text(str(os.getpid()))
    return path


def run_alive(run_id: str) -> bool:
    path = PIDFILE_DIR / f"{run_id}.pid"
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"bench" in cmdline


def run_of_host(host: str) -> str | None:
    """``bench-<run>-…`` → ``<run>``."""
    if not host.startswith(HOST_PREFIX):
        return None
    parts = host.split("-")
    return parts[1] if len(parts) >= 3 else None


async def sweep_stale(docker: aiodocker.Docker, amqp_url: str) -> tuple[int, int]:
    """Remove what runs that are no longer alive left behind (killed with SIGKILL, say):
    containers of ``bench-*`` hosts and their ``virtbus.host.bench-*`` queues."""

    def stale(host: str) -> bool:
        run = run_of_host(host)
        return run is not None and not run_alive(run)

    containers = await remove_containers(docker, stale)
    queues = [
        name for name in await list_queue_names() if stale(name.removeprefix("virtbus.host."))
    ]
    await delete_queues(amqp_url, queues)
    return containers, len(queues)


async def list_queue_names() -> list[str]:
    """Queue names from ``rabbitmqctl`` (AMQP cannot list queues); [] if unavailable."""
    output = await run_tool("rabbitmqctl", "-q", "list_queues", "name", timeout_s=60)
    if output is None:
        return []
    return [line.split()[0] for line in output.splitlines() if line.strip()]


async def run_tool(*argv: str, timeout_s: float = 30.0) -> str | None:
    """A command's standard output, or None if it is missing, failed or timed out."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
    except OSError:
        return None
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    return stdout.decode(errors="replace") if process.returncode == 0 else None


# ------------------------------------------------------------------------ misc --


async def timed(work: Awaitable[Any]) -> float:
    """Seconds ``work`` took."""
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) if it is gone."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after "pid (comm)": state is field 3, utime 14 and stime 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def broker_pid() -> int | None:
    """The local RabbitMQ node's Erlang VM (``beam.smp``), if there is one."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "beam.smp":
                continue
            if b"rabbit" in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:
            continue
    return None


@dataclass
class CpuMeter:
    """CPU seconds used by named processes between ``start`` and ``stop``."""

    pids: dict[str, list[int]]
    used: dict[str, float] = field(default_factory=dict)
    _begin: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    _wall: float = 0.0

    def _total(self, name: str) -> float:
        return sum(cpu_s(pid) for pid in self.pids[name])

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._begin = {name: self._total(name) for name in self.pids}

    def stop(self) -> dict[str, float]:
        self.wall_s = time.perf_counter() - self._wall
        self.used = {name: self._total(name) - self._begin[name] for name in self.pids}
        return self.used
