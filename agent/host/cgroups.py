"""A domain's usage as the kernel counts it: the files of its cgroup (v1 or v2) and of
its init's ``/proc`` entry, read directly, with no call to the engine and no sampling
wait.

Every reader raises ``OSError`` (or ``ValueError``) when a file is missing or
unreadable; the caller leaves the statistics group out, as libvirt leaves out a group
it cannot read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cgroup:
    """Where a process's cgroup files are: a directory per v1 controller, and the v2
    directory (the unified hierarchy, alone or beside v1 ones)."""

    v1: dict[str, Path] = field(default_factory=dict)
    v2: Path | None = None

    @classmethod
    def of(cls, pid: int, proc: Path = PROC, root: Path = CGROUP_ROOT) -> Cgroup:
        """The cgroup of host process ``pid``, from ``/proc/PID/cgroup``."""
        v1: dict[str, Path] = {}
        v2: Path | None = None
        for line in (proc / str(pid) / "cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            relative = path.lstrip("/")
            if controllers == "":
                unified = root if (root / "cgroup.controllers").exists() else root / "unified"
                v2 = unified / relative
                continue
            for controller in controllers.split(","):
                if controller.startswith("name="):
                    continue
                joint = root / controllers / relative
                v1[controller] = joint if joint.is_dir() else root / controller / relative
        return cls(v1, v2)

    def file(self, v1_controller: str, v1_name: str, v2_name: str) -> Path:
        """The v1 controller's file when that controller is mounted, else the v2 one."""
        if v1_controller in self.v1:
            return self.v1[v1_controller] / v1_name
        if self.v2 is None:
            raise FileNotFoundError(f"no {v1_controller} controller and no cgroup v2")
        return self.v2 / v2_name


def _unified(cgroup: Cgroup) -> Path:
    if cgroup.v2 is None:
        raise FileNotFoundError("no cgroup v2 directory")
    return cgroup.v2


def _pairs(path: Path) -> dict[str, int]:
    """A flat keyed file (``memory.stat``, ``cpu.stat``, ``cpuacct.stat``)."""
    pairs: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            pairs[key] = int(value)
    return pairs


def _number(path: Path) -> int:
    return int(path.read_text().split()[0])


@dataclass(frozen=True)
class CpuTimes:
    """Nanoseconds of CPU time the domain's processes have used since it started."""

    total: int
    user: int
    system: int


def cpu_times(cgroup: Cgroup) -> CpuTimes:
    if "cpuacct" in cgroup.v1:
        ticks = _pairs(cgroup.v1["cpuacct"] / "cpuacct.stat")
        return CpuTimes(
            total=_number(cgroup.v1["cpuacct"] / "cpuacct.usage"),
            user=ticks["user"] * NS_PER_TICK,
            system=ticks["system"] * NS_PER_TICK,
        )
    usec = _pairs(_unified(cgroup) / "cpu.stat")
    return CpuTimes(
        total=usec["usage_usec"] * 1000,
        user=usec["user_usec"] * 1000,
        system=usec["system_usec"] * 1000,
    )


def per_cpu_ns(cgroup: Cgroup) -> list[int]:
    """CPU time per host CPU (cgroup v1's cpuacct only: v2 does not count per CPU)."""
    if "cpuacct" not in cgroup.v1:
        raise FileNotFoundError("cgroup v2 keeps no per-CPU time")
    text = (cgroup.v1["cpuacct"] / "cpuacct.usage_percpu").read_text()
    return [int(value) for value in text.split()]


@dataclass(frozen=True)
class MemoryUse:
    """Bytes, and fault counts."""

    usage: int
    rss: int
    cache: int
    minor_faults: int
    major_faults: int


def memory(cgroup: Cgroup) -> MemoryUse:
    if "memory" in cgroup.v1:
        directory = cgroup.v1["memory"]
        stat = _pairs(directory / "memory.stat")
        faults = stat.get("total_pgfault", stat.get("pgfault", 0))
        major = stat.get("total_pgmajfault", stat.get("pgmajfault", 0))
        return MemoryUse(
            usage=_number(directory / "memory.usage_in_bytes"),
            rss=stat.get("total_rss", stat.get("rss", 0)),
            cache=stat.get("total_cache", stat.get("cache", 0)),
            minor_faults=faults - major,
            major_faults=major,
        )
    directory = _unified(cgroup)
    stat = _pairs(directory / "memory.stat")
    return MemoryUse(
        usage=_number(directory / "memory.current"),
        rss=stat.get("anon", 0),
        cache=stat.get("file", 0),
        minor_faults=stat.get("pgfault", 0) - stat.get("pgmajfault", 0),
        major_faults=stat.get("pgmajfault", 0),
    )


def pids(cgroup: Cgroup) -> tuple[int, int | None]:
    """Processes in the domain now, and its limit (None: unlimited)."""
    current = _number(cgroup.file("pids", "pids.current", "pids.current"))
    limit = cgroup.file("pids", "pids.max", "pids.max").read_text().strip()
    return current, None if limit == "max" else int(limit)


@dataclass(frozen=True)
class BlockIo:
    rd_reqs: int
    rd_bytes: int
    wr_reqs: int
    wr_bytes: int


def block_io(cgroup: Cgroup, proc: Path = PROC) -> BlockIo:
    """Storage I/O of the domain since it started.

    cgroup v2: ``io.stat``, every device summed. cgroup v1: its blkio controller does
    not see buffered writes (the kernel's flusher writes them back, outside the
    cgroup), so the bytes are the kernel's per-task I/O accounting (``/proc/PID/io``
    ``read_bytes``/``write_bytes``, which includes reaped children) summed over the
    cgroup's processes, and the requests are their read and write system calls."""
    if cgroup.v2 is not None and not cgroup.v1 and (cgroup.v2 / "io.stat").exists():
        totals = {"rbytes": 0, "wbytes": 0, "rios": 0, "wios": 0}
        for line in (cgroup.v2 / "io.stat").read_text().splitlines():
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key in totals:
                    totals[key] += int(value)
        return BlockIo(totals["rios"], totals["rbytes"], totals["wios"], totals["wbytes"])
    members = cgroup.file("pids", "cgroup.procs", "cgroup.procs")
    totals = {"syscr": 0, "read_bytes": 0, "syscw": 0, "write_bytes": 0}
    for pid in members.read_text().split():
        try:
            accounting = (proc / pid / "io").read_text()
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


def interfaces(pid: int, proc: Path = PROC) -> dict[str, Interface]:
    """Every interface of the domain's network namespace (``/proc/PID/net/dev``), by
    name, in the kernel's order."""
    found: dict[str, Interface] = {}
    for line in (proc / str(pid) / "net" / "dev").read_text().splitlines()[2:]:
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


def cpuset(cgroup: Cgroup) -> str:
    """The host CPUs the domain may run on, as a kernel CPU list (``0-3,6``)."""
    return cgroup.file("cpuset", "cpuset.cpus", "cpuset.cpus.effective").read_text().strip()


def last_cpu(pid: int, proc: Path = PROC) -> int:
    """The host CPU the process last ran on (``/proc/PID/stat`` field 39)."""
    stat = (proc / str(pid) / "stat").read_text()
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
