"""Storage pools and volumes: libvirt's virStoragePool and virStorageVol over the
engine's local volume driver.

The host has one pool, ``default``, always active: its volumes are the engine's volumes
labelled with this host (named ``<host>.<volume>`` on the engine), so no command reaches
another volume. The host policy caps how many volumes there are and the capacity each
is created with, before the engine is asked to make one. A volume outlives the domains
that mount it; one that a domain's definition mounts cannot be deleted.
"""

from __future__ import annotations

import asyncio
import uuid
from weakref import WeakKeyDictionary

from agent.errors import VirtError
from agent.host.driver import EngineVolume
from agent.host.operations import Operations, handles
from schemas.codes import ErrorCode
from schemas.commands import (
    ListPools,
    PoolGetXmlDesc,
    PoolListVolumes,
    PoolLookup,
    VolumeCreate,
    VolumeDelete,
    VolumeGetInfo,
    VolumeGetXmlDesc,
)
from schemas.replies import DomainXml
from schemas.storage import (
    DEFAULT_POOL,
    PoolList,
    PoolRecord,
    VolumeList,
    VolumeRecord,
    pool_xml,
    volume_xml,
)

POOL_PATH = "/var/lib/docker/volumes"
"""Where the local driver keeps its volumes, as the pool's target path."""
_LOCKS: WeakKeyDictionary[Operations, asyncio.Lock] = WeakKeyDictionary()


def _lock(ops: Operations) -> asyncio.Lock:
    """Volume creation and deletion, one at a time: Docker's create answers an existing
    volume rather than refusing it, so a check and its create must not interleave."""
    return _LOCKS.setdefault(ops, asyncio.Lock())


def pool_uuid(host: str) -> uuid.UUID:
    """The default pool's UUID: the same for a host every time."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"virtbus://{host}/pool/{DEFAULT_POOL}")


def _check_pool(name: str) -> None:
    if name != DEFAULT_POOL:
        raise VirtError(ErrorCode.NO_STORAGE_POOL, f"no storage pool with matching name '{name}'")


async def _pool(ops: Operations) -> PoolRecord:
    volumes = await ops.driver.volumes()
    return PoolRecord(
        name=DEFAULT_POOL,
        uuid=pool_uuid(ops.host),
        path=POOL_PATH,
        volumes=sum(v.pool == DEFAULT_POOL for v in volumes),
    )


def _record(volume: EngineVolume) -> VolumeRecord:
    return VolumeRecord(
        pool=volume.pool,
        name=volume.name,
        key=volume.mountpoint,
        path=volume.mountpoint,
        capacity=volume.capacity,
        allocation=0,
    )


async def _volume(ops: Operations, pool: str, name: str) -> EngineVolume:
    _check_pool(pool)
    found = next((v for v in await ops.driver.volumes() if v.pool == pool and v.name == name), None)
    if found is None:
        raise VirtError(ErrorCode.NO_STORAGE_VOL, f"no storage vol with matching name '{name}'")
    return found


@handles(ListPools)
async def list_pools(ops: Operations, command: ListPools) -> PoolList:
    return PoolList(pools=[await _pool(ops)])


@handles(PoolLookup)
async def lookup_pool(ops: Operations, command: PoolLookup) -> PoolRecord:
    _check_pool(command.args.pool)
    return await _pool(ops)


@handles(PoolGetXmlDesc)
async def pool_xml_desc(ops: Operations, command: PoolGetXmlDesc) -> DomainXml:
    _check_pool(command.args.pool)
    return DomainXml(xml=pool_xml(await _pool(ops)))


@handles(PoolListVolumes)
async def list_volumes(ops: Operations, command: PoolListVolumes) -> VolumeList:
    _check_pool(command.args.pool)
    volumes = [_record(v) for v in await ops.driver.volumes() if v.pool == command.args.pool]
    return VolumeList(volumes=sorted(volumes, key=lambda v: v.name))


@handles(VolumeCreate)
async def create_volume(ops: Operations, command: VolumeCreate) -> VolumeRecord:
    """The policy's capacity ceiling is checked before the engine is asked anything,
    its count ceiling against the engine's list of this host's volumes."""
    args = command.args
    _check_pool(args.pool)
    ops.policy.check_volume_capacity(args.capacity)
    async with _lock(ops):
        volumes = await ops.driver.volumes()
        if any(v.name == args.name for v in volumes):
            raise VirtError(
                ErrorCode.STORAGE_VOL_EXIST, f"storage volume name '{args.name}' already in use."
            )
        ops.policy.check_volume_count(len(volumes))
        return _record(await ops.driver.create_volume(args.pool, args.name, args.capacity))


@handles(VolumeDelete)
async def delete_volume(ops: Operations, command: VolumeDelete) -> VolumeRecord:
    args = command.args
    async with _lock(ops):
        volume = await _volume(ops, args.pool, args.volume)
        for domain in ops.domains:
            specs = [domain.spec] + ([domain.pending] if domain.pending else [])
            if any(v.volume == args.volume for spec in specs for v in spec.volumes):
                raise VirtError(
                    ErrorCode.OPERATION_INVALID,
                    f"storage volume '{args.volume}' is in use by domain '{domain.name}'",
                )
        # a stopped transient domain's container may still hold the volume for a moment
        await ops.monitor.removals_done()
        await ops.driver.remove_volume(args.volume)
        return _record(volume)


@handles(VolumeGetInfo)
async def volume_info(ops: Operations, command: VolumeGetInfo) -> VolumeRecord:
    return _record(await _volume(ops, command.args.pool, command.args.volume))


@handles(VolumeGetXmlDesc)
async def volume_xml_desc(ops: Operations, command: VolumeGetXmlDesc) -> DomainXml:
    volume = await _volume(ops, command.args.pool, command.args.volume)
    return DomainXml(xml=volume_xml(_record(volume)))
