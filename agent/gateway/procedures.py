"""Each remote procedure the gateway answers, as calls on the virtbus client library.

A handler reads its ``remote_*_args`` from the payload and returns its ``remote_*_ret``
packed. It raises ``VirtbusError`` to answer an error, which carries the agent's libvirt
code and message as they came; a procedure not in ``HANDLERS`` gets NO_SUPPORT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

from agent.client import Connection, VirtbusError
from agent.gateway.acl import BEFORE_AUTH, access
from agent.gateway.authz import Grant, Policy
from agent.gateway.identity import Identity
from agent.gateway.protocol import (
    RPC_ERROR,
    STRING_MAX,
    UUID_BYTES,
    CallError,
    Proc,
    WireDomain,
)
from agent.gateway.sasl import SaslLogin
from agent.gateway.xdr import Packer, Unpacker, XdrError
from schemas.base import HostName
from schemas.codes import DomainState, ErrorCode
from schemas.commands import (
    CommandBase,
    Create,
    CreateXml,
    Define,
    Destroy,
    GetHostInfo,
    GetInfo,
    GetState,
    GetTuning,
    GetXmlDesc,
    ListDomains,
    ListFlag,
    Lookup,
    Ping,
    Reboot,
    Rename,
    Resume,
    SetAutostart,
    SetTuning,
    Shutdown,
    Suspend,
    Undefine,
)
from schemas.domain import DomainRecord
from schemas.replies import (
    DomainInfo,
    DomainList,
    DomainStateInfo,
    DomainTuning,
    DomainXml,
    HostInfo,
    Result,
)

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Result)
DRIVER = "virtbus"
CONNECT_RO = 1
OS_TYPE = "exe"
CONNECTION_TYPE = "virtbus"
OPEN_TIMEOUT_S = 5.0
LIBVIRT_API = "9.0.0"
"""The libvirt release whose remote protocol and API semantics the gateway implements
(the level clients gate features on), answered by virConnectGetLibVersion."""
HOST_NAME: TypeAdapter[str] = TypeAdapter(HostName)
LISTED_STATE_S = 2.0
"""How long a state a listing brought may answer a virDomainGetState (see
``Session.listed_state``)."""


class Feature(IntEnum):
    """``virDrvFeature`` values the gateway says yes to."""

    PROGRAM_KEEPALIVE = 10
    REMOTE_CLOSE_CALLBACK = 14
    REMOTE_EVENT_CALLBACK = 15


SUPPORTED_FEATURES = frozenset(Feature)

# virConnectListAllDomainsFlags, by group: the groups are ANDed, the flags in one ORed
LIST_FLAGS: dict[int, ListFlag] = {
    1: "active",
    2: "inactive",
    4: "persistent",
    8: "transient",
    16: "running",
    32: "paused",
    64: "shutoff",
    1024: "autostart",
    2048: "no_autostart",
    4096: "has_snapshot",
    8192: "no_snapshot",
}
LIST_OTHER = 128
LIST_STATES = 16 | 32 | 64 | LIST_OTHER
# managed save, checkpoints: no virtbus domain has any
LIST_HAS_PAIRS = ((256, 512), (16384, 32768))
LIST_HAS_NONE = 256 | 16384
LIST_HAS_NONE_NOT = 512 | 32768
# with a snapshot or without one: libvirt ORs the two, which is every domain
LIST_SNAPSHOT_EITHER = 4096 | 8192
STATE_FLAGS = {
    16: {DomainState.RUNNING},
    32: {DomainState.PAUSED},
    64: {DomainState.SHUTOFF},
    LIST_OTHER: set(DomainState) - {DomainState.RUNNING, DomainState.PAUSED, DomainState.SHUTOFF},
}

START_PAUSED = 1
START_FORCE_BOOT = 8
SHUTDOWN_MODES = 4 | 8  # INITCTL, SIGNAL: what a container's init can be sent
UNDEFINE_ALL = 1 | 2 | 4 | 8 | 16 | 32 | 64  # nothing extra to remove but snapshots
UNDEFINE_SNAPSHOTS_METADATA = 2
GET_XML_SECURE = 1
GET_XML_INACTIVE = 2
GET_XML_MIGRATABLE = 8
GET_XML_ALL = 1 | 2 | 4 | 8
DEFINE_VALIDATE = 1
AFFECT_LIVE, AFFECT_CONFIG = 1, 2
AFFECT_ALL = AFFECT_LIVE | AFFECT_CONFIG
MEMORY_ALL = AFFECT_ALL | 4  # MAXIMUM: a container's memory is its limit
VCPUS_ALL = AFFECT_ALL | 4


class Stream(Protocol):
    """A stream a call opened (a console): the client's STREAM packets go to it."""

    async def packet(self, status: int, payload: bytes) -> None: ...
    async def close(self) -> None:
        """The client is gone: end the stream on every side."""
        ...


@dataclass
class Call:
    """The call being answered: the server sets it before its handler runs."""

    procedure: int
    api: str
    args: Unpacker
    forwarded: bool = False
    serial: int = 0


CALL: ContextVar[Call | None] = ContextVar("call", default=None)


def access_api() -> str:
    """The libvirt function of the call being answered, for its errors."""
    call = CALL.get()
    return call.api if call is not None else "?"


def session_procedure() -> int:
    """The number of the procedure being answered (for a handler of several)."""
    call = CALL.get()
    return call.procedure if call is not None else 0


@dataclass(eq=False)
class Session:
    """One libvirt client's connection: who it is, the host its URI named, what it may
    do there, and its callbacks.

    ``identity`` starts anonymous (or x509 from a verified certificate); an
    authentication procedure sets it with ``login`` once the client has proved who it
    is. ``needs_login`` (set by the server when the gateway requires a login) keeps
    every procedure but the authentication ones refused until then."""

    bus: Connection
    send: Callable[[bytes], Awaitable[None]]
    changed: Callable[[], None] = lambda: None
    identity: Identity = field(default_factory=lambda: Identity.anonymous("unknown"))
    policy: Policy | None = None
    max_callbacks: int = 128
    needs_login: bool = False
    on_login: Callable[[], None] = lambda: None
    on_open: Callable[[], None] = lambda: None
    on_keepalive: Callable[[], None] = lambda: None
    host: str | None = None
    read_only: bool = False
    grant: Grant | None = None
    callbacks: set[int] = field(default_factory=set)
    streams: dict[int, Stream] = field(default_factory=dict)
    """The streams this client opened, by the serial of the call that opened each."""
    sasl: SaslLogin | None = None
    """The SASL login in progress, when the gateway requires one."""
    listed: dict[uuid.UUID, tuple[float, int, int]] = field(default_factory=dict)
    """The states the last listing brought, by domain: when, state, reason."""

    def remember_listing(self, found: list[DomainRecord]) -> None:
        at = time.monotonic()
        self.listed = {record.uuid: (at, record.state, record.reason) for record in found}

    def listed_state(self, domain: uuid.UUID) -> tuple[int, int] | None:
        """The state (and reason) the last listing brought for ``domain``, once, and
        only within LISTED_STATE_S of the listing and before any call of this client
        that may change something. ``virsh list`` asks each listed domain's state right
        after the listing: those answers come from the listing, not from a bus round
        trip each, and are as old as the listing (libvirtd would read each a moment
        later)."""
        entry = self.listed.pop(domain, None)
        if entry is None or time.monotonic() - entry[0] > LISTED_STATE_S:
            return None
        return entry[1], entry[2]

    def login(self, identity: Identity) -> None:
        """The hook for authentication: the client proved it is ``identity``."""
        self.identity = identity
        self.needs_login = False
        self.on_login()

    @property
    def conn(self) -> Connection:
        """The bus, for the call being answered only once every one of its arguments is
        decoded (XdrError otherwise): a call with bytes left over has no effect. Each
        call that reaches the bus is logged with the identity that made it."""
        call = CALL.get()
        if call is not None:
            call.args.done()
            if not call.forwarded:
                call.forwarded = True
                log.info(
                    "%s on host %s: %s",
                    self.identity,
                    self.host or "-",
                    call.api,
                    extra={"identity": str(self.identity), "host": self.host, "api": call.api},
                )
        return self.bus

    @property
    def target(self) -> str:
        if self.host is None:
            raise VirtbusError.of(ErrorCode.OPERATION_INVALID, "the connection is not open")
        return self.host

    def require_login(self, procedure: int) -> None:
        """libvirtd's refusal of a call the client may not make before it has logged in
        (``virNetServerProgramDispatchCall``)."""
        if self.needs_login and procedure not in BEFORE_AUTH:
            raise CallError(RPC_ERROR, "authentication required")

    def authorize(self, procedure: int) -> None:
        """libvirtd's checks before a call, once ``require_login`` let it through:
        read-only, then the authorization file (libvirt's access driver)."""
        needed = access(procedure)
        if needed is None:
            raise VirtbusError.of(ErrorCode.ACCESS_DENIED, f"'{DRIVER}' denied access")
        if self.read_only and not needed.read_only:
            raise VirtbusError.of(
                ErrorCode.OPERATION_DENIED, f"read only access prevents {needed.api}"
            )
        if self.policy is not None and self.grant is not None:
            self.require(*needed.permissions, api=needed.api)

    def require(self, *permissions: str, api: str) -> None:
        """ACCESS_DENIED unless the authorization file grants every permission."""
        if self.policy is None:
            return
        refused = [p for p in permissions if self.grant is None or not self.grant.allows(p)]
        if refused:
            log.warning(
                "%s denied %s on host %s: no rule grants %s",
                self.identity,
                api,
                self.host or "-",
                ", ".join(refused),
            )
            raise VirtbusError.of(ErrorCode.ACCESS_DENIED, f"'{DRIVER}' denied access")

    async def stream_packet(self, serial: int, status: int, payload: bytes) -> None:
        """A STREAM packet from the client, for the stream its call ``serial`` opened;
        one for no open stream is dropped, as libvirtd drops it."""
        stream = self.streams.get(serial)
        if stream is not None:
            await stream.packet(status, payload)

    async def close(self) -> None:
        """Free every callback and stream the client left open."""
        while self.streams:
            _, stream = self.streams.popitem()
            await stream.close()
        while self.callbacks:
            callback_id = self.callbacks.pop()
            with contextlib.suppress(VirtbusError):
                await self.bus.domain_event_deregister_any(callback_id)
        self.changed()


# set by the server for each call, once its reply is written: what a handler starts
# must not reach the client before the reply it belongs to
REPLIED: ContextVar[asyncio.Event | None] = ContextVar("replied", default=None)

Handler = Callable[[Session, Unpacker], Awaitable[bytes]]
HANDLERS: dict[Proc, Handler] = {}


def handles(*procedures: Proc) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for procedure in procedures:
            HANDLERS[procedure] = handler
        return handler

    return register


def check_flags(flags: int, allowed: int, function: str) -> None:
    """libvirt's virCheckFlags: a flag the call does not know is INVALID_ARG."""
    if flags & ~allowed:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG,
            f"unsupported flags (0x{flags & ~allowed:x}) in function {function}",
        )


def ints(*values: int) -> bytes:
    packer = Packer()
    for value in values:
        packer.int32(value)
    return packer.data()


def string(text: str) -> bytes:
    packer = Packer()
    packer.string(text)
    return packer.data()


_ARRAY_LENGTH = struct.Struct(">I")


def pack_domains(records: list[DomainRecord]) -> bytes:
    """An array of ``remote_nonnull_domain``, as ``Packer.array`` of ``WireDomain``s
    packs it, in one ``struct.pack`` per domain (a listing may hold thousands)."""
    parts = [_ARRAY_LENGTH.pack(len(records))]
    for record in records:
        name = record.name.encode()
        padded = (len(name) + 3) & ~3
        try:
            parts.append(
                struct.pack(f">I{padded}s16si", len(name), name, record.uuid.bytes, record.id)
            )
        except struct.error:
            raise XdrError(f"domain id {record.id} does not fit in 32 bits") from None
    return b"".join(parts)


def pack_domain(record: DomainRecord | WireDomain) -> bytes:
    packer = Packer()
    wire(record).pack(packer)
    return packer.data()


def wire(record: DomainRecord | WireDomain) -> WireDomain:
    if isinstance(record, WireDomain):
        return record
    return WireDomain(record.name, record.uuid, record.id)


def expect(result: Result, expected: type[R]) -> R:
    if not isinstance(result, expected):
        raise VirtbusError.of(
            ErrorCode.INTERNAL_ERROR, f"the agent answered {type(result).__name__}"
        )
    return result


async def on_domain(
    session: Session,
    domain: WireDomain,
    op: type[CommandBase],
    expected: type[R],
    args: dict[str, Any] | None = None,
) -> R:
    result = await session.conn.call(session.target, op, args, {"uuid": str(domain.uuid)})
    return expect(result, expected)


def read_domain(args: Unpacker) -> WireDomain:
    return WireDomain.unpack(args)


def flags_of(args: Unpacker, flagged: Proc) -> int:
    """The flags of a procedure that shares its handler with a variant without: only
    the ``flagged`` variant's arguments end with them."""
    call = CALL.get()
    return args.uint32() if call is not None and call.procedure == flagged else 0


# ---------------------------------------------------------------- connection --


@handles(Proc.CONNECT_SUPPORTS_FEATURE)
async def supports_feature(session: Session, args: Unpacker) -> bytes:
    """A client asking about keepalive gets pinged from now on, as libvirtd does."""
    feature = args.int32()
    if feature == Feature.PROGRAM_KEEPALIVE:
        session.on_keepalive()
    return ints(feature in SUPPORTED_FEATURES)


@handles(Proc.CONNECT_OPEN)
async def connect_open(session: Session, args: Unpacker) -> bytes:
    """The URI's path names the host: ``virtbus:///h1`` (the client drops the
    transport, server and query). The host must answer within OPEN_TIMEOUT_S, and the
    authorization file (if any) must grant the identity something on it. One open per
    connection, as libvirtd; VIR_CONNECT_RO makes the connection read-only."""
    name = args.optional(lambda: args.string(STRING_MAX)) or ""
    flags = args.uint32()
    args.done()
    if session.host is not None:
        raise VirtbusError.of(ErrorCode.INTERNAL_ERROR, "connection already open")
    try:
        host = HOST_NAME.validate_python(urlsplit(name).path.strip("/"))
    except ValidationError:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG,
            f"the URI {name!r} must name a virtbus host: virtbus+tcp://GATEWAY/HOST",
        ) from None
    grant = None
    if session.policy is not None and session.policy.needs_groups(session.identity):
        info = await session.conn.call(host, GetHostInfo, timeout_s=OPEN_TIMEOUT_S)
        groups = frozenset(expect(info, HostInfo).groups)
    else:
        await session.conn.call(host, Ping, timeout_s=OPEN_TIMEOUT_S)
        groups = frozenset()
    if session.policy is not None:
        grant = session.policy.grant(session.identity, host, groups)
        if grant is None:
            log.warning("%s denied host %s: no rule names both", session.identity, host)
            raise VirtbusError.of(ErrorCode.ACCESS_DENIED, f"'{DRIVER}' denied access")
    session.host = host
    session.grant = grant
    session.read_only = bool(flags & CONNECT_RO)
    session.on_open()
    return b""


@handles(Proc.CONNECT_CLOSE)
async def connect_close(session: Session, args: Unpacker) -> bytes:
    await session.close()
    session.host = None
    return b""


@handles(Proc.CONNECT_REGISTER_CLOSE_CALLBACK, Proc.CONNECT_UNREGISTER_CLOSE_CALLBACK)
async def close_callback(session: Session, args: Unpacker) -> bytes:
    return b""


@handles(Proc.CONNECT_GET_TYPE)
async def get_type(session: Session, args: Unpacker) -> bytes:
    return string(CONNECTION_TYPE)


def version_number(version: str) -> int:
    """libvirt's ``major * 1,000,000 + minor * 1,000 + release`` from ``"24.0.7+dfsg"``."""
    parts = [int(match) for match in re.findall(r"\d+", version)[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2]


@handles(Proc.CONNECT_GET_VERSION)
async def get_version(session: Session, args: Unpacker) -> bytes:
    """The Docker engine's version, as the hypervisor's."""
    info = await session.conn.host_info(session.target)
    packer = Packer()
    packer.uint64(version_number(info.engine_version))
    return packer.data()


@handles(Proc.CONNECT_GET_LIB_VERSION)
async def get_lib_version(session: Session, args: Unpacker) -> bytes:
    """The libvirt API level the gateway implements, as the daemon's (virtbus's own
    version is in host.get_info and the capabilities' emulator)."""
    packer = Packer()
    packer.uint64(version_number(LIBVIRT_API))
    return packer.data()


@handles(Proc.CONNECT_GET_HOSTNAME)
async def get_hostname(session: Session, args: Unpacker) -> bytes:
    info = await session.conn.host_info(session.target)
    return string(info.hostname)


@handles(Proc.NODE_GET_INFO)
async def node_get_info(session: Session, args: Unpacker) -> bytes:
    """The agent's host: its architecture as the model (as libvirt's), its topology
    per NUMA node, or libvirt's fallback (one node, one socket, a core per CPU) when
    the topology does not multiply out to the CPU count."""
    info: HostInfo = await session.conn.host_info(session.target)
    nodes, sockets = info.nodes, max(1, info.sockets // max(1, info.nodes))
    cores, threads = info.cores, info.threads
    if nodes * sockets * cores * threads != info.cpus:
        nodes, sockets, cores, threads = 1, 1, info.cpus, 1
    packer = Packer()
    packer.chars(info.arch[:31], 32)
    packer.uint64(info.memory_kib)
    packer.int32(info.cpus)
    packer.int32(info.mhz)
    for value in (nodes, sockets, cores, threads):
        packer.int32(value)
    return packer.data()


@handles(Proc.NODE_GET_SECURITY_MODEL)
async def node_get_security_model(session: Session, args: Unpacker) -> bytes:
    packer = Packer()
    packer.chars("")  # model
    packer.chars("")  # doi
    return packer.data()


# ----------------------------------------------------------------- listing --


async def records(session: Session, flags: int = 0) -> list[DomainRecord]:
    """The domains libvirt's virConnectListAllDomains flags select. The agent filters
    all but OTHER (crashed, in shutdown...): with it, the states are filtered here."""
    if any(flags & has and not flags & has_not for has, has_not in LIST_HAS_PAIRS):
        return []
    if flags & LIST_SNAPSHOT_EITHER == LIST_SNAPSHOT_EITHER:
        flags &= ~LIST_SNAPSHOT_EITHER
    by_state = flags & LIST_STATES if flags & LIST_OTHER else 0
    asked = [name for bit, name in LIST_FLAGS.items() if flags & bit & ~by_state]
    listed = await session.conn.call(session.target, ListDomains, {"flags": asked})
    found = expect(listed, DomainList).domains
    if by_state:
        states = set().union(*(group for bit, group in STATE_FLAGS.items() if by_state & bit))
        found = [r for r in found if r.state in states]
    return found


@handles(Proc.CONNECT_LIST_ALL_DOMAINS)
async def list_all_domains(session: Session, args: Unpacker) -> bytes:
    need_results = args.int32()
    flags = args.uint32()
    check_flags(
        flags,
        sum(LIST_FLAGS) | LIST_OTHER | LIST_HAS_NONE | LIST_HAS_NONE_NOT,
        "virConnectListAllDomains",
    )
    found = await records(session, flags)
    if need_results:
        session.remember_listing(found)
    return pack_domains(found if need_results else []) + _ARRAY_LENGTH.pack(len(found))


@handles(Proc.CONNECT_NUM_OF_DOMAINS)
async def num_of_domains(session: Session, args: Unpacker) -> bytes:
    return ints(len(await records(session, 1)))


@handles(Proc.CONNECT_LIST_DOMAINS)
async def list_domains(session: Session, args: Unpacker) -> bytes:
    most = args.int32()
    packer = Packer()
    packer.array([r.id for r in await records(session, 1)][:most], packer.int32)
    return packer.data()


@handles(Proc.CONNECT_NUM_OF_DEFINED_DOMAINS)
async def num_of_defined_domains(session: Session, args: Unpacker) -> bytes:
    return ints(len(await records(session, 2)))


@handles(Proc.CONNECT_LIST_DEFINED_DOMAINS)
async def list_defined_domains(session: Session, args: Unpacker) -> bytes:
    most = args.int32()
    packer = Packer()
    packer.array([r.name for r in await records(session, 2)][:most], packer.string)
    return packer.data()


# ----------------------------------------------------------------- lookups --


async def lookup(session: Session, target: dict[str, Any]) -> bytes:
    record = await session.conn.call(session.target, Lookup, target=target)
    return pack_domain(expect(record, DomainRecord))


@handles(Proc.DOMAIN_LOOKUP_BY_NAME)
async def lookup_by_name(session: Session, args: Unpacker) -> bytes:
    return await lookup(session, {"name": args.string(STRING_MAX)})


@handles(Proc.DOMAIN_LOOKUP_BY_UUID)
async def lookup_by_uuid(session: Session, args: Unpacker) -> bytes:
    return await lookup(session, {"uuid": str(uuid.UUID(bytes=args.fixed_opaque(UUID_BYTES)))})


@handles(Proc.DOMAIN_LOOKUP_BY_ID)
async def lookup_by_id(session: Session, args: Unpacker) -> bytes:
    domain_id = args.int32()
    if domain_id <= 0:
        raise VirtbusError.of(ErrorCode.NO_DOMAIN, f"no domain with matching id {domain_id}")
    return await lookup(session, {"id": domain_id})


# ------------------------------------------------------------- domain facts --


async def record_of(session: Session, args: Unpacker) -> DomainRecord:
    return await on_domain(session, read_domain(args), Lookup, DomainRecord)


@handles(Proc.DOMAIN_GET_INFO)
async def get_info(session: Session, args: Unpacker) -> bytes:
    info = await on_domain(session, read_domain(args), GetInfo, DomainInfo)
    packer = Packer()
    packer.uint32(info.state)  # unsigned char: four bytes
    packer.uint64(info.max_mem_kib)
    packer.uint64(info.memory_kib)
    packer.uint32(info.nr_virt_cpu)  # unsigned short: four bytes
    packer.uint64(info.cpu_time_ns)
    return packer.data()


@handles(Proc.DOMAIN_GET_MAX_MEMORY)
async def get_max_memory(session: Session, args: Unpacker) -> bytes:
    info = await on_domain(session, read_domain(args), GetInfo, DomainInfo)
    packer = Packer()
    packer.uint64(info.max_mem_kib)
    return packer.data()


@handles(Proc.DOMAIN_GET_VCPUS_FLAGS)
async def get_vcpus_flags(session: Session, args: Unpacker) -> bytes:
    """The count of the definition the flags name (a container's maximum is its count):
    the running one's, or with AFFECT_CONFIG the persistent one's, whose CFS quota is that
    many periods (none: the host's CPUs)."""
    domain = read_domain(args)
    flags = args.uint32()
    check_flags(flags, VCPUS_ALL, "virDomainGetVcpusFlags")
    if flags & AFFECT_ALL == AFFECT_ALL:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG,
            "Flags 'VIR_DOMAIN_AFFECT_LIVE' and 'VIR_DOMAIN_AFFECT_CONFIG' are mutually exclusive",
        )
    if flags & AFFECT_CONFIG:
        tuning = await on_domain(session, domain, GetTuning, DomainTuning, affect(flags))
        if tuning.vcpu_quota and tuning.vcpu_period:
            return ints(tuning.vcpu_quota // tuning.vcpu_period)
        return ints((await session.conn.host_info(session.target)).cpus)
    info = await on_domain(session, domain, GetInfo, DomainInfo)
    if flags & AFFECT_LIVE and info.state == DomainState.SHUTOFF:
        raise VirtbusError.of(ErrorCode.OPERATION_INVALID, "domain is not running")
    return ints(info.nr_virt_cpu)


@handles(Proc.DOMAIN_GET_STATE)
async def get_state(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    check_flags(args.uint32(), 0, "virDomainGetState")
    listed = session.listed_state(domain.uuid)
    if listed is not None:
        return ints(*listed)
    state = await on_domain(session, domain, GetState, DomainStateInfo)
    return ints(state.state, state.reason)


@handles(Proc.DOMAIN_GET_OS_TYPE)
async def get_os_type(session: Session, args: Unpacker) -> bytes:
    await record_of(session, args)
    return string(OS_TYPE)


@handles(Proc.DOMAIN_IS_ACTIVE)
async def is_active(session: Session, args: Unpacker) -> bytes:
    return ints((await record_of(session, args)).id != -1)


@handles(Proc.DOMAIN_IS_PERSISTENT)
async def is_persistent(session: Session, args: Unpacker) -> bytes:
    return ints((await record_of(session, args)).persistent)


@handles(Proc.DOMAIN_GET_AUTOSTART)
async def get_autostart(session: Session, args: Unpacker) -> bytes:
    return ints((await record_of(session, args)).autostart)


@handles(Proc.DOMAIN_SET_AUTOSTART)
async def set_autostart(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    autostart = args.int32() != 0
    await on_domain(session, domain, SetAutostart, DomainRecord, {"autostart": autostart})
    return b""


@handles(Proc.DOMAIN_HAS_MANAGED_SAVE_IMAGE)
async def none_saved(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    args.uint32()
    await on_domain(session, domain, Lookup, DomainRecord)
    return ints(0)


@handles(Proc.DOMAIN_GET_MESSAGES)
async def get_messages(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    args.uint32()
    await on_domain(session, domain, Lookup, DomainRecord)
    return ints(0)


@handles(Proc.DOMAIN_GET_XML_DESC)
async def get_xml_desc(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    flags = args.uint32()
    check_flags(flags, GET_XML_ALL, "virDomainGetXMLDesc")
    if flags & GET_XML_SECURE and session.read_only:
        raise VirtbusError.of(ErrorCode.OPERATION_DENIED, "virDomainGetXMLDesc with secure flag")
    if flags & (GET_XML_SECURE | GET_XML_MIGRATABLE):
        session.require("domain:read_secure", api="virDomainGetXMLDesc")
    inactive = bool(flags & GET_XML_INACTIVE)
    described = await on_domain(session, domain, GetXmlDesc, DomainXml, {"inactive": inactive})
    return string(described.xml)


# --------------------------------------------------------------- lifecycle --


async def lifecycle(
    session: Session, domain: WireDomain, op: type[CommandBase], **args: Any
) -> DomainRecord:
    return await on_domain(session, domain, op, DomainRecord, args or None)


def affect(flags: int) -> dict[str, bool]:
    """The ``live`` and ``config`` args of VIR_DOMAIN_AFFECT_LIVE and _CONFIG in ``flags``
    (neither: the current definition)."""
    return {"live": bool(flags & AFFECT_LIVE), "config": bool(flags & AFFECT_CONFIG)}


async def set_tuning(
    session: Session, domain: WireDomain, flags: int, changes: dict[str, int]
) -> None:
    """``changes`` in the definitions ``flags`` name."""
    await on_domain(session, domain, SetTuning, DomainRecord, {**affect(flags), **changes})


@handles(Proc.DOMAIN_CREATE)
async def create(session: Session, args: Unpacker) -> bytes:
    await lifecycle(session, read_domain(args), Create)
    return b""


@handles(Proc.DOMAIN_CREATE_WITH_FLAGS)
async def create_with_flags(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    flags = args.uint32()
    check_flags(flags, START_PAUSED | START_FORCE_BOOT, "virDomainCreateWithFlags")
    record = await lifecycle(session, domain, Create, start_paused=bool(flags & START_PAUSED))
    return pack_domain(record)


@handles(Proc.DOMAIN_CREATE_XML)
async def create_xml(session: Session, args: Unpacker) -> bytes:
    xml = args.string(STRING_MAX)
    flags = args.uint32()
    check_flags(flags, START_PAUSED, "virDomainCreateXML")
    result = await session.conn.call(
        session.target,
        CreateXml,
        {"xml": xml, "start_paused": bool(flags & START_PAUSED)},
    )
    return pack_domain(expect(result, DomainRecord))


@handles(Proc.DOMAIN_DEFINE_XML, Proc.DOMAIN_DEFINE_XML_FLAGS)
async def define_xml(session: Session, args: Unpacker) -> bytes:
    xml = args.string(STRING_MAX)
    flags = flags_of(args, Proc.DOMAIN_DEFINE_XML_FLAGS)
    check_flags(flags, DEFINE_VALIDATE, "virDomainDefineXMLFlags")
    result = await session.conn.call(session.target, Define, {"xml": xml})
    return pack_domain(expect(result, DomainRecord))


@handles(Proc.DOMAIN_SHUTDOWN, Proc.DOMAIN_SHUTDOWN_FLAGS)
async def shutdown(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    check_flags(
        flags_of(args, Proc.DOMAIN_SHUTDOWN_FLAGS), SHUTDOWN_MODES, "virDomainShutdownFlags"
    )
    await lifecycle(session, domain, Shutdown, escalate=False)
    return b""


@handles(Proc.DOMAIN_REBOOT)
async def reboot(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    check_flags(args.uint32(), SHUTDOWN_MODES, "virDomainReboot")
    await lifecycle(session, domain, Reboot, escalate=False)
    return b""


@handles(Proc.DOMAIN_DESTROY, Proc.DOMAIN_DESTROY_FLAGS)
async def destroy(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    check_flags(flags_of(args, Proc.DOMAIN_DESTROY_FLAGS), 0, "virDomainDestroyFlags")
    await lifecycle(session, domain, Destroy)
    return b""


@handles(Proc.DOMAIN_SUSPEND)
async def suspend(session: Session, args: Unpacker) -> bytes:
    await lifecycle(session, read_domain(args), Suspend)
    return b""


@handles(Proc.DOMAIN_RESUME)
async def resume(session: Session, args: Unpacker) -> bytes:
    await lifecycle(session, read_domain(args), Resume)
    return b""


@handles(Proc.DOMAIN_UNDEFINE, Proc.DOMAIN_UNDEFINE_FLAGS)
async def undefine(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    flags = flags_of(args, Proc.DOMAIN_UNDEFINE_FLAGS)
    check_flags(flags, UNDEFINE_ALL, "virDomainUndefineFlags")
    await lifecycle(session, domain, Undefine, snapshots=bool(flags & UNDEFINE_SNAPSHOTS_METADATA))
    return b""


@handles(Proc.DOMAIN_SET_MEMORY, Proc.DOMAIN_SET_MEMORY_FLAGS)
async def set_memory(session: Session, args: Unpacker) -> bytes:
    """The memory limit, in the definitions the flags name. Without flags, the current
    definition: libvirt's virDomainSetMemory changes the running domain only, and
    refuses a shut-off one, whose definition this changes."""
    domain = read_domain(args)
    memory_kib = args.uint64()
    flags = flags_of(args, Proc.DOMAIN_SET_MEMORY_FLAGS)
    check_flags(flags, MEMORY_ALL, "virDomainSetMemoryFlags")
    await set_tuning(session, domain, flags, {"memory_kib": memory_kib})
    return b""


@handles(Proc.DOMAIN_SET_VCPUS, Proc.DOMAIN_SET_VCPUS_FLAGS)
async def set_vcpus(session: Session, args: Unpacker) -> bytes:
    """As set_memory, for the vCPU count."""
    domain = read_domain(args)
    vcpus = args.uint32()
    flags = flags_of(args, Proc.DOMAIN_SET_VCPUS_FLAGS)
    check_flags(flags, VCPUS_ALL, "virDomainSetVcpusFlags")
    await set_tuning(session, domain, flags, {"vcpus": vcpus})
    return b""


@handles(Proc.DOMAIN_RENAME)
async def rename(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    new_name = args.optional(lambda: args.string(STRING_MAX))
    check_flags(args.uint32(), 0, "virDomainRename")
    if new_name is None:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, "new_name in virDomainRename must not be NULL")
    await lifecycle(session, domain, Rename, new_name=new_name)
    return ints(0)


__all__ = ["HANDLERS", "Session"]
