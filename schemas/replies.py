"""Replies: success with a typed result, or a libvirt error."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SerializeAsAny, field_validator

from schemas.base import WIRE_VERSION, HostName, Timestamp, WireModel
from schemas.codes import ErrorCode
from schemas.domain import DomainRecord, State, reason_enum
from schemas.events import DomainRef
from schemas.network import NetworkRecord
from schemas.storage import (
    PoolList,
    PoolRecord,
    SnapshotList,
    SnapshotRecord,
    VolumeList,
    VolumeRecord,
)


class ErrorBody(WireModel):
    code: str
    vir_error: int
    message: str

    @classmethod
    def of(cls, code: ErrorCode, message: str) -> ErrorBody:
        return cls(code=code.name, vir_error=int(code), message=message)


class DomainList(WireModel):
    domains: list[DomainRecord]


class DomainInfo(WireModel):
    """virDomainGetInfo."""

    state: State
    max_mem_kib: int
    memory_kib: int
    nr_virt_cpu: int
    cpu_time_ns: int


class DomainTuning(WireModel):
    """The CPU scheduler's ``cpu_shares`` (the cgroup's relative weight), ``vcpu_period``
    and ``vcpu_quota`` (µs; a quota of -1: none; both None: the host's kernel has no CPU
    bandwidth control), and the memory limits in KiB (None: unlimited;
    ``swap_hard_limit`` counts memory and swap together, as libvirt's)."""

    cpu_shares: int
    vcpu_period: int | None = None
    vcpu_quota: int | None = None
    hard_limit_kib: int | None = None
    soft_limit_kib: int | None = None
    swap_hard_limit_kib: int | None = None


class DomainStateInfo(WireModel):
    """virDomainGetState."""

    state: State
    reason: int

    _reason = field_validator("reason")(reason_enum)


class DomainCounts(WireModel):
    total: int
    active: int
    inactive: int
    persistent: int
    transient: int


class HostInfo(WireModel):
    """The host, as virNodeGetInfo and virConnectGetHostname/GetVersion see it:
    ``arch`` is libvirt's CPU model field, ``cpu_model`` the processor's name."""

    hostname: HostName
    groups: list[str]
    cpus: int
    memory_kib: int
    engine_version: str
    agent_version: str
    heartbeat_s: float
    domains: DomainCounts
    arch: str = ""
    cpu_model: str = ""
    mhz: int = 0
    nodes: int = 1
    sockets: int = 1
    cores: int = 1
    threads: int = 1


StatValue = int | str


class DomainStats(WireModel):
    """One domain's statistics, read at ``time``: libvirt's keys and units (ns of CPU
    time, KiB of memory, bytes and requests of I/O), flat, as virDomainStatsRecord's
    typed parameters. Counters are cumulative: rates are differences over ``time``."""

    domain: DomainRef
    time: Timestamp
    stats: dict[str, StatValue]


class DomainStatsList(WireModel):
    """virConnectGetAllDomainStats' records, one per domain (``records``, not
    ``domains``: an empty list must not read as a DomainList)."""

    records: list[DomainStats]


class HostCapabilities(WireModel):
    """virConnectGetCapabilities, virConnectGetDomainCapabilities and
    virConnectGetSysinfo: three XML documents."""

    capabilities: str
    domain_capabilities: str
    sysinfo: str


class NodeStats(WireModel):
    """virNodeGetMemoryStats (KiB: total, free, buffers, cached) and virNodeGetCPUStats
    (ns: kernel, user, idle, iowait) for all CPUs and for each, read at ``time``."""

    time: Timestamp
    memory: dict[str, int]
    cpu: dict[str, int]
    cpus: list[dict[str, int]]


class Pong(WireModel):
    host: HostName
    time: Timestamp


class DomainXml(WireModel):
    """virDomainGetXMLDesc: the domain's libvirt domain XML; also the XML of a storage
    pool, a volume or a snapshot (their GetXMLDesc)."""

    xml: str


class NetworkList(WireModel):
    networks: list[NetworkRecord]


class NetworkXml(WireModel):
    """virNetworkGetXMLDesc: the network's libvirt network XML."""

    network_xml: str


class DhcpLease(WireModel):
    """virNetworkDHCPLease: an address Docker's IPAM gave a domain on the network."""

    iface: str
    expiry_time: int
    """Seconds since the epoch; 0: the address is the domain's while it stays joined."""
    type: int
    """``virIPAddrType``: 0 IPv4, 1 IPv6."""
    mac: str | None
    ipaddr: str
    prefix: int
    hostname: str | None
    client_id: str | None = None


class DhcpLeases(WireModel):
    leases: list[DhcpLease]


class IpAddress(WireModel):
    type: int
    """``virIPAddrType``: 0 IPv4, 1 IPv6."""
    addr: str
    prefix: int


class DomainInterface(WireModel):
    """virDomainInterface: one interface with its addresses."""

    name: str
    hwaddr: str | None
    addrs: list[IpAddress]


class DomainInterfaces(WireModel):
    interfaces: list[DomainInterface]


class DeviceChange(WireModel):
    """A device attached or detached: where the change took effect. ``live`` false means
    the running domain is unchanged and the device comes or goes at its next start."""

    domain: DomainRecord
    alias: str
    live: bool
    config: bool


class Done(WireModel):
    """The result of an op that has nothing to return."""


class Metadata(WireModel):
    """virDomainGetMetadata: the description, the title, or the namespace's element (as
    XML, without the namespace)."""

    metadata: str


class ConsoleOutput(WireModel):
    """The end of a domain's console output; ``truncated`` when there was more."""

    output: str
    truncated: bool


class ConsoleSession(WireModel):
    """An open console: ``queue`` is the agent's end of the stream, where the caller
    sends its input; frames are at most ``max_frame`` bytes and at most ``window`` data
    frames travel unacknowledged in each direction (docs/console-metadata.md)."""

    session: str
    queue: str
    max_frame: int
    window: int
    idle_timeout_s: float


Result = (
    DomainRecord
    | DomainList
    | DomainInfo
    | DomainTuning
    | DomainStateInfo
    | HostInfo
    | Pong
    | DomainXml
    | Done
    | DomainStats
    | DomainStatsList
    | HostCapabilities
    | NodeStats
    | NetworkRecord
    | NetworkList
    | NetworkXml
    | DhcpLeases
    | DomainInterfaces
    | DeviceChange
    | Done
    | PoolRecord
    | PoolList
    | VolumeRecord
    | VolumeList
    | SnapshotRecord
    | SnapshotList
    | Metadata
    | ConsoleOutput
    | ConsoleSession
)


class Reply(WireModel):
    v: Literal[1] = WIRE_VERSION
    id: str
    host: HostName
    ok: bool
    # serialized as the model it holds, not matched against every member of the union
    # again (half the encoding of a bulk statistics reply)
    result: SerializeAsAny[Result] | None = None
    error: ErrorBody | None = Field(default=None)
