"""Statistics and the node's facts: ``domain.get_stats``, ``host.get_all_domain_stats``,
``host.get_capabilities``, ``host.get_node_stats``.

Domain statistics come from the kernel's files (``agent.host.cgroups``), never from the
engine's stats API, which costs a round trip per domain and, without one-shot, a
second's sampling wait: a host's bulk statistics are one pass over small files.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from agent.errors import VirtError
from agent.host import cgroups
from agent.host.domains import DomainObj, read_live
from agent.host.node import (
    capabilities_xml,
    domain_capabilities_xml,
    host_facts,
    node_stats,
    sysinfo_xml,
)
from agent.host.operations import Operations, handles
from schemas.codes import DomainState, ErrorCode
from schemas.commands import (
    LIBVIRT_GROUPS,
    GetAllDomainStats,
    GetCapabilities,
    GetNodeStats,
    GetStats,
    GetTuning,
    StatGroup,
)
from schemas.events import DomainRef
from schemas.replies import (
    DomainStats,
    DomainStatsList,
    DomainTuning,
    HostCapabilities,
    NodeStats,
    StatValue,
)

log = logging.getLogger(__name__)

DEFAULT_GROUPS: tuple[StatGroup, ...] = (*LIBVIRT_GROUPS, "pids")
"""The groups a request that names none gets."""
LOOPBACK = "lo"
ROOT_DISK = "rootfs"
"""The one block device a domain has: its root filesystem (and its mounts)."""
READ_AT_ONCE = 25
"""Domains read between two turns of the agent's event loop in a bulk call."""
VCPU_RUNNING = 1
VCPU_OFFLINE = 0
CFS_PERIOD_US = 100_000
"""The CFS period Docker gives a container whose CPUs it limits."""
SWEEP_S = 30.0
"""How long a stopped domain's files may stay open after its run ended."""

Stats = dict[str, StatValue]
READ_ERRORS = (OSError, ValueError, KeyError, IndexError)
"""A file missing, unreadable or not as the kernel writes it."""


@dataclass
class _Run:
    """What statistics keep of one run of a domain, each found on first use."""

    cgroup: cgroups.Cgroup | None = None
    files: cgroups.KeptFiles | None = None
    ref: DomainRef | None = None


class CgroupCache:
    """Where each running domain's cgroup is, found once per run of the domain: its
    init stays in the cgroup it was started in, so (uuid, pid) names one run, and a
    statistics call reads only the counters, not ``/proc/PID/cgroup`` and the
    directories it names. (A new run of the same domain under the same pid would need
    the kernel's cyclic pid numbers to wrap before the old run is swept.)

    The run's files are held open (``cgroups.KeptFiles``) within ``budget`` (none
    given: none held), and its ``DomainRef`` kept (made again if the name or id has
    changed). ``keep`` closes the files of runs that are over; ``sweep_with`` has that
    done every SWEEP_S while files are held, so a run that ends while no statistics
    call comes does not keep its network namespace and cgroup pinned."""

    def __init__(self, budget: cgroups.Budget | None = None) -> None:
        self._budget = budget or cgroups.Budget(0)
        self._runs: dict[tuple[UUID, int], _Run] = {}
        self._domains: Callable[[], Iterable[DomainObj] | None] | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_loop: asyncio.AbstractEventLoop | None = None

    def _run(self, domain: DomainObj) -> _Run:
        key = (domain.uuid, domain.pid)
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = _Run()
        return run

    def of(self, domain: DomainObj, proc: Path, root: Path) -> cgroups.Cgroup:
        run = self._run(domain)
        if run.cgroup is None:
            run.cgroup = cgroups.Cgroup.of(domain.pid, proc, root)
        return run.cgroup

    def files(self, domain: DomainObj) -> cgroups.KeptFiles:
        """The run's kept files, made on its first read."""
        run = self._run(domain)
        if run.files is None:
            run.files = cgroups.KeptFiles(self._budget)
        self._arm()
        return run.files

    def ref(self, domain: DomainObj) -> DomainRef:
        run = self._run(domain)
        name, id_ = domain.name, domain.id
        if run.ref is None or run.ref.name != name or run.ref.id != id_:
            # unvalidated: the agent's own name, uuid and id
            run.ref = DomainRef.model_construct(name=name, uuid=domain.uuid, id=id_)
        return run.ref

    @property
    def runs_held(self) -> int:
        """How many runs have files held open."""
        return sum(1 for run in self._runs.values() if run.files is not None and len(run.files))

    def keep(self, domains: Iterable[DomainObj]) -> None:
        """Forget the runs that are over (their domain gone or not active), and close
        their files."""
        live = {(domain.uuid, domain.pid) for domain in domains if domain.active}
        for key in self._runs.keys() - live:
            files = self._runs.pop(key).files
            if files is not None:
                files.close()

    def sweep_with(self, domains: Callable[[], Iterable[DomainObj] | None]) -> None:
        """Sweep every SWEEP_S while files are held, against ``domains()`` (None: the
        agent is gone, and everything is closed)."""
        self._domains = domains

    def _arm(self) -> None:
        if self._domains is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # read outside the agent's loop: its next read in the loop arms it
        if self._sweep is not None and self._sweep_loop is loop:
            return
        self._sweep_loop = loop
        self._sweep = loop.call_later(SWEEP_S, self.sweep)

    def sweep(self) -> None:
        """Close the files of the runs that are over now."""
        self._sweep = None
        domains = self._domains() if self._domains is not None else None
        if domains is None:
            self.close()
            return
        self.keep(domains)
        if any(run.files is not None for run in self._runs.values()):
            self._arm()

    def close(self) -> None:
        """Close every run's files and stop sweeping; idempotent. Reads after it go by
        path."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._domains = None
        self._budget = cgroups.Budget(0)
        self.keep(())


class Reader:
    """One domain's statistics: each group read from its own files, a group whose files
    cannot be read left out (libvirt leaves out what a driver cannot read).

    A group reads all its files before it writes a key, so a group that fails to read
    adds nothing; each writes straight into the record's one dict (a bulk call builds
    thousands of values, so no per-group dict is built and merged)."""

    def __init__(
        self,
        domain: DomainObj,
        max_mem_kib: int,
        vcpus: int,
        proc: Path = cgroups.PROC,
        cgroup_root: Path = cgroups.CGROUP_ROOT,
        cache: CgroupCache | None = None,
    ) -> None:
        self.proc = proc
        self.cgroup_root = cgroup_root
        self.domain = domain
        self.max_mem_kib = max_mem_kib
        self.vcpus = vcpus
        self.live = domain.active and domain.pid > 0
        self._cache = cache or CgroupCache()
        self._read: cgroups.Read = self._cache.files(domain) if self.live else cgroups.read_text
        self._cgroup: cgroups.Cgroup | None = None
        self._cpu: cgroups.CpuTimes | None = None
        self._time = datetime.now(UTC)

    @property
    def cgroup(self) -> cgroups.Cgroup:
        if self._cgroup is None:
            self._cgroup = self._cache.of(self.domain, self.proc, self.cgroup_root)
        return self._cgroup

    @property
    def cpu(self) -> cgroups.CpuTimes:
        if self._cpu is None:
            self._cpu = cgroups.cpu_times(self.cgroup, self._read)
        return self._cpu

    def read(self, groups: Iterable[StatGroup]) -> DomainStats:
        self._time = datetime.now(UTC)
        stats: Stats = {}
        live = self.live
        for group in groups:
            if not live and group != "state" and group not in OFFLINE_GROUPS:
                continue
            try:
                GROUPS[group](self, stats)
            except READ_ERRORS as error:
                log.debug("domain %s: no %s statistics: %s", self.domain.name, group, error)
        # built unvalidated: every value is an int or a str read above, and a bulk
        # reply holds thousands of them
        ref = self._cache.ref(self.domain)
        return DomainStats.model_construct(domain=ref, time=self._time, stats=stats)

    def state(self, stats: Stats) -> None:
        stats["state.state"] = int(self.domain.state)
        stats["state.reason"] = int(self.domain.reason)

    def cpu_total(self, stats: Stats) -> None:
        cpu = self.cpu
        stats["cpu.time"] = cpu.total
        stats["cpu.user"] = cpu.user
        stats["cpu.system"] = cpu.system

    def balloon(self, stats: Stats) -> None:
        """A container has one memory limit, no balloon: current and maximum are both
        that limit (what setmem and setmaxmem set), the rest the cgroup's use of it."""
        limit = self.max_mem_kib
        stats["balloon.current"] = limit
        stats["balloon.maximum"] = limit
        if not self.live:
            return
        try:
            use = cgroups.memory(self.cgroup, self._read)
        except READ_ERRORS:
            return
        unused = max(0, limit - use.usage // 1024)
        stats["balloon.swap_in"] = 0
        stats["balloon.swap_out"] = 0
        stats["balloon.major_fault"] = use.major_faults
        stats["balloon.minor_fault"] = use.minor_faults
        stats["balloon.unused"] = unused
        stats["balloon.available"] = limit
        stats["balloon.usable"] = unused + use.cache // 1024
        stats["balloon.rss"] = use.rss // 1024
        stats["balloon.disk_caches"] = use.cache // 1024
        stats["balloon.last-update"] = int(self._time.timestamp())

    def vcpu(self, stats: Stats) -> None:
        """A container's vCPUs are its CPU quota: each is running while the domain is
        and shows an even share of the domain's CPU time."""
        stats["vcpu.current"] = self.vcpus
        stats["vcpu.maximum"] = self.vcpus
        if not self.live:
            return
        try:
            share = self.cpu.total // self.vcpus
        except READ_ERRORS:
            return
        state = VCPU_RUNNING if self.domain.state is DomainState.RUNNING else VCPU_OFFLINE
        for state_key, time_key in vcpu_keys(self.vcpus):
            stats[state_key] = state
            stats[time_key] = share

    def interface(self, stats: Stats) -> None:
        """The domain's interfaces as it sees them (its loopback left out), by name."""
        found = [
            (name, counters)
            for name, counters in cgroups.interfaces(self.domain.pid, self.proc, self._read).items()
            if name != LOOPBACK
        ]
        stats["net.count"] = len(found)
        for index, (name, counters) in enumerate(found):
            prefix = f"net.{index}"
            stats[f"{prefix}.name"] = name
            for direction in ("rx", "tx"):
                for counter in ("bytes", "pkts", "errs", "drop"):
                    value = getattr(counters, f"{direction}_{counter}")
                    stats[f"{prefix}.{direction}.{counter}"] = value

    def block(self, stats: Stats) -> None:
        io = cgroups.block_io(self.cgroup, self.proc, self._read)
        stats["block.count"] = 1
        stats["block.0.name"] = ROOT_DISK
        stats["block.0.rd.reqs"] = io.rd_reqs
        stats["block.0.rd.bytes"] = io.rd_bytes
        stats["block.0.wr.reqs"] = io.wr_reqs
        stats["block.0.wr.bytes"] = io.wr_bytes

    def pids(self, stats: Stats) -> None:
        current, limit = cgroups.pids(self.cgroup, self._read)
        stats["pids.current"] = current
        if limit is not None:
            stats["pids.limit"] = limit

    def percpu(self, stats: Stats) -> None:
        times = cgroups.per_cpu_ns(self.cgroup, self._read)
        stats["percpu.count"] = len(times)
        for cpu, time_ns in enumerate(times):
            stats[f"percpu.{cpu}.time"] = time_ns

    def affinity(self, stats: Stats) -> None:
        cpus = cgroups.cpuset(self.cgroup, self._read)
        last = cgroups.last_cpu(self.domain.pid, self.proc, self._read)
        stats["affinity.cpuset"] = cpus
        stats["affinity.cpu"] = last


@functools.cache
def vcpu_keys(vcpus: int) -> tuple[tuple[str, str], ...]:
    """``vcpu.N.state`` and ``vcpu.N.time`` of each vCPU, made once per count."""
    return tuple((f"vcpu.{n}.state", f"vcpu.{n}.time") for n in range(vcpus))


GROUPS: dict[StatGroup, Callable[[Reader, Stats], None]] = {
    "state": Reader.state,
    "cpu-total": Reader.cpu_total,
    "balloon": Reader.balloon,
    "vcpu": Reader.vcpu,
    "interface": Reader.interface,
    "block": Reader.block,
    "pids": Reader.pids,
    "percpu": Reader.percpu,
    "affinity": Reader.affinity,
}
OFFLINE_GROUPS = frozenset({"balloon", "vcpu"})
"""Groups an inactive domain has too (from its definition)."""


CACHES: weakref.WeakKeyDictionary[Operations, CgroupCache] = weakref.WeakKeyDictionary()
"""Each agent's cgroup cache."""


@functools.cache
def shared_budget() -> cgroups.Budget:
    """The descriptors every agent of this process may keep open for statistics."""
    return cgroups.Budget.share_of_limit()


RELEASED: weakref.WeakSet[Operations] = weakref.WeakSet()
"""Agents stopped: a command still running in one reads by path."""


def cgroup_cache(ops: Operations) -> CgroupCache:
    cache = CACHES.get(ops)
    if cache is None and ops in RELEASED:
        return CgroupCache()
    if cache is None:
        cache = CACHES[ops] = CgroupCache(shared_budget())
        owner = weakref.ref(ops)
        cache.sweep_with(lambda: None if (alive := owner()) is None else alive.domains)
    return cache


def release(ops: Operations) -> None:
    """Close the agent's kept files: it stops."""
    RELEASED.add(ops)
    cache = CACHES.pop(ops, None)
    if cache is not None:
        cache.close()


def reader(ops: Operations, domain: DomainObj, cache: CgroupCache | None = None) -> Reader:
    engine, definition = ops.engine, domain.definition
    return Reader(
        domain,
        definition.memory_kib or engine.memory_kib,
        definition.vcpus or engine.cpus,
        cache=cache or cgroup_cache(ops),
    )


def wanted(groups: list[StatGroup]) -> list[StatGroup]:
    return list(dict.fromkeys(groups)) if groups else list(DEFAULT_GROUPS)


@handles(GetStats)
async def get_stats(ops: Operations, command: GetStats) -> DomainStats:
    domain = ops.domains.get(command.target)
    return reader(ops, domain).read(wanted(command.args.groups))


@handles(GetTuning)
def get_tuning(ops: Operations, command: GetTuning) -> DomainTuning:
    """Live: what the domain's cgroup holds. Config: what its definition asks Docker for
    (a vCPU count is a CFS quota of that many periods; without a swap limit, memory is the
    limit of memory and swap together, so no swap), the rest unset, as libvirt reports an
    unset control."""
    domain = ops.domains.get(command.target)
    if read_live(domain, command.args.live, command.args.config):
        try:
            read = cgroups.tuning(cgroups.Cgroup.of(domain.pid))
        except (OSError, ValueError) as error:
            raise VirtError(
                ErrorCode.OPERATION_FAILED,
                f"cannot read the cgroup of domain '{domain.name}': {error}",
            ) from None
        return DomainTuning(
            cpu_shares=read.cpu_shares,
            vcpu_period=read.cpu_period,
            vcpu_quota=read.cpu_quota,
            hard_limit_kib=_kib(read.memory_hard),
            soft_limit_kib=_kib(read.memory_soft),
            swap_hard_limit_kib=_kib(read.memory_swap),
        )
    spec = domain.next_definition
    return DomainTuning(
        cpu_shares=spec.cpu_shares or 0,
        vcpu_period=CFS_PERIOD_US if spec.vcpus else 0,
        vcpu_quota=spec.vcpus * CFS_PERIOD_US if spec.vcpus else 0,
        hard_limit_kib=spec.memory_kib,
        soft_limit_kib=spec.soft_limit_kib,
        swap_hard_limit_kib=spec.swap_hard_limit_kib or spec.memory_kib,
    )


def _kib(limit: int | None) -> int | None:
    return None if limit is None else limit // 1024


@handles(GetAllDomainStats)
async def get_all_domain_stats(ops: Operations, command: GetAllDomainStats) -> DomainStatsList:
    """Every domain the flags select, sorted by name, read in one pass on the event
    loop: the files are the kernel's counters (microseconds each), so a thread hop per
    call would cost more than it spares; the loop gets a turn every READ_AT_ONCE
    domains."""
    groups = wanted(command.args.groups)
    chosen = sorted((d for d in ops.domains if d.matches(command.args.flags)), key=lambda d: d.name)
    cache = cgroup_cache(ops)
    cache.keep(ops.domains)
    records: list[DomainStats] = []
    for start in range(0, len(chosen), READ_AT_ONCE):
        if start:
            await asyncio.sleep(0)
        records += [
            reader(ops, domain, cache).read(groups)
            for domain in chosen[start : start + READ_AT_ONCE]
        ]
    return DomainStatsList.model_construct(records=records)


@handles(GetCapabilities)
async def get_capabilities(ops: Operations, command: GetCapabilities) -> HostCapabilities:
    node = host_facts()
    engine = ops.engine
    return HostCapabilities(
        capabilities=capabilities_xml(node, engine.version),
        domain_capabilities=domain_capabilities_xml(node, command.args.virttype, engine.cpus),
        sysinfo=sysinfo_xml(node),
    )


@handles(GetNodeStats)
async def get_node_stats(ops: Operations, command: GetNodeStats) -> NodeStats:
    return await asyncio.to_thread(node_stats)
