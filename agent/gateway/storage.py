"""libvirt's storage and snapshot procedures, as calls on the virtbus client library.

A host has one storage pool, ``default``, always active (libvirt's pool of type ``dir``);
its volumes are the engine's volumes of that host. Snapshots are disk-only. What cannot
be done answers libvirt's errors: a second pool NO_SUPPORT, a memory snapshot
CONFIG_UNSUPPORTED, volume upload and download (streams) NO_SUPPORT.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from agent.client import VirtbusError
from agent.gateway.procedures import (
    Session,
    access_api,
    check_flags,
    expect,
    handles,
    ints,
    read_domain,
    session_procedure,
    string,
)
from agent.gateway.protocol import STRING_MAX, UUID_BYTES, Proc, WireDomain
from agent.gateway.xdr import Packer, Unpacker
from schemas.codes import ErrorCode
from schemas.commands import (
    CommandBase,
    ListPools,
    ListSnapshots,
    PoolGetXmlDesc,
    PoolListVolumes,
    PoolLookup,
    SnapshotCreate,
    SnapshotCurrent,
    SnapshotDelete,
    SnapshotGetXmlDesc,
    SnapshotLookup,
    SnapshotRevert,
    VolumeCreate,
    VolumeDelete,
    VolumeGetInfo,
    VolumeGetXmlDesc,
)
from schemas.domain import DomainRecord
from schemas.replies import DomainXml, Result
from schemas.storage import (
    DEFAULT_POOL,
    PoolList,
    PoolRecord,
    SnapshotList,
    SnapshotRecord,
    VolumeList,
    VolumeRecord,
)
from schemas.xmldoc import XmlError, parse_xml

POOL_RUNNING = 2  # virStoragePoolState
POOL_LIST_MAX = 4096  # remote_protocol.x REMOTE_STORAGE_POOL_LIST_MAX
VOL_DIR = 2  # virStorageVolType
LIST_POOLS_ACTIVE, LIST_POOLS_INACTIVE = 2, 1
LIST_POOLS_PERSISTENT, LIST_POOLS_TRANSIENT = 4, 8
LIST_POOLS_AUTOSTART, LIST_POOLS_NO_AUTOSTART = 16, 32
LIST_POOLS_DIR = 64
LIST_POOLS_TYPES = sum(1 << bit for bit in range(6, 20))
LIST_POOLS_ALL = 63 | LIST_POOLS_TYPES
VOL_CREATE_ALL = 1 | 2 | 4  # PREALLOC_METADATA, REFLINK, VALIDATE: nothing to do for a volume
SNAPSHOT_CREATE_ALLOWED = 16 | 128 | 256 | 512  # DISK_ONLY, ATOMIC, LIVE, VALIDATE
SNAPSHOT_CREATE_NO_METADATA = 4
REVERT_RUNNING, REVERT_PAUSED, REVERT_FORCE = 1, 2, 4
# virDomainSnapshotListFlags a disk-only snapshot with metadata meets (or not)
LIST_SNAP_ROOTS, LIST_SNAP_DESCENDANTS = 1, 1
LIST_SNAP_LEAVES, LIST_SNAP_NO_LEAVES = 4, 8
LIST_SNAP_METADATA, LIST_SNAP_NO_METADATA = 2, 16
LIST_SNAP_INACTIVE, LIST_SNAP_ACTIVE, LIST_SNAP_DISK_ONLY = 32, 64, 128
LIST_SNAP_INTERNAL, LIST_SNAP_EXTERNAL, LIST_SNAP_TOPOLOGICAL = 256, 512, 1024
LIST_SNAP_ALL = 2047
POOL_EVENT_LIFECYCLE, POOL_EVENT_REFRESH = 0, 1
_POOL_CALLBACKS: WeakKeyDictionary[Session, set[int]] = WeakKeyDictionary()
_CALLBACK_IDS = itertools.count(1 << 24)
"""Pool callback IDs: apart from the domain callbacks' (the client library's)."""


@dataclass(frozen=True)
class WirePool:
    """``remote_nonnull_storage_pool``."""

    name: str
    uuid: uuid.UUID

    def pack(self, packer: Packer) -> None:
        packer.string(self.name)
        packer.fixed_opaque(self.uuid.bytes, UUID_BYTES)

    @classmethod
    def unpack(cls, unpacker: Unpacker) -> WirePool:
        name = unpacker.string(STRING_MAX)
        return cls(name, uuid.UUID(bytes=unpacker.fixed_opaque(UUID_BYTES)))


@dataclass(frozen=True)
class WireVolume:
    """``remote_nonnull_storage_vol``."""

    pool: str
    name: str
    key: str

    def pack(self, packer: Packer) -> None:
        packer.string(self.pool)
        packer.string(self.name)
        packer.string(self.key)

    @classmethod
    def unpack(cls, unpacker: Unpacker) -> WireVolume:
        return cls(
            unpacker.string(STRING_MAX), unpacker.string(STRING_MAX), unpacker.string(STRING_MAX)
        )


@dataclass(frozen=True)
class WireSnapshot:
    """``remote_nonnull_domain_snapshot``."""

    name: str
    domain: WireDomain

    def pack(self, packer: Packer) -> None:
        packer.string(self.name)
        self.domain.pack(packer)

    @classmethod
    def unpack(cls, unpacker: Unpacker) -> WireSnapshot:
        name = unpacker.string(STRING_MAX)
        return cls(name, WireDomain.unpack(unpacker))


def _packed(*items: WirePool | WireVolume | WireSnapshot) -> bytes:
    packer = Packer()
    for item in items:
        item.pack(packer)
    return packer.data()


async def _host(
    session: Session, op: type[CommandBase], args: dict[str, Any] | None = None
) -> Result:
    return await session.conn.call(session.target, op, args)


async def _on(
    session: Session, domain: WireDomain, op: type[CommandBase], args: dict[str, Any] | None = None
) -> Result:
    return await session.conn.call(session.target, op, args, {"uuid": str(domain.uuid)})


def _wire_pool(pool: PoolRecord) -> WirePool:
    return WirePool(pool.name, pool.uuid)


def _wire_volume(volume: VolumeRecord) -> WireVolume:
    return WireVolume(volume.pool, volume.name, volume.key)


def _wire_snapshot(snapshot: SnapshotRecord, domain: WireDomain) -> WireSnapshot:
    return WireSnapshot(snapshot.name, domain)


async def _pool_named(session: Session, name: str) -> PoolRecord:
    return expect(await _host(session, PoolLookup, {"pool": name}), PoolRecord)


async def _pool_of(session: Session, args: Unpacker, flags: int | None = None) -> PoolRecord:
    """The pool a ``remote_nonnull_storage_pool`` argument names, by name and UUID;
    ``flags``: the flags that follow it must be exactly these (read before the bus)."""
    wire = WirePool.unpack(args)
    if flags is not None:
        api = access_api()
        check_flags(args.uint32(), flags, api)
    return await _pool_matching(session, wire)


async def _pool_matching(session: Session, wire: WirePool) -> PoolRecord:
    pool = await _pool_named(session, wire.name)
    if pool.uuid != wire.uuid:
        raise VirtbusError.of(
            ErrorCode.NO_STORAGE_POOL, f"no storage pool with matching uuid '{wire.uuid}'"
        )
    return pool


async def _volumes(session: Session, pool: str = DEFAULT_POOL) -> list[VolumeRecord]:
    return expect(await _host(session, PoolListVolumes, {"pool": pool}), VolumeList).volumes


# ------------------------------------------------------------------- pools --


@handles(Proc.CONNECT_LIST_ALL_STORAGE_POOLS)
async def list_all_pools(session: Session, args: Unpacker) -> bytes:
    need_results = args.int32()
    flags = args.uint32()
    check_flags(flags, LIST_POOLS_ALL, "virConnectListAllStoragePools")
    pools = expect(await _host(session, ListPools), PoolList).pools
    # the default pool is active, persistent, autostarted, of type dir
    refused = LIST_POOLS_INACTIVE | LIST_POOLS_TRANSIENT | LIST_POOLS_NO_AUTOSTART
    for group in (3, 12, 48):
        if flags & group and not flags & group & ~refused:
            pools = []
    if flags & LIST_POOLS_TYPES and not flags & LIST_POOLS_DIR:
        pools = []
    packer = Packer()
    packer.array([_wire_pool(p) for p in pools] if need_results else [], lambda p: p.pack(packer))
    packer.uint32(len(pools))
    return packer.data()


@handles(Proc.CONNECT_NUM_OF_STORAGE_POOLS, Proc.CONNECT_NUM_OF_DEFINED_STORAGE_POOLS)
async def num_of_pools(session: Session, args: Unpacker) -> bytes:
    """The older counting calls (Ansible's ``virt_pool`` lists with them): every pool is
    active, so none is only defined."""
    if session_procedure() == Proc.CONNECT_NUM_OF_DEFINED_STORAGE_POOLS:
        return ints(0)
    return ints(len(expect(await _host(session, ListPools), PoolList).pools))


@handles(Proc.CONNECT_LIST_STORAGE_POOLS, Proc.CONNECT_LIST_DEFINED_STORAGE_POOLS)
async def list_pool_names(session: Session, args: Unpacker) -> bytes:
    most = args.int32()
    if most > POOL_LIST_MAX:
        raise VirtbusError.of(ErrorCode.RPC, "maxnames > REMOTE_STORAGE_POOL_LIST_MAX")
    if most < 0:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, f"maxnames in {access_api()} must be non-negative"
        )
    names: list[str] = []
    if session_procedure() == Proc.CONNECT_LIST_STORAGE_POOLS:
        names = [p.name for p in expect(await _host(session, ListPools), PoolList).pools]
    packer = Packer()
    packer.array(names[:most], packer.string)
    return packer.data()


@handles(Proc.STORAGE_POOL_LOOKUP_BY_NAME)
async def pool_lookup_by_name(session: Session, args: Unpacker) -> bytes:
    return _packed(_wire_pool(await _pool_named(session, args.string(STRING_MAX))))


@handles(Proc.STORAGE_POOL_LOOKUP_BY_UUID)
async def pool_lookup_by_uuid(session: Session, args: Unpacker) -> bytes:
    wanted = uuid.UUID(bytes=args.fixed_opaque(UUID_BYTES))
    pools = expect(await _host(session, ListPools), PoolList).pools
    for pool in pools:
        if pool.uuid == wanted:
            return _packed(_wire_pool(pool))
    raise VirtbusError.of(
        ErrorCode.NO_STORAGE_POOL, f"no storage pool with matching uuid '{wanted}'"
    )


@handles(Proc.STORAGE_POOL_LOOKUP_BY_VOLUME)
async def pool_lookup_by_volume(session: Session, args: Unpacker) -> bytes:
    volume = await _volume_of(session, args)
    return _packed(_wire_pool(await _pool_named(session, volume.pool)))


@handles(Proc.STORAGE_POOL_GET_INFO)
async def pool_get_info(session: Session, args: Unpacker) -> bytes:
    pool = await _pool_of(session, args)
    packer = Packer()
    packer.uint32(POOL_RUNNING)
    for size in (pool.capacity, pool.allocation, pool.available):
        packer.uint64(size)
    return packer.data()


@handles(Proc.STORAGE_POOL_GET_XML_DESC)
async def pool_get_xml_desc(session: Session, args: Unpacker) -> bytes:
    wire = WirePool.unpack(args)
    check_flags(args.uint32(), 1, "virStoragePoolGetXMLDesc")
    described = await _host(session, PoolGetXmlDesc, {"pool": wire.name})
    return string(expect(described, DomainXml).xml)


@handles(
    Proc.STORAGE_POOL_GET_AUTOSTART, Proc.STORAGE_POOL_IS_ACTIVE, Proc.STORAGE_POOL_IS_PERSISTENT
)
async def pool_yes(session: Session, args: Unpacker) -> bytes:
    await _pool_of(session, args)
    return ints(1)


@handles(Proc.STORAGE_POOL_SET_AUTOSTART)
async def pool_set_autostart(session: Session, args: Unpacker) -> bytes:
    wire = WirePool.unpack(args)
    autostart = args.int32()
    pool = await _pool_matching(session, wire)
    if not autostart:
        raise VirtbusError.of(
            ErrorCode.NO_SUPPORT,
            f"storage pool '{pool.name}' not started with its host: a virtbus host's pool "
            "always is",
        )
    return b""


@handles(Proc.STORAGE_POOL_CREATE)
async def pool_create(session: Session, args: Unpacker) -> bytes:
    pool = await _pool_of(session, args, flags=0)
    raise VirtbusError.of(
        ErrorCode.OPERATION_INVALID, f"storage pool '{pool.name}' is already active"
    )


@handles(Proc.STORAGE_POOL_REFRESH)
async def pool_refresh(session: Session, args: Unpacker) -> bytes:
    """Nothing to refresh: every answer reads the engine's volumes as they are."""
    await _pool_of(session, args, flags=0)
    return b""


@handles(Proc.STORAGE_POOL_DEFINE_XML)
async def pool_define_xml(session: Session, args: Unpacker) -> bytes:
    """virt-manager defines pool ``default`` when it finds none: it is there already,
    and is answered as defined. Any other pool cannot be made."""
    xml = args.string(STRING_MAX)
    args.uint32()
    try:
        name = parse_xml(xml).findtext("name") or ""
    except XmlError as error:
        raise VirtbusError.of(error.code, error.detail) from None
    if name.strip() != DEFAULT_POOL:
        raise VirtbusError.of(
            ErrorCode.NO_SUPPORT, f"a storage pool other than '{DEFAULT_POOL}' on a virtbus host"
        )
    return _packed(_wire_pool(await _pool_named(session, DEFAULT_POOL)))


@handles(Proc.STORAGE_POOL_NUM_OF_VOLUMES)
async def pool_num_of_volumes(session: Session, args: Unpacker) -> bytes:
    pool = await _pool_of(session, args)
    return ints(len(await _volumes(session, pool.name)))


@handles(Proc.STORAGE_POOL_LIST_VOLUMES)
async def pool_list_volumes(session: Session, args: Unpacker) -> bytes:
    wire = WirePool.unpack(args)
    most = args.int32()
    names = [v.name for v in await _volumes(session, wire.name)][: max(most, 0)]
    packer = Packer()
    packer.array(names, packer.string)
    return packer.data()


@handles(Proc.STORAGE_POOL_LIST_ALL_VOLUMES)
async def pool_list_all_volumes(session: Session, args: Unpacker) -> bytes:
    wire = WirePool.unpack(args)
    need_results = args.int32()
    check_flags(args.uint32(), 0, "virStoragePoolListAllVolumes")
    volumes = await _volumes(session, wire.name)
    packer = Packer()
    packer.array(
        [_wire_volume(v) for v in volumes] if need_results else [], lambda v: v.pack(packer)
    )
    packer.uint32(len(volumes))
    return packer.data()


# ----------------------------------------------------------------- volumes --


async def _volume_named(session: Session, pool: str, name: str) -> VolumeRecord:
    found = await _host(session, VolumeGetInfo, {"pool": pool, "volume": name})
    return expect(found, VolumeRecord)


async def _volume_of(session: Session, args: Unpacker) -> VolumeRecord:
    wire = WireVolume.unpack(args)
    return await _volume_named(session, wire.pool, wire.name)


async def _volume_where(
    session: Session, matches: Callable[[VolumeRecord], bool], what: str
) -> bytes:
    for volume in await _volumes(session):
        if matches(volume):
            return _packed(_wire_volume(volume))
    raise VirtbusError.of(ErrorCode.NO_STORAGE_VOL, f"no storage vol with matching {what}")


@handles(Proc.STORAGE_VOL_CREATE_XML)
async def vol_create_xml(session: Session, args: Unpacker) -> bytes:
    wire = WirePool.unpack(args)
    xml = args.string(STRING_MAX)
    check_flags(args.uint32(), VOL_CREATE_ALL, "virStorageVolCreateXML")
    created = await _host(session, VolumeCreate, {"pool": wire.name, "xml": xml})
    return _packed(_wire_volume(expect(created, VolumeRecord)))


@handles(Proc.STORAGE_VOL_DELETE)
async def vol_delete(session: Session, args: Unpacker) -> bytes:
    wire = WireVolume.unpack(args)
    check_flags(args.uint32(), 0, "virStorageVolDelete")
    await _host(session, VolumeDelete, {"pool": wire.pool, "volume": wire.name})
    return b""


@handles(Proc.STORAGE_VOL_LOOKUP_BY_NAME)
async def vol_lookup_by_name(session: Session, args: Unpacker) -> bytes:
    pool = WirePool.unpack(args)
    name = args.string(STRING_MAX)
    return _packed(_wire_volume(await _volume_named(session, pool.name, name)))


@handles(Proc.STORAGE_VOL_LOOKUP_BY_KEY)
async def vol_lookup_by_key(session: Session, args: Unpacker) -> bytes:
    key = args.string(STRING_MAX)
    return await _volume_where(session, lambda v: v.key == key, f"key '{key}'")


@handles(Proc.STORAGE_VOL_LOOKUP_BY_PATH)
async def vol_lookup_by_path(session: Session, args: Unpacker) -> bytes:
    path = args.string(STRING_MAX)
    return await _volume_where(session, lambda v: v.path == path, f"path '{path}'")


@handles(Proc.STORAGE_VOL_GET_INFO)
async def vol_get_info(session: Session, args: Unpacker) -> bytes:
    volume = await _volume_of(session, args)
    packer = Packer()
    packer.int32(VOL_DIR)
    packer.uint64(volume.capacity)
    packer.uint64(volume.allocation)
    return packer.data()


@handles(Proc.STORAGE_VOL_GET_XML_DESC)
async def vol_get_xml_desc(session: Session, args: Unpacker) -> bytes:
    wire = WireVolume.unpack(args)
    check_flags(args.uint32(), 0, "virStorageVolGetXMLDesc")
    described = await _host(session, VolumeGetXmlDesc, {"pool": wire.pool, "volume": wire.name})
    return string(expect(described, DomainXml).xml)


@handles(Proc.STORAGE_VOL_GET_PATH)
async def vol_get_path(session: Session, args: Unpacker) -> bytes:
    return string((await _volume_of(session, args)).path)


@handles(Proc.CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY)
async def pool_event_register_any(session: Session, args: Unpacker) -> bytes:
    """Accepted, and never called: pool ``default`` is neither defined, started,
    stopped nor undefined while the host runs, and needs no refresh."""
    event_id = args.int32()
    pool = args.optional(lambda: WirePool.unpack(args))
    if event_id not in (POOL_EVENT_LIFECYCLE, POOL_EVENT_REFRESH):
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"unsupported event ID {event_id}")
    if pool is not None:
        await _pool_named(session, pool.name)
    callbacks = _POOL_CALLBACKS.setdefault(session, set())
    if len(session.callbacks) + len(callbacks) >= session.max_callbacks:
        raise VirtbusError.of(
            ErrorCode.RESOURCE_BUSY, "this connection has the most event callbacks allowed"
        )
    callback_id = next(_CALLBACK_IDS)
    callbacks.add(callback_id)
    return ints(callback_id)


@handles(Proc.CONNECT_STORAGE_POOL_EVENT_DEREGISTER_ANY)
async def pool_event_deregister_any(session: Session, args: Unpacker) -> bytes:
    callback_id = args.int32()
    callbacks = _POOL_CALLBACKS.get(session, set())
    if callback_id not in callbacks:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"callback {callback_id} is not registered")
    callbacks.discard(callback_id)
    return b""


# --------------------------------------------------------------- snapshots --


async def _snapshots(session: Session, domain: WireDomain) -> list[SnapshotRecord]:
    return expect(await _on(session, domain, ListSnapshots), SnapshotList).snapshots


async def _snapshot(session: Session, wire: WireSnapshot) -> SnapshotRecord:
    """The snapshot a decoded argument names (every argument decoded first)."""
    found = await _on(session, wire.domain, SnapshotLookup, {"snapshot": wire.name})
    return expect(found, SnapshotRecord)


def _selected(snapshots: list[SnapshotRecord], flags: int) -> list[SnapshotRecord]:
    """virDomainListAllSnapshots' filters, each group ANDed, flags in a group ORed."""
    names = {s.name for s in snapshots}
    parents = {s.parent for s in snapshots}
    if flags & LIST_SNAP_ROOTS:
        snapshots = [s for s in snapshots if s.parent is None or s.parent not in names]
    leaves = flags & (LIST_SNAP_LEAVES | LIST_SNAP_NO_LEAVES)
    if leaves and leaves != LIST_SNAP_LEAVES | LIST_SNAP_NO_LEAVES:
        want_leaf = bool(leaves & LIST_SNAP_LEAVES)
        snapshots = [s for s in snapshots if (s.name not in parents) == want_leaf]
    if flags & (LIST_SNAP_METADATA | LIST_SNAP_NO_METADATA) == LIST_SNAP_NO_METADATA:
        snapshots = []
    states = flags & (LIST_SNAP_INACTIVE | LIST_SNAP_ACTIVE | LIST_SNAP_DISK_ONLY)
    if states and not states & LIST_SNAP_DISK_ONLY:
        snapshots = []
    where = flags & (LIST_SNAP_INTERNAL | LIST_SNAP_EXTERNAL)
    if where == LIST_SNAP_INTERNAL:
        snapshots = []
    return snapshots


@handles(Proc.DOMAIN_SNAPSHOT_CREATE_XML)
async def snapshot_create_xml(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    xml = args.string(STRING_MAX)
    flags = args.uint32()
    if flags & SNAPSHOT_CREATE_NO_METADATA:
        raise VirtbusError.of(
            ErrorCode.NO_SUPPORT, "a snapshot without metadata (its image is its metadata)"
        )
    check_flags(flags, SNAPSHOT_CREATE_ALLOWED, "virDomainSnapshotCreateXML")
    created = await _on(session, domain, SnapshotCreate, {"xml": xml})
    return _packed(_wire_snapshot(expect(created, SnapshotRecord), domain))


@handles(Proc.DOMAIN_SNAPSHOT_GET_XML_DESC)
async def snapshot_get_xml_desc(session: Session, args: Unpacker) -> bytes:
    wire = WireSnapshot.unpack(args)
    check_flags(args.uint32(), 1, "virDomainSnapshotGetXMLDesc")
    described = await _on(session, wire.domain, SnapshotGetXmlDesc, {"snapshot": wire.name})
    return string(expect(described, DomainXml).xml)


@handles(Proc.DOMAIN_SNAPSHOT_NUM)
async def snapshot_num(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    flags = args.uint32()
    check_flags(flags, LIST_SNAP_ALL, "virDomainSnapshotNum")
    return ints(len(_selected(await _snapshots(session, domain), flags)))


@handles(Proc.DOMAIN_SNAPSHOT_LIST_NAMES)
async def snapshot_list_names(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    most = args.int32()
    flags = args.uint32()
    check_flags(flags, LIST_SNAP_ALL, "virDomainSnapshotListNames")
    names = [s.name for s in _selected(await _snapshots(session, domain), flags)]
    packer = Packer()
    packer.array(names[: max(most, 0)], packer.string)
    return packer.data()


@handles(Proc.DOMAIN_LIST_ALL_SNAPSHOTS)
async def list_all_snapshots(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    need_results = args.int32()
    flags = args.uint32()
    check_flags(flags, LIST_SNAP_ALL, "virDomainListAllSnapshots")
    found = _selected(await _snapshots(session, domain), flags)
    packer = Packer()
    packer.array(
        [_wire_snapshot(s, domain) for s in found] if need_results else [],
        lambda s: s.pack(packer),
    )
    packer.int32(len(found))
    return packer.data()


def _children(snapshots: list[SnapshotRecord], parent: str, flags: int) -> list[SnapshotRecord]:
    """The snapshots below ``parent``: its children, or (DESCENDANTS) all below it."""
    found = [s for s in snapshots if s.parent == parent]
    if flags & LIST_SNAP_DESCENDANTS:
        for child in list(found):
            found += _children(snapshots, child.name, flags)
    return found


@handles(Proc.DOMAIN_SNAPSHOT_LIST_ALL_CHILDREN)
async def list_all_children(session: Session, args: Unpacker) -> bytes:
    wire = WireSnapshot.unpack(args)
    need_results = args.int32()
    flags = args.uint32()
    check_flags(flags, LIST_SNAP_ALL, "virDomainSnapshotListAllChildren")
    snapshot = await _snapshot(session, wire)
    below = _children(await _snapshots(session, wire.domain), snapshot.name, flags)
    found = _selected(below, flags & ~LIST_SNAP_DESCENDANTS)
    packer = Packer()
    packer.array(
        [_wire_snapshot(s, wire.domain) for s in found] if need_results else [],
        lambda s: s.pack(packer),
    )
    packer.int32(len(found))
    return packer.data()


@handles(Proc.DOMAIN_SNAPSHOT_NUM_CHILDREN)
async def num_children(session: Session, args: Unpacker) -> bytes:
    wire = WireSnapshot.unpack(args)
    flags = args.uint32()
    check_flags(flags, LIST_SNAP_ALL, "virDomainSnapshotNumChildren")
    snapshot = await _snapshot(session, wire)
    below = _children(await _snapshots(session, wire.domain), snapshot.name, flags)
    return ints(len(_selected(below, flags & ~LIST_SNAP_DESCENDANTS)))


@handles(Proc.DOMAIN_SNAPSHOT_LIST_CHILDREN_NAMES)
async def list_children_names(session: Session, args: Unpacker) -> bytes:
    wire = WireSnapshot.unpack(args)
    most = args.int32()
    flags = args.uint32()
    check_flags(flags, LIST_SNAP_ALL, "virDomainSnapshotListChildrenNames")
    snapshot = await _snapshot(session, wire)
    below = _children(await _snapshots(session, wire.domain), snapshot.name, flags)
    names = [s.name for s in _selected(below, flags & ~LIST_SNAP_DESCENDANTS)]
    packer = Packer()
    packer.array(names[: max(most, 0)], packer.string)
    return packer.data()


@handles(Proc.DOMAIN_SNAPSHOT_LOOKUP_BY_NAME)
async def snapshot_lookup_by_name(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    name = args.string(STRING_MAX)
    check_flags(args.uint32(), 0, "virDomainSnapshotLookupByName")
    found = await _on(session, domain, SnapshotLookup, {"snapshot": name})
    return _packed(_wire_snapshot(expect(found, SnapshotRecord), domain))


@handles(Proc.DOMAIN_HAS_CURRENT_SNAPSHOT)
async def has_current_snapshot(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    check_flags(args.uint32(), 0, "virDomainHasCurrentSnapshot")
    return ints(int(any(s.current for s in await _snapshots(session, domain))))


@handles(Proc.DOMAIN_SNAPSHOT_CURRENT)
async def snapshot_current(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    check_flags(args.uint32(), 0, "virDomainSnapshotCurrent")
    current = expect(await _on(session, domain, SnapshotCurrent), SnapshotRecord)
    return _packed(_wire_snapshot(current, domain))


@handles(Proc.DOMAIN_SNAPSHOT_GET_PARENT)
async def snapshot_get_parent(session: Session, args: Unpacker) -> bytes:
    wire = WireSnapshot.unpack(args)
    check_flags(args.uint32(), 0, "virDomainSnapshotGetParent")
    snapshot = await _snapshot(session, wire)
    if snapshot.parent is None:
        raise VirtbusError.of(
            ErrorCode.NO_DOMAIN_SNAPSHOT, f"snapshot '{snapshot.name}' does not have a parent"
        )
    return _packed(WireSnapshot(snapshot.parent, wire.domain))


@handles(Proc.DOMAIN_SNAPSHOT_IS_CURRENT)
async def snapshot_is_current(session: Session, args: Unpacker) -> bytes:
    wire = WireSnapshot.unpack(args)
    check_flags(args.uint32(), 0, "virDomainSnapshotIsCurrent")
    snapshot = await _snapshot(session, wire)
    return ints(int(snapshot.current))


@handles(Proc.DOMAIN_SNAPSHOT_HAS_METADATA)
async def snapshot_has_metadata(session: Session, args: Unpacker) -> bytes:
    wire = WireSnapshot.unpack(args)
    check_flags(args.uint32(), 0, "virDomainSnapshotHasMetadata")
    await _snapshot(session, wire)
    return ints(1)


@handles(Proc.DOMAIN_REVERT_TO_SNAPSHOT)
async def revert_to_snapshot(session: Session, args: Unpacker) -> bytes:
    wire = WireSnapshot.unpack(args)
    flags = args.uint32()
    check_flags(flags, REVERT_RUNNING | REVERT_PAUSED | REVERT_FORCE, "virDomainRevertToSnapshot")
    if flags & REVERT_RUNNING and flags & REVERT_PAUSED:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG,
            "Flags 'running' and 'paused' are mutually exclusive",
        )
    start = "running" if flags & REVERT_RUNNING else "paused" if flags & REVERT_PAUSED else None
    reverted = await _on(
        session, wire.domain, SnapshotRevert, {"snapshot": wire.name, "start": start}
    )
    expect(reverted, DomainRecord)
    return b""


@handles(Proc.DOMAIN_SNAPSHOT_DELETE)
async def snapshot_delete(session: Session, args: Unpacker) -> bytes:
    wire = WireSnapshot.unpack(args)
    flags = args.uint32()
    if flags:
        raise VirtbusError.of(
            ErrorCode.NO_SUPPORT,
            f"virDomainSnapshotDelete flags 0x{flags:x}: delete the snapshots one by one",
        )
    await _on(session, wire.domain, SnapshotDelete, {"snapshot": wire.name})
    return b""
