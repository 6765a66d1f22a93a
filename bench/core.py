"""What every benchmark shares: the run's context, statistics, interleaved rounds, goal
records and the cleanup.

Every goal is a ratio or a difference against a baseline measured in the same benchmark,
in rounds alternating with the subject (``interleave``), so the table holds on a noisy
machine; a goal records its subject, its baseline and how they were measured (``Goal``).
Every resource a run creates is named after the run (hosts ``bench-<run>-…``) and is
removed at the end, also when the run fails.
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
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiodocker
import aiohttp

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


# ------------------------------------------------------------------ interleave --

Side = Callable[[int], Awaitable["float | Sequence[float] | None"]]
"""One side of an interleaved measurement, called once per round with the round's
number (negative in warm-up rounds). It returns its samples (seconds, or any other unit
the caller keeps to), or None to have the wall time of the call recorded."""


@dataclass
class Interleaved:
    """The samples of each side of an interleaved measurement."""

    samples: dict[str, list[float]]
    rounds: int
    orders: list[list[str]] = field(default_factory=list)
    """The order the sides ran in, round by round."""
    load: list[float] = field(default_factory=list)
    """The 1-minute load average as each round began."""

    def dist(self, name: str) -> Dist:
        """The samples of ``name`` as a latency distribution (samples in seconds)."""
        return Dist.of(self.samples[name])

    def total(self, name: str) -> float:
        return sum(self.samples[name])

    def summary(self) -> dict[str, Any]:
        """What the results file keeps of it (not every sample)."""
        return {
            "rounds": self.rounds,
            "first_round_order": self.orders[0] if self.orders else [],
            "load_1min": [round(value, 2) for value in self.load],
            "samples": {name: len(values) for name, values in self.samples.items()},
        }


async def interleave(sides: dict[str, Side], rounds: int, *, warmup: int = 0) -> Interleaved:
    """Measure a subject and its baseline(s) in alternating rounds: each round calls every
    side once, one after the other, and the order rotates from round to round (with two
    sides, who goes first alternates), so a change in the machine's load falls on both
    alike. ``warmup`` rounds go first and are not recorded."""
    if not sides or rounds < 1:
        raise ValueError("interleave needs at least one side and one round")
    names = list(sides)
    measured = Interleaved({name: [] for name in names}, rounds)
    for round_ in range(-warmup, rounds):
        shift = round_ % len(names)
        order = names[shift:] + names[:shift]
        if round_ >= 0:
            measured.orders.append(order)
            measured.load.append(os.getloadavg()[0])
        for name in order:
            began = time.perf_counter()
            outcome = await sides[name](round_)
            elapsed = time.perf_counter() - began
            if round_ < 0:
                continue
            if outcome is None:
                measured.samples[name].append(elapsed)
            elif isinstance(outcome, int | float):
                measured.samples[name].append(float(outcome))
            else:
                measured.samples[name].extend(float(value) for value in outcome)
    return measured


# --------------------------------------------------------------------- results --


RATIO = "ratio"
DIFFERENCE = "difference"
ABSOLUTE = "absolute"
TRACE_MARK = "-trace-"
"""In the name of a trace file among a goal's profiles: ``<bench>-trace-<mode>.txt``."""


@dataclass
class Goal:
    """One goal, as the results file records it: virtbus's figure (``subject``), the
    baseline's figure in the same unit, how they compare (``kind``: ``value`` is
    ``subject / baseline`` for a ratio, ``subject - baseline`` for a difference), the
    bound ``value`` is held to and whether it was met.

    ``interleaved`` says the baseline was measured in alternating rounds with the subject
    (``rounds`` of them), in the same benchmark. An ``absolute`` goal has no baseline: a
    fixed bound, kept only where there is nothing to compare with (a count of lost
    messages, a bound the issue itself sets); ``baseline_what`` then says why."""

    bench: str
    what: str
    kind: str
    subject: float
    baseline: float | None
    baseline_what: str
    value: float
    op: str
    """``<=`` or ``>=``: ``value op bound`` is the goal."""
    bound: float
    goal: str
    met: bool
    unit: str
    """The unit of ``subject`` and ``baseline`` (``ms``, ``s``, ``MiB``, ``/s``, ``%`` or "")."""
    interleaved: bool
    rounds: int = 0
    detail: str = ""
    valid: bool = True
    """False when the measurement itself failed a check (a reply not ``ok``, a reply
    missing): the goal then counts as missed whatever the figures say."""
    profiles: list[str] = field(default_factory=list)
    """Where the time goes, for a missed goal: the call trees of its benchmark's profiled
    re-run and its trace (``TRACE_MARK`` in the name), filled in by the run with
    ``--profile`` or ``--publish``."""

    @property
    def value_unit(self) -> str:
        return "x" if self.kind == RATIO else self.unit


def _goal_text(kind: str, op: str, bound: float, unit: str, baseline_what: str) -> str:
    sign = "≤" if op == "<=" else "≥"
    if kind == RATIO:
        return f"{sign} {bound:g} \u00d7 {baseline_what}"
    if kind == DIFFERENCE:
        return f"{sign} {baseline_what} {'+' if bound >= 0 else '-'} {abs(bound):g} {unit}"
    return f"{sign} {bound:g} {unit}".rstrip()


def _compare(value: float, op: str, bound: float) -> bool:
    if math.isnan(value):
        return False
    return value <= bound if op == "<=" else value >= bound


def _bound(at_most: float | None, at_least: float | None) -> tuple[str, float]:
    if (at_most is None) == (at_least is None):
        raise ValueError("give exactly one of at_most and at_least")
    return ("<=", at_most) if at_most is not None else (">=", at_least)  # type: ignore[return-value]


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

    def ratio(
        self,
        what: str,
        subject: float,
        baseline: float,
        *,
        unit: str,
        baseline_what: str,
        at_most: float | None = None,
        at_least: float | None = None,
        interleaved: bool = True,
        rounds: int = 0,
        detail: str = "",
        valid: bool = True,
    ) -> Goal:
        """Record the goal ``subject / baseline`` ≤ ``at_most`` (or ≥ ``at_least``)."""
        op, bound = _bound(at_most, at_least)
        value = subject / baseline if baseline else math.nan
        return self._add(
            RATIO,
            what,
            subject,
            baseline,
            baseline_what,
            value,
            op,
            bound,
            unit,
            interleaved,
            rounds,
            detail,
            valid,
        )

    def difference(
        self,
        what: str,
        subject: float,
        baseline: float,
        *,
        unit: str,
        baseline_what: str,
        at_most: float | None = None,
        at_least: float | None = None,
        interleaved: bool = True,
        rounds: int = 0,
        detail: str = "",
        valid: bool = True,
    ) -> Goal:
        """Record the goal ``subject - baseline`` ≤ ``at_most`` (or ≥ ``at_least``), in
        ``unit``."""
        op, bound = _bound(at_most, at_least)
        return self._add(
            DIFFERENCE,
            what,
            subject,
            baseline,
            baseline_what,
            subject - baseline,
            op,
            bound,
            unit,
            interleaved,
            rounds,
            detail,
            valid,
        )

    def absolute(
        self,
        what: str,
        value: float,
        *,
        unit: str,
        reason: str,
        at_most: float | None = None,
        at_least: float | None = None,
        detail: str = "",
        valid: bool = True,
    ) -> Goal:
        """Record a goal with a fixed bound and no baseline; ``reason`` says why there is
        none (the report prints it next to the goal)."""
        op, bound = _bound(at_most, at_least)
        return self._add(
            ABSOLUTE, what, value, None, reason, value, op, bound, unit, False, 0, detail, valid
        )

    def _add(
        self,
        kind: str,
        what: str,
        subject: float,
        baseline: float | None,
        baseline_what: str,
        value: float,
        op: str,
        bound: float,
        unit: str,
        interleaved: bool,
        rounds: int,
        detail: str,
        valid: bool,
    ) -> Goal:
        goal = Goal(
            bench=self.id,
            what=what,
            kind=kind,
            subject=subject,
            baseline=baseline,
            baseline_what=baseline_what,
            value=value,
            op=op,
            bound=bound,
            goal=_goal_text(kind, op, bound, unit, baseline_what),
            met=valid and _compare(value, op, bound),
            unit=unit,
            interleaved=interleaved,
            rounds=rounds,
            detail=detail,
            valid=valid,
        )
        self.goals.append(goal)
        return goal

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
    rounds: int
    """Rounds of an interleaved measurement (subject and baseline alternating)."""

    @classmethod
    def full(cls) -> Scale:
        return cls(
            echo_latency_calls=500,
            throughput_s=5.0,
            b1_cycles=30,
            b3_pause_cycles=100,
            b3_start_cycles=15,
            b4_domains=100,
            b4_rounds=6,
            b5_agents=50,
            b5_workers=2,
            b5_rounds=30,
            b6_domains=1000,
            b6_running=200,
            b6_list_calls=40,
            b6_restarts=6,
            b7_cycles=5,
            b8_hosts=5000,
            b8_workers=8,
            b8_rounds=10,
            b8_events_per_host=10,
            b9_domains=200,
            b9_calls=20,
            broker_memory=True,
            b7_warmup=True,
            rounds=6,
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
            b8_hosts=1000,
            b8_workers=4,
            b8_rounds=5,
            b8_events_per_host=4,
            b9_domains=40,
            b9_calls=5,
            broker_memory=False,
            b7_warmup=False,
            rounds=2,
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


REMOVE_TIMEOUT_S = 60.0


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
            # a wedged engine never answers a forced removal (seen at 1,000 containers)
            with contextlib.suppress(aiodocker.DockerError, TimeoutError):
                async with asyncio.timeout(REMOVE_TIMEOUT_S):
                    await docker._query_json(
                        f"containers/{container_id}",
                        method="DELETE",
                        params={"force": "1", "v": "1"},
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


AMQP_PORT = 5672
TCP_LISTEN = "0A"


def amqp_port(url: str) -> int:
    """The port of the first broker in ``url`` (a comma-separated list, as the agents
    take it)."""
    parsed = urllib.parse.urlsplit(url.split(",", 1)[0])
    return parsed.port or (5671 if parsed.scheme == "amqps" else AMQP_PORT)


def listening_sockets(port: int, proc: Path = Path("/proc")) -> set[str]:
    """The inodes of the TCP sockets (IPv4 and IPv6) listening on ``port`` in this
    network namespace."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == TCP_LISTEN and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(fields[9])
    return inodes


def broker_pid(port: int = AMQP_PORT, proc: Path = Path("/proc")) -> int | None:
    """The RabbitMQ node listening on ``port`` (the one the bench talks to): its Erlang
    VM (``beam.smp``), the process holding the listening socket. Other nodes (a test
    harness's cluster) may run beside it on other ports. None if no local VM listens
    there."""
    sockets = {f"socket:[{inode}]" for inode in listening_sockets(port, proc)}
    if not sockets:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "beam.smp":
                continue
            if any(os.readlink(fd) in sockets for fd in (entry / "fd").iterdir()):
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


async def docker_events(
    docker: aiodocker.Docker, label: str, ready: asyncio.Event
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Docker's container events carrying ``label`` (``KEY`` or ``KEY=VALUE``) from now
    on, each with when it was received (``time_ns``, taken before it is parsed); ``ready``
    is set once Docker streams."""
    params = {
        "since": f"{time.time():.9f}",
        "filters": json.dumps({"type": ["container"], "label": [label]}),
    }
    async with docker._query(
        "events", params=params, timeout=aiohttp.ClientTimeout(total=None)
    ) as response:
        ready.set()
        async for line in response.content:
            received_ns = time.time_ns()
            if line.strip():
                yield received_ns, json.loads(line)
