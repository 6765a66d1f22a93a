"""A domain's usage as the kernel counts it: the files of its cgroup (v1 or v2) and of
its init's ``/proc`` entry, read directly, with no call to the engine and no sampling
wait.

Every reader takes ``read``, how a file's text is got: ``read_text`` opens the file
per read; a ``KeptFiles`` holds a running domain's files open and reads them again from
their start, which spares the path walk (most of a small kernel file's read).

Every reader raises ``OSError`` (or ``ValueError``) when a file is missing or
unreadable; the caller leaves the statistics group out, as libvirt leaves out a group
it cannot read.
"""

from __future__ import annotations

import contextlib
import os
import resource
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
READ_BYTES = 65536

_T = TypeVar("_T")
Read = Callable[[str], str]
"""A kernel file's whole text, by path."""


@dataclass(frozen=True)
class Cgroup:
    """Where a process's cgroup files are: a directory per v1 controller, and the v2
    directory (the unified hierarchy, alone or beside v1 ones). Paths are strings: a
    bulk read joins thousands of them, and pathlib's joins cost more than the read."""

    v1: dict[str, str] = field(default_factory=dict)
    v2: str | None = None

    @classmethod
    def of(cls, pid: int, proc: Path = PROC, root: Path = CGROUP_ROOT) -> Cgroup:
        """The cgroup of host process ``pid``, from ``/proc/PID/cgroup``."""
        v1: dict[str, str] = {}
        v2: str | None = None
        for line in read_text(f"{proc}/{pid}/cgroup").splitlines():
            _, controllers, path = line.split(":", 2)
            relative = path.lstrip("/")
            if controllers == "":
                unified = root if (root / "cgroup.controllers").exists() else root / "unified"
                v2 = str(unified / relative)
                continue
            for controller in controllers.split(","):
                if controller.startswith("name="):
                    continue
                joint = root / controllers / relative
                v1[controller] = str(joint if joint.is_dir() else root / controller / relative)
        return cls(v1, v2)

    def file(self, v1_controller: str, v1_name: str, v2_name: str) -> str:
        """The v1 controller's file when that controller is mounted, else the v2 one."""
        directory = self.v1.get(v1_controller)
        if directory is not None:
            return f"{directory}/{v1_name}"
        if self.v2 is None:
            raise FileNotFoundError(f"no {v1_controller} controller and no cgroup v2")
        return f"{self.v2}/{v2_name}"


def read_text(path: str | Path) -> str:
    """A kernel file's text, read to its end without the buffered text layer
    ``Path.read_text`` builds per file (a bulk read opens thousands). A kernel file may
    hand out less than asked before its end, so only an empty read ends it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read_from_start(fd)
    finally:
        os.close(fd)


def _read_from_start(fd: int) -> str:
    """The file's text from offset 0 to an empty read. A kernel file (a seq_file)
    generates its text again when read from 0, so a kept descriptor reads fresh
    counters."""
    first = os.pread(fd, READ_BYTES, 0)
    if not first:
        return ""
    chunks = [first]
    offset = len(first)
    while chunk := os.pread(fd, READ_BYTES, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return (first if len(chunks) == 1 else b"".join(chunks)).decode()


class Budget:
    """How many descriptors kept files may hold in all, shared by every holder."""

    def __init__(self, descriptors: int) -> None:
        self.left = descriptors

    @classmethod
    def share_of_limit(cls, share: float = 0.25, most: int = 4096) -> Budget:
        """A share of this process's descriptor limit (at most ``most``), so that kept
        files never starve its sockets and database."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = most if soft == resource.RLIM_INFINITY else min(most, int(soft * share))
        return cls(limit)


class KeptFiles:
    """One run of a domain's kernel files, each opened once and read again from its
    start (``pread`` from 0: no path walk, no open and close per read). Only files of
    the run's own cgroup and init belong here: a process list or another process's
    file is read by path (``read_text``) each time.

    A file whose kept descriptor fails to read is opened again once by its path; a
    file that reads empty is read again by path (older kernels' seq_files stayed
    empty once empty), so an empty file (cgroup v2's ``io.stat`` of a domain that has
    done no I/O) costs a read more than by path alone. Past the budget a file is
    opened per read. ``close`` gives the descriptors back and is idempotent; after it
    every read is by path. A run's files must be closed when the run ends (a kept
    ``/proc/PID/net/dev`` holds the domain's network namespace); they are closed when
    the object is collected at the latest."""

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self._open: dict[str, int] = {}
        self._closer = weakref.finalize(self, _close_all, self._open, budget)

    def __call__(self, path: str) -> str:
        fd = self._open.get(path)
        if fd is not None:
            try:
                text = _read_from_start(fd)
            except OSError:
                self._drop(path)
            else:
                return text or read_text(path)
        if self._budget.left <= 0 or not self._closer.alive:
            return read_text(path)
        fd = os.open(path, os.O_RDONLY)
        self._open[path] = fd
        self._budget.left -= 1
        try:
            return _read_from_start(fd)
        except OSError:
            self._drop(path)
            raise

    def __len__(self) -> int:
        return len(self._open)

    def _drop(self, path: str) -> None:
        fd = self._open.pop(path)
        self._budget.left += 1
        os.close(fd)

    def close(self) -> None:
        self._closer()


def _close_all(descriptors: dict[str, int], budget: Budget) -> None:
    held = list(descriptors.values())
    descriptors.clear()
    budget.left += len(held)
    for fd in held:
        with contextlib.suppress(OSError):  # closed already: nothing left to give back
            os.close(fd)


def _unified(cgroup: Cgroup) -> str:
    if cgroup.v2 is None:
        raise FileNotFoundError("no cgroup v2 directory")
    return cgroup.v2


def _pairs(text: str) -> dict[str, int]:
    """A flat keyed file (``memory.stat``, ``cpu.stat``, ``cpuacct.stat``)."""
    pairs: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            pairs[key] = int(value)
    return pairs


def _number(text: str) -> int:
    return int(text.split()[0])


@dataclass(frozen=True)
class CpuTimes:
    """Nanoseconds of CPU time the domain's processes have used since it started."""

    total: int
    user: int
    system: int


def cpu_times(cgroup: Cgroup, read: Read = read_text) -> CpuTimes:
    cpuacct = cgroup.v1.get("cpuacct")
    if cpuacct is not None:
        ticks = _pairs(read(f"{cpuacct}/cpuacct.stat"))
        return CpuTimes(
            total=_number(read(f"{cpuacct}/cpuacct.usage")),
            user=ticks["user"] * NS_PER_TICK,
            system=ticks["system"] * NS_PER_TICK,
        )
    usec = _pairs(read(f"{_unified(cgroup)}/cpu.stat"))
    return CpuTimes(
        total=usec["usage_usec"] * 1000,
        user=usec["user_usec"] * 1000,
        system=usec["system_usec"] * 1000,
    )


def per_cpu_ns(cgroup: Cgroup, read: Read = read_text) -> list[int]:
    """CPU time per host CPU (cgroup v1's cpuacct only: v2 does not count per CPU)."""
    cpuacct = cgroup.v1.get("cpuacct")
    if cpuacct is None:
        raise FileNotFoundError("cgroup v2 keeps no per-CPU time")
    return [int(value) for value in read(f"{cpuacct}/cpuacct.usage_percpu").split()]


@dataclass(frozen=True)
class MemoryUse:
    """Bytes, and fault counts."""

    usage: int
    rss: int
    cache: int
    minor_faults: int
    major_faults: int


def memory(cgroup: Cgroup, read: Read = read_text) -> MemoryUse:
    directory = cgroup.v1.get("memory")
    if directory is not None:
        stat = _pairs(read(f"{directory}/memory.stat"))
        faults = stat.get("total_pgfault", stat.get("pgfault", 0))
        major = stat.get("total_pgmajfault", stat.get("pgmajfault", 0))
        return MemoryUse(
            usage=_number(read(f"{directory}/memory.usage_in_bytes")),
            rss=stat.get("total_rss", stat.get("rss", 0)),
            cache=stat.get("total_cache", stat.get("cache", 0)),
            minor_faults=faults - major,
            major_faults=major,
        )
    directory = _unified(cgroup)
    stat = _pairs(read(f"{directory}/memory.stat"))
    return MemoryUse(
        usage=_number(read(f"{directory}/memory.current")),
        rss=stat.get("anon", 0),
        cache=stat.get("file", 0),
        minor_faults=stat.get("pgfault", 0) - stat.get("pgmajfault", 0),
        major_faults=stat.get("pgmajfault", 0),
    )


UNLIMITED_BYTES = 1 << 62
"""A limit this large is none: cgroup v1 writes "no limit" as the largest page-aligned
signed 64-bit number, far above it."""


@dataclass(frozen=True)
class Tuning:
    """The CPU controller's weight (v1's shares, v2's weight), the CFS period and quota
    in µs (-1: no quota; None: the kernel has no CPU bandwidth control), and the memory
    limits in bytes (None: none, or swap not accounted); ``memory_swap`` counts memory
    and swap together (v1's memsw)."""

    cpu_shares: int
    cpu_period: int | None
    cpu_quota: int | None
    memory_hard: int | None
    memory_soft: int | None
    memory_swap: int | None


def tuning(cgroup: Cgroup, read: Read = read_text) -> Tuning:
    cpu = cgroup.v1.get("cpu")
    period: int | None
    quota: int | None
    if cpu is not None:
        shares = _number(read(f"{cpu}/cpu.shares"))
        period = _optional(read, f"{cpu}/cpu.cfs_period_us", _number)
        quota = _optional(read, f"{cpu}/cpu.cfs_quota_us", _number)
    else:
        unified = _unified(cgroup)
        shares = _number(read(f"{unified}/cpu.weight"))
        bandwidth = _optional(read, f"{unified}/cpu.max", str.split)
        period = quota = None
        if bandwidth is not None:
            limit, every = bandwidth
            period, quota = int(every), -1 if limit == "max" else int(limit)
    memory = cgroup.v1.get("memory")
    if memory is not None:
        hard = _limit(read(f"{memory}/memory.limit_in_bytes"))
        soft = _limit(read(f"{memory}/memory.soft_limit_in_bytes"))
        swap = _optional(read, f"{memory}/memory.memsw.limit_in_bytes", _limit)
    else:
        unified = _unified(cgroup)
        hard = _limit(read(f"{unified}/memory.max"))
        soft = _limit(read(f"{unified}/memory.high"))
        swap_only = _optional(read, f"{unified}/memory.swap.max", _limit)
        swap = None if swap_only is None or hard is None else swap_only + hard
    return Tuning(shares, period, quota, hard, soft, swap)


def _optional(read: Read, path: str, parse: Callable[[str], _T]) -> _T | None:
    """A file the kernel has only with an option (CPU bandwidth, swap accounting)."""
    try:
        return parse(read(path))
    except FileNotFoundError:
        return None


def _limit(text: str) -> int | None:
    value = text.strip()
    if value == "max":
        return None
    number = int(value)
    return None if number >= UNLIMITED_BYTES else number


def pids(cgroup: Cgroup, read: Read = read_text) -> tuple[int, int | None]:
    """Processes in the domain now, and its limit (None: unlimited)."""
    current = _number(read(cgroup.file("pids", "pids.current", "pids.current")))
    limit = read(cgroup.file("pids", "pids.max", "pids.max")).strip()
    return current, None if limit == "max" else int(limit)


@dataclass(frozen=True)
class BlockIo:
    rd_reqs: int
    rd_bytes: int
    wr_reqs: int
    wr_bytes: int


def block_io(cgroup: Cgroup, proc: Path = PROC, read: Read = read_text) -> BlockIo:
    """Storage I/O of the domain since it started.

    cgroup v2: ``io.stat``, every device summed. cgroup v1: its blkio controller does
    not see buffered writes (the kernel's flusher writes them back, outside the
    cgroup), so the bytes are the kernel's per-task I/O accounting (``/proc/PID/io``
    ``read_bytes``/``write_bytes``, which includes reaped children) summed over the
    cgroup's processes, and the requests are their read and write system calls. The
    processes come and go, so the list and their files are read by path, never kept
    (a v1 process list read again from a kept descriptor is the kernel's cached one)."""
    if cgroup.v2 is not None and not cgroup.v1:
        try:
            io_stat = read(f"{cgroup.v2}/io.stat")
        except FileNotFoundError:
            pass
        else:
            totals = {"rbytes": 0, "wbytes": 0, "rios": 0, "wios": 0}
            for line in io_stat.splitlines():
                for item in line.split()[1:]:
                    key, _, value = item.partition("=")
                    if key in totals:
                        totals[key] += int(value)
            return BlockIo(totals["rios"], totals["rbytes"], totals["wios"], totals["wbytes"])
    members = read_text(cgroup.file("pids", "cgroup.procs", "cgroup.procs"))
    totals = {"syscr": 0, "read_bytes": 0, "syscw": 0, "write_bytes": 0}
    for pid in members.split():
        try:
            accounting = read_text(f"{proc}/{pid}/io")
        except OSError:
            continue  # gone since the list was read
        for line in accounting.splitlines():
            key, _, value = line.partition(":")
            if key in totals:
                totals[key] += int(value)
    return BlockIo(totals["syscr"], totals["read_bytes"], totals["syscw"], totals["write_bytes"])


@dataclass(frozen=True)
class Interface:
    """One network interface's counters, as the domain sees them (rx: received by it)."""

    rx_bytes: int
    rx_pkts: int
    rx_errs: int
    rx_drop: int
    tx_bytes: int
    tx_pkts: int
    tx_errs: int
    tx_drop: int


def interfaces(pid: int, proc: Path = PROC, read: Read = read_text) -> dict[str, Interface]:
    """Every interface of the domain's network namespace (``/proc/PID/net/dev``), by
    name, in the kernel's order."""
    found: dict[str, Interface] = {}
    for line in read(f"{proc}/{pid}/net/dev").splitlines()[2:]:
        name, _, counters = line.partition(":")
        values = [int(value) for value in counters.split()]
        found[name.strip()] = Interface(
            rx_bytes=values[0],
            rx_pkts=values[1],
            rx_errs=values[2],
            rx_drop=values[3],
            tx_bytes=values[8],
            tx_pkts=values[9],
            tx_errs=values[10],
            tx_drop=values[11],
        )
    return found


def cpuset(cgroup: Cgroup, read: Read = read_text) -> str:
    """The host CPUs the domain may run on, as a kernel CPU list (``0-3,6``)."""
    return read(cgroup.file("cpuset", "cpuset.cpus", "cpuset.cpus.effective")).strip()


def last_cpu(pid: int, proc: Path = PROC, read: Read = read_text) -> int:
    """The host CPU the process last ran on (``/proc/PID/stat`` field 39)."""
    stat = read(f"{proc}/{pid}/stat")
    return int(stat.rpartition(")")[2].split()[36])


def cpu_list(text: str) -> list[int]:
    """``0-3,6`` → ``[0, 1, 2, 3, 6]``."""
    cpus: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus
