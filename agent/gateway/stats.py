"""libvirt's observing procedures: capabilities, sysinfo, the node's CPU and memory
statistics, and domain statistics (``virConnectGetAllDomainStats`` and the per-domain
memory, block, interface, CPU and vCPU calls), each answered from one bus call.

Typed parameters carry libvirt's field names and types; values keep the units the
bus gives (ns, KiB, bytes), which are libvirt's.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Sequence
from enum import IntEnum

from agent.client import VirtbusError
from agent.gateway.procedures import (
    AFFECT_ALL,
    LIST_FLAGS,
    LIST_OTHER,
    STATE_FLAGS,
    Session,
    access_api,
    affect,
    check_flags,
    expect,
    flags_of,
    handles,
    ints,
    on_domain,
    read_domain,
    set_tuning,
    string,
)
from agent.gateway.protocol import LIST_MAX, STRING_MAX, Proc, WireDomain
from agent.gateway.xdr import Packer, Unpacker
from schemas.codes import DomainState, ErrorCode
from schemas.commands import (
    GetAllDomainStats,
    GetCapabilities,
    GetInfo,
    GetNodeStats,
    GetStats,
    GetTuning,
    ListFlag,
    Lookup,
    StatGroup,
)
from schemas.domain import DomainRecord
from schemas.replies import (
    DomainInfo,
    DomainStats,
    DomainStatsList,
    DomainTuning,
    HostCapabilities,
    NodeStats,
    StatValue,
)


class ParamType(IntEnum):
    """``virTypedParameterType``."""

    INT = 1
    UINT = 2
    LLONG = 3
    ULLONG = 4
    DOUBLE = 5
    BOOLEAN = 6
    STRING = 7


Param = tuple[str, ParamType, StatValue]

STATS_GROUPS: dict[int, StatGroup] = {
    1: "state",
    2: "cpu-total",
    4: "balloon",
    8: "vcpu",
    16: "interface",
    32: "block",
}
"""``virDomainStatsTypes`` bits the gateway answers (perf, iothread, memory bandwidth,
dirty rate and vm are not a container's)."""
STATS_FILTERS = 1 | 2 | 4 | 8 | 16 | 32 | 64 | LIST_OTHER
"""virConnectGetAllDomainStatsFlags' filters: virConnectListAllDomains' first eight."""
STATS_NOWAIT = 1 << 29
STATS_BACKING = 1 << 30
STATS_ENFORCE = 1 << 31
STATS_FLAGS = STATS_FILTERS | STATS_NOWAIT | STATS_BACKING | STATS_ENFORCE
NODE_ALL = -1
"""VIR_NODE_CPU_STATS_ALL_CPUS and VIR_NODE_MEMORY_STATS_ALL_CELLS."""
CPU_TOTAL = -1
ROOT_DISK = "rootfs"
VCPUINFO_MAX = 16384
CPUMAPS_MAX = 8388608

_INT_KEYS = re.compile(r"^(state\.state|state\.reason|vcpu\.\d+\.state|affinity\.cpu)$")
_UINT_KEYS = re.compile(r"(\.count|^vcpu\.current|^vcpu\.maximum)$")


def param_type(key: str, value: StatValue) -> ParamType:
    """The type libvirt gives a stat key: strings for names, int for states, uint for
    counts, unsigned long long for every counter."""
    if isinstance(value, str):
        return ParamType.STRING
    if _INT_KEYS.match(key):
        return ParamType.INT
    if _UINT_KEYS.search(key):
        return ParamType.UINT
    return ParamType.ULLONG


def pack_params(packer: Packer, params: Sequence[Param]) -> None:
    """``remote_typed_param<>``: each field name, its type, and the value."""
    packer.uint32(len(params))
    for field, kind, value in params:
        packer.string(field)
        packer.int32(kind)
        if kind is ParamType.STRING:
            packer.string(str(value))
        elif kind in (ParamType.INT, ParamType.BOOLEAN):
            packer.int32(int(value))
        elif kind is ParamType.UINT:
            packer.uint32(int(value))
        elif kind is ParamType.LLONG:
            packer.int64(int(value))
        else:
            packer.uint64(int(value))


def typed(stats: dict[str, StatValue]) -> list[Param]:
    return [(key, param_type(key, value), value) for key, value in stats.items()]


def _not_running() -> VirtbusError:
    return VirtbusError.of(ErrorCode.OPERATION_INVALID, "domain is not running")


async def domain_stats(
    session: Session, domain: WireDomain, *groups: StatGroup, live: bool = True
) -> dict[str, StatValue]:
    """One domain's stats of ``groups``; with ``live``, OPERATION_INVALID unless the
    domain is running or paused (its files exist only then)."""
    wanted: list[StatGroup] = ["state", *groups] if live else list(groups)
    read = await on_domain(session, domain, GetStats, DomainStats, {"groups": wanted})
    if live and read.stats.get("state.state") not in (DomainState.RUNNING, DomainState.PAUSED):
        raise _not_running()
    return read.stats


# -------------------------------------------------------------- connection --


async def capabilities(session: Session, virttype: str = "docker") -> HostCapabilities:
    result = await session.conn.call(session.target, GetCapabilities, {"virttype": virttype})
    return expect(result, HostCapabilities)


@handles(Proc.CONNECT_GET_CAPABILITIES)
async def get_capabilities(session: Session, args: Unpacker) -> bytes:
    return string((await capabilities(session)).capabilities)


@handles(Proc.CONNECT_GET_DOMAIN_CAPABILITIES)
async def get_domain_capabilities(session: Session, args: Unpacker) -> bytes:
    """For the host's architecture and a domain type the domain XML takes; the
    emulator and machine are the engine's, whatever the client names."""
    text = lambda: args.string(STRING_MAX)  # noqa: E731
    args.optional(text)  # emulatorbin
    arch = args.optional(text)
    args.optional(text)  # machine
    virttype = args.optional(text) or "docker"
    check_flags(args.uint32(), 0, "virConnectGetDomainCapabilities")
    if virttype not in ("docker", "lxc"):
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"unknown virttype: {virttype}")
    info = await session.conn.host_info(session.target)
    if arch is not None and arch != info.arch:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, f"architecture '{arch}' is not supported by this host"
        )
    return string((await capabilities(session, virttype)).domain_capabilities)


@handles(Proc.CONNECT_GET_SYSINFO)
async def get_sysinfo(session: Session, args: Unpacker) -> bytes:
    check_flags(args.uint32(), 0, "virConnectGetSysinfo")
    return string((await capabilities(session)).sysinfo)


@handles(Proc.CONNECT_GET_MAX_VCPUS)
async def get_max_vcpus(session: Session, args: Unpacker) -> bytes:
    args.optional(lambda: args.string(STRING_MAX))
    return ints((await session.conn.host_info(session.target)).cpus)


async def node(session: Session) -> NodeStats:
    return expect(await session.conn.call(session.target, GetNodeStats), NodeStats)


def _node_params(stats: dict[str, int], nparams: int) -> bytes:
    """``remote_node_get_*_stats_ret``: with ``nparams`` 0, only how many there are."""
    fields = list(stats.items())[: max(nparams, 0)] if nparams else []
    packer = Packer()
    packer.uint32(len(fields))
    for field, value in fields:
        packer.string(field)
        packer.uint64(value)
    packer.int32(len(stats) if nparams == 0 else len(fields))
    return packer.data()


@handles(Proc.NODE_GET_CPU_STATS)
async def node_get_cpu_stats(session: Session, args: Unpacker) -> bytes:
    cpu_num = args.int32()
    nparams = args.int32()
    check_flags(args.uint32(), 0, "virNodeGetCPUStats")
    stats = await node(session)
    if cpu_num == NODE_ALL:
        chosen = stats.cpu
    elif 0 <= cpu_num < len(stats.cpus):
        chosen = stats.cpus[cpu_num]
    else:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, "Invalid cpuNum in virHostCPUGetStatsLinux")
    return _node_params(chosen, nparams)


@handles(Proc.NODE_GET_MEMORY_STATS)
async def node_get_memory_stats(session: Session, args: Unpacker) -> bytes:
    """The host's memory, or its one NUMA cell's (total and free, as libvirt gives a
    cell's)."""
    nparams = args.int32()
    cell = args.int32()
    check_flags(args.uint32(), 0, "virNodeGetMemoryStats")
    info = await session.conn.host_info(session.target)
    if cell != NODE_ALL and not (info.nodes == 1 and cell == 0):
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, f"cellNum in virHostMemGetStats must be less than {info.nodes}"
        )
    memory = (await node(session)).memory
    if cell != NODE_ALL:
        memory = {"total": memory["total"], "free": memory["free"]}
    return _node_params(memory, nparams)


@handles(Proc.NODE_GET_FREE_MEMORY)
async def node_get_free_memory(session: Session, args: Unpacker) -> bytes:
    packer = Packer()
    packer.uint64((await node(session)).memory["free"] * 1024)
    return packer.data()


def cpu_map(cpus: Sequence[int], length: int) -> bytes:
    """A libvirt CPU bitmap of ``length`` bytes: bit ``c`` set for each CPU ``c``."""
    bitmap = bytearray(length)
    for cpu in cpus:
        if cpu // 8 < length:
            bitmap[cpu // 8] |= 1 << (cpu % 8)
    return bytes(bitmap)


@handles(Proc.NODE_GET_CPU_MAP)
async def node_get_cpu_map(session: Session, args: Unpacker) -> bytes:
    need_map = args.int32()
    need_online = args.int32()
    check_flags(args.uint32(), 0, "virNodeGetCPUMap")
    cpus = (await session.conn.host_info(session.target)).cpus
    packer = Packer()
    packer.opaque(cpu_map(range(cpus), (cpus + 7) // 8) if need_map else b"")
    packer.uint32(cpus if need_online else 0)
    packer.int32(cpus)
    return packer.data()


# --------------------------------------------------------- domain stats --


def _stats_groups(stats: int, flags: int) -> list[StatGroup]:
    """The groups ``stats`` asks for (0: every group, ``pids`` too); a group the
    gateway lacks is left out, or with ENFORCE_STATS refused as libvirt refuses it."""
    unknown = stats & ~sum(STATS_GROUPS)
    if unknown and flags & STATS_ENFORCE:
        raise VirtbusError.of(
            ErrorCode.ARGUMENT_UNSUPPORTED,
            f"Stats types bits 0x{unknown:x} are not supported by this daemon",
        )
    if stats == 0:
        return []
    return [group for bit, group in STATS_GROUPS.items() if stats & bit]


def _record(packer: Packer, read: DomainStats, wire: WireDomain) -> None:
    wire.pack(packer)
    pack_params(packer, typed(read.stats))


@handles(Proc.CONNECT_GET_ALL_DOMAIN_STATS)
async def get_all_domain_stats(session: Session, args: Unpacker) -> bytes:
    """virConnectGetAllDomainStats (no domains given: one bulk bus call, filtered by
    the flags) and virDomainListGetStats (one call per domain given, in that order; a
    domain gone since is left out)."""
    doms = args.array(lambda: read_domain(args), LIST_MAX)
    stats = args.uint32()
    flags = args.uint32()
    check_flags(flags, STATS_FLAGS, "virConnectGetAllDomainStats")
    groups = _stats_groups(stats, flags)
    if doms:
        reads = await asyncio.gather(
            *(_one(session, dom, groups) for dom in doms), return_exceptions=False
        )
        found = [read for read in reads if read is not None]
    else:
        found = await _bulk(session, groups, flags)
    packer = Packer()
    packer.uint32(len(found))
    for read in found:
        _record(packer, read, WireDomain(read.domain.name, read.domain.uuid, read.domain.id))
    return packer.data()


async def _one(session: Session, dom: WireDomain, groups: list[StatGroup]) -> DomainStats | None:
    try:
        return await on_domain(session, dom, GetStats, DomainStats, {"groups": groups})
    except VirtbusError as error:
        if error.code is ErrorCode.NO_DOMAIN:
            return None
        raise


async def _bulk(session: Session, groups: list[StatGroup], flags: int) -> list[DomainStats]:
    """The agent filters by every flag but OTHER (crashed, in shutdown...), which is
    filtered here by each record's state, read for it."""
    by_state = flags & (16 | 32 | 64 | LIST_OTHER) if flags & LIST_OTHER else 0
    asked: list[ListFlag] = [
        name for bit, name in LIST_FLAGS.items() if flags & bit & ~by_state & STATS_FILTERS
    ]
    reading = list(groups)
    if by_state and groups and "state" not in groups:
        reading.append("state")
    result = await session.conn.call(
        session.target, GetAllDomainStats, {"groups": reading, "flags": asked}
    )
    records = expect(result, DomainStatsList).records
    if not by_state:
        return records
    states = set().union(*(group for bit, group in STATE_FLAGS.items() if by_state & bit))
    kept = [r for r in records if r.stats.get("state.state") in states]
    if reading == groups:
        return kept
    return [
        r.model_copy(
            update={"stats": {k: v for k, v in r.stats.items() if not k.startswith("state.")}}
        )
        for r in kept
    ]


MEMORY_TAGS = {
    "balloon.swap_in": 0,
    "balloon.swap_out": 1,
    "balloon.major_fault": 2,
    "balloon.minor_fault": 3,
    "balloon.unused": 4,
    "balloon.available": 5,
    "balloon.current": 6,
    "balloon.rss": 7,
    "balloon.usable": 8,
    "balloon.last-update": 9,
    "balloon.disk_caches": 10,
}
"""``virDomainMemoryStatTags`` by the balloon key they come from (ACTUAL_BALLOON is
``balloon.current``)."""


@handles(Proc.DOMAIN_MEMORY_STATS)
async def memory_stats(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    most = args.uint32()
    check_flags(args.uint32(), 0, "virDomainMemoryStats")
    stats = await domain_stats(session, domain, "balloon")
    tags = [(tag, int(stats[key])) for key, tag in MEMORY_TAGS.items() if key in stats][:most]
    packer = Packer()
    packer.uint32(len(tags))
    for tag, value in tags:
        packer.int32(tag)
        packer.uint64(value)
    return packer.data()


async def block_counters(session: Session, domain: WireDomain, path: str) -> dict[str, int]:
    """The domain's one disk, by its name or by the empty path (libvirt's sum of all
    disks): requests and bytes read and written."""
    if path not in ("", ROOT_DISK):
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"invalid path: {path}")
    stats = await domain_stats(session, domain, "block")
    return {
        key: int(stats.get(f"block.0.{key}", 0))
        for key in ("rd.reqs", "rd.bytes", "wr.reqs", "wr.bytes")
    }


@handles(Proc.DOMAIN_BLOCK_STATS)
async def block_stats(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    counters = await block_counters(session, domain, args.string(STRING_MAX))
    packer = Packer()
    for key in ("rd.reqs", "rd.bytes", "wr.reqs", "wr.bytes"):
        packer.int64(counters[key])
    packer.int64(-1)  # errs: not counted
    return packer.data()


BLOCK_FIELDS = {
    "rd_operations": "rd.reqs",
    "rd_bytes": "rd.bytes",
    "wr_operations": "wr.reqs",
    "wr_bytes": "wr.bytes",
}


@handles(Proc.DOMAIN_BLOCK_STATS_FLAGS)
async def block_stats_flags(session: Session, args: Unpacker) -> bytes:
    """With ``nparams`` 0, how many fields there are; else up to ``nparams`` of them."""
    domain = read_domain(args)
    path = args.string(STRING_MAX)
    nparams = args.int32()
    check_flags(args.uint32(), 0, "virDomainBlockStatsFlags")
    counters = await block_counters(session, domain, path)
    params = [(field, ParamType.LLONG, counters[key]) for field, key in BLOCK_FIELDS.items()][
        : max(nparams, 0)
    ]
    packer = Packer()
    pack_params(packer, params)
    packer.int32(len(BLOCK_FIELDS) if nparams == 0 else len(params))
    return packer.data()


@handles(Proc.DOMAIN_INTERFACE_STATS)
async def interface_stats(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    device = args.string(STRING_MAX)
    stats = await domain_stats(session, domain, "interface")
    count = int(stats.get("net.count", 0))
    index = next((i for i in range(count) if stats.get(f"net.{i}.name") == device), None)
    if index is None:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"'{device}' is not a known interface")
    packer = Packer()
    for direction in ("rx", "tx"):
        for counter in ("bytes", "pkts", "errs", "drop"):
            packer.int64(int(stats[f"net.{index}.{direction}.{counter}"]))
    return packer.data()


TOTAL_FIELDS = {"cpu_time": "cpu.time", "user_time": "cpu.user", "system_time": "cpu.system"}


@handles(Proc.DOMAIN_GET_CPU_STATS)
async def get_cpu_stats(session: Session, args: Unpacker) -> bytes:
    """virDomainGetCPUStats as libvirtd answers it: ``nparams`` and ``ncpus`` 0 ask for
    the number of host CPUs, ``nparams`` 0 for the number of fields; ``start_cpu`` -1
    for the totals (cpu, user and system time), else ``cpu_time`` per host CPU, packed
    CPU after CPU."""
    domain = read_domain(args)
    nparams = args.uint32()
    start_cpu = args.int32()
    ncpus = args.uint32()
    check_flags(args.uint32(), 0, "virDomainGetCPUStats")
    if start_cpu == CPU_TOTAL:
        stats = await domain_stats(session, domain, "cpu-total")
        fields = [(f, ParamType.ULLONG, stats[k]) for f, k in TOTAL_FIELDS.items()]
        return _cpu_stats([fields], nparams)
    stats = await domain_stats(session, domain, "percpu")
    if "percpu.count" not in stats:
        raise VirtbusError.of(
            ErrorCode.NO_SUPPORT, "per-CPU statistics need the cgroup v1 cpuacct controller"
        )
    count = int(stats["percpu.count"])
    if nparams == 0 and ncpus == 0:
        return _cpu_stats([], 0, count)
    if start_cpu < 0 or start_cpu >= count:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, f"start_cpu {start_cpu} larger than maximum of {count - 1}"
        )
    chosen = range(start_cpu, min(start_cpu + ncpus, count))
    per_cpu = [[("cpu_time", ParamType.ULLONG, stats[f"percpu.{cpu}.time"])] for cpu in chosen]
    return _cpu_stats(per_cpu, nparams)


def _cpu_stats(per_cpu: list[list[Param]], nparams: int, answer: int | None = None) -> bytes:
    width = len(per_cpu[0]) if per_cpu else 0
    packer = Packer()
    if nparams == 0:
        pack_params(packer, [])
        packer.int32(width if answer is None else answer)
        return packer.data()
    taken = min(nparams, width)
    pack_params(packer, [param for cpu in per_cpu for param in cpu[:taken]])
    packer.int32(taken)
    return packer.data()


@handles(Proc.DOMAIN_GET_VCPUS)
async def get_vcpus(session: Session, args: Unpacker) -> bytes:
    """Each vCPU running (or offline, paused) with an even share of the CPU time, on
    the host CPU the domain last ran on, with the domain's cpuset as its affinity."""
    domain = read_domain(args)
    most = args.int32()
    maplen = args.int32()
    if not 0 <= most <= VCPUINFO_MAX or maplen < 0 or most * maplen > CPUMAPS_MAX:
        raise VirtbusError.of(ErrorCode.RPC, "maxinfo or maplen out of bounds")
    stats = await domain_stats(session, domain, "vcpu", "affinity")
    vcpus = min(int(stats["vcpu.current"]), most)
    cpus = _cpus(str(stats.get("affinity.cpuset", "")))
    packer = Packer()
    packer.uint32(vcpus)
    for number in range(vcpus):
        packer.uint32(number)
        packer.int32(int(stats.get(f"vcpu.{number}.state", 0)))
        packer.uint64(int(stats.get(f"vcpu.{number}.time", 0)))
        packer.int32(int(stats.get("affinity.cpu", -1)))
    packer.opaque(cpu_map(cpus, maplen) * most)
    return packer.data()


def _cpus(text: str) -> list[int]:
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


@handles(Proc.DOMAIN_GET_MAX_VCPUS)
async def get_max_vcpus_of(session: Session, args: Unpacker) -> bytes:
    info = await on_domain(session, read_domain(args), GetInfo, DomainInfo)
    return ints(info.nr_virt_cpu)


@handles(Proc.DOMAIN_SET_MAX_MEMORY)
async def set_max_memory(session: Session, args: Unpacker) -> bytes:
    """A container's maximum and current memory are its one limit: as setmem, in the
    current definition."""
    domain = read_domain(args)
    memory_kib = args.uint64()
    await set_tuning(session, domain, 0, {"memory_kib": memory_kib})
    return b""


# ------------------------------------------------------------------ tuning --


SCHEDULER = "posix"
"""What libvirt's LXC driver calls the CFS scheduler of a container's cgroup."""
MEMORY_PARAM_UNLIMITED = 9007199254740991  # VIR_DOMAIN_MEMORY_PARAM_UNLIMITED
TUNING_FLAGS = AFFECT_ALL | 4  # and TYPED_PARAM_STRING_OKAY
SCHEDULER_PARAMETERS_MAX = 16  # remote_protocol.x REMOTE_DOMAIN_SCHEDULER_PARAMETERS_MAX
MEMORY_PARAMETERS_MAX = 16  # remote_protocol.x REMOTE_DOMAIN_MEMORY_PARAMETERS_MAX


async def _tuning(session: Session, domain: WireDomain, flags: int) -> DomainTuning:
    return await on_domain(session, domain, GetTuning, DomainTuning, affect(flags))


def _scheduler_params(tuning: DomainTuning) -> list[Param]:
    """cpu_shares, and the CFS period and quota where the kernel controls bandwidth."""
    params: list[Param] = [("cpu_shares", ParamType.ULLONG, tuning.cpu_shares)]
    if tuning.vcpu_period is not None and tuning.vcpu_quota is not None:
        params.append(("vcpu_period", ParamType.ULLONG, tuning.vcpu_period))
        params.append(("vcpu_quota", ParamType.LLONG, tuning.vcpu_quota))
    return params


def _memory_params(tuning: DomainTuning) -> list[Param]:
    limits = (
        ("hard_limit", tuning.hard_limit_kib),
        ("soft_limit", tuning.soft_limit_kib),
        ("swap_hard_limit", tuning.swap_hard_limit_kib),
    )
    return [
        (name, ParamType.ULLONG, MEMORY_PARAM_UNLIMITED if kib is None else kib)
        for name, kib in limits
    ]


def _count(args: Unpacker, most: int) -> int:
    wanted = args.int32()
    if wanted > most:
        raise VirtbusError.of(ErrorCode.INTERNAL_ERROR, "nparams too large")
    if wanted < 0:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, "nparams must be non-negative")
    return wanted


@handles(Proc.DOMAIN_GET_SCHEDULER_TYPE)
async def get_scheduler_type(session: Session, args: Unpacker) -> bytes:
    params = _scheduler_params(await _tuning(session, read_domain(args), 0))
    packer = Packer()
    packer.string(SCHEDULER)
    packer.int32(len(params))
    return packer.data()


@handles(Proc.DOMAIN_GET_SCHEDULER_PARAMETERS, Proc.DOMAIN_GET_SCHEDULER_PARAMETERS_FLAGS)
async def get_scheduler_parameters(session: Session, args: Unpacker) -> bytes:
    """cpu_shares, vcpu_period, vcpu_quota, as libvirt's LXC driver: the cgroup's while
    the domain runs (or with AFFECT_LIVE), the definition's otherwise."""
    domain = read_domain(args)
    wanted = _count(args, SCHEDULER_PARAMETERS_MAX)
    flags = flags_of(args, Proc.DOMAIN_GET_SCHEDULER_PARAMETERS_FLAGS)
    check_flags(flags, TUNING_FLAGS, "virDomainGetSchedulerParametersFlags")
    if not wanted:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, f"nparams in {access_api()} must be greater than zero"
        )
    params = _scheduler_params(await _tuning(session, domain, flags))
    packer = Packer()
    pack_params(packer, params[:wanted])
    return packer.data()


@handles(Proc.DOMAIN_GET_MEMORY_PARAMETERS)
async def get_memory_parameters(session: Session, args: Unpacker) -> bytes:
    """hard_limit, soft_limit, swap_hard_limit in KiB; asked for none, how many there
    are (libvirt's two calls)."""
    domain = read_domain(args)
    wanted = _count(args, MEMORY_PARAMETERS_MAX)
    flags = args.uint32()
    check_flags(flags, TUNING_FLAGS, "virDomainGetMemoryParameters")
    params = _memory_params(await _tuning(session, domain, flags))
    packer = Packer()
    pack_params(packer, params[:wanted])
    packer.int32(min(wanted, len(params)) if wanted else len(params))
    return packer.data()


TypedValue = int | float | str


def unpack_params(args: Unpacker, most: int) -> list[tuple[str, ParamType, TypedValue]]:
    """``remote_typed_param<>``: each field name, its type, and the value."""

    def one() -> tuple[str, ParamType, TypedValue]:
        field = args.string(STRING_MAX)
        kind = args.int32()
        value: TypedValue
        if kind in (ParamType.INT, ParamType.BOOLEAN):
            value = args.int32()
        elif kind == ParamType.UINT:
            value = args.uint32()
        elif kind == ParamType.LLONG:
            value = args.int64()
        elif kind == ParamType.ULLONG:
            value = args.uint64()
        elif kind == ParamType.DOUBLE:
            value = float(struct.unpack(">d", args.fixed_opaque(8))[0])
        elif kind == ParamType.STRING:
            value = args.string(STRING_MAX)
        else:
            raise VirtbusError.of(ErrorCode.RPC, f"unknown parameter type {kind}")
        return field, ParamType(kind), value

    return args.array(one, most)


def validated(
    params: list[tuple[str, ParamType, TypedValue]], known: dict[str, ParamType]
) -> dict[str, int]:
    """libvirt's virTypedParamsValidate: every parameter one the call knows, of its type,
    given once."""
    values: dict[str, int] = {}
    for name, kind, value in params:
        if name in values:
            raise VirtbusError.of(
                ErrorCode.INVALID_ARG, f"parameter '{name}' occurs multiple times"
            )
        if name not in known:
            raise VirtbusError.of(
                ErrorCode.ARGUMENT_UNSUPPORTED, f"parameter '{name}' not supported"
            )
        if kind != known[name] or not isinstance(value, int):
            raise VirtbusError.of(
                ErrorCode.INVALID_ARG,
                f"invalid type '{kind.name.lower()}' for parameter '{name}', "
                f"expected '{known[name].name.lower()}'",
            )
        values[name] = value
    return values


SCHEDULER_PARAMS = {
    "cpu_shares": ParamType.ULLONG,
    "vcpu_period": ParamType.ULLONG,
    "vcpu_quota": ParamType.LLONG,
}


@handles(Proc.DOMAIN_SET_SCHEDULER_PARAMETERS, Proc.DOMAIN_SET_SCHEDULER_PARAMETERS_FLAGS)
async def set_scheduler_parameters(session: Session, args: Unpacker) -> bytes:
    """``cpu_shares``; the CFS period and quota are the domain's vCPU count, which
    setvcpus sets."""
    domain = read_domain(args)
    params = unpack_params(args, SCHEDULER_PARAMETERS_MAX)
    flags = flags_of(args, Proc.DOMAIN_SET_SCHEDULER_PARAMETERS_FLAGS)
    check_flags(flags, AFFECT_ALL, "virDomainSetSchedulerParametersFlags")
    values = validated(params, SCHEDULER_PARAMS)
    for name in ("vcpu_period", "vcpu_quota"):
        if name in values:
            raise VirtbusError.of(
                ErrorCode.NO_SUPPORT,
                f"scheduler parameter '{name}' on a virtbus host: a domain's CPU bandwidth "
                "is its vCPU count (setvcpus)",
            )
    await _set_or_look_up(session, domain, flags, values)
    return b""


MEMORY_PARAMS = {
    "hard_limit": ParamType.ULLONG,
    "soft_limit": ParamType.ULLONG,
    "swap_hard_limit": ParamType.ULLONG,
}
MEMORY_FIELDS = {
    "hard_limit": "memory_kib",
    "soft_limit": "soft_limit_kib",
    "swap_hard_limit": "swap_hard_limit_kib",
}


@handles(Proc.DOMAIN_SET_MEMORY_PARAMETERS)
async def set_memory_parameters(session: Session, args: Unpacker) -> bytes:
    """``hard_limit`` is the domain's memory, as setmem sets it; the three limits change
    in one step, so they may be given in any order. A limit can be changed, not removed:
    ``unlimited`` is NO_SUPPORT."""
    domain = read_domain(args)
    params = unpack_params(args, MEMORY_PARAMETERS_MAX)
    flags = args.uint32()
    check_flags(flags, AFFECT_ALL, "virDomainSetMemoryParameters")
    values = validated(params, MEMORY_PARAMS)
    for name, kib in values.items():
        if kib >= MEMORY_PARAM_UNLIMITED:
            raise VirtbusError.of(
                ErrorCode.NO_SUPPORT, f"a {name} of unlimited on a virtbus host: give a size"
            )
    changes = {MEMORY_FIELDS[name]: kib for name, kib in values.items()}
    await _set_or_look_up(session, domain, flags, changes)
    return b""


async def _set_or_look_up(
    session: Session, domain: WireDomain, flags: int, changes: dict[str, int]
) -> None:
    """No parameter changes nothing, for a domain that exists (as libvirt answers)."""
    if changes:
        await set_tuning(session, domain, flags, changes)
    else:
        await on_domain(session, domain, Lookup, DomainRecord)
