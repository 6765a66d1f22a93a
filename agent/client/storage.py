"""Handles on storage pools, volumes and domain snapshots, as libvirt-python's
``virStoragePool``, ``virStorageVol`` and ``virDomainSnapshot``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from schemas.commands import (
    PoolGetXmlDesc,
    PoolListVolumes,
    PoolLookup,
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
from schemas.replies import DomainXml
from schemas.storage import PoolRecord, SnapshotRecord, VolumeList, VolumeRecord

if TYPE_CHECKING:
    from agent.client.connection import Connection
    from agent.client.domain import Domain


class StoragePool:
    """A host's storage pool; ``record`` as the last reply described it."""

    def __init__(self, conn: Connection, host: str, record: PoolRecord) -> None:
        self._conn = conn
        self.host = host
        self.record = record

    @property
    def name(self) -> str:
        return self.record.name

    def _args(self, **more: Any) -> dict[str, Any]:
        return {"pool": self.name, **more}

    async def refresh(self) -> PoolRecord:
        self.record = await self._conn._call(PoolRecord, self.host, PoolLookup, self._args())
        return self.record

    async def xml_desc(self) -> str:
        described = await self._conn._call(DomainXml, self.host, PoolGetXmlDesc, self._args())
        return described.xml

    async def list_all_volumes(self) -> list[StorageVol]:
        listed = await self._conn._call(VolumeList, self.host, PoolListVolumes, self._args())
        return [StorageVol(self._conn, self.host, record) for record in listed.volumes]

    async def create_volume(
        self, name: str | None = None, capacity: int = 0, xml: str | None = None
    ) -> StorageVol:
        """virStorageVolCreateXML: by ``name`` and ``capacity`` (bytes), or libvirt
        volume ``xml``."""
        args = self._args(xml=xml) if xml is not None else self._args(name=name, capacity=capacity)
        record = await self._conn._call(VolumeRecord, self.host, VolumeCreate, args)
        return StorageVol(self._conn, self.host, record)

    async def volume(self, name: str) -> StorageVol:
        """virStorageVolLookupByName."""
        args = self._args(volume=name)
        record = await self._conn._call(VolumeRecord, self.host, VolumeGetInfo, args)
        return StorageVol(self._conn, self.host, record)


class StorageVol:
    """A volume of a host's pool; ``record`` as the last reply described it."""

    def __init__(self, conn: Connection, host: str, record: VolumeRecord) -> None:
        self._conn = conn
        self.host = host
        self.record = record

    @property
    def name(self) -> str:
        return self.record.name

    def _args(self) -> dict[str, Any]:
        return {"pool": self.record.pool, "volume": self.name}

    async def info(self) -> VolumeRecord:
        self.record = await self._conn._call(VolumeRecord, self.host, VolumeGetInfo, self._args())
        return self.record

    async def xml_desc(self) -> str:
        described = await self._conn._call(DomainXml, self.host, VolumeGetXmlDesc, self._args())
        return described.xml

    async def delete(self) -> None:
        await self._conn._call(VolumeRecord, self.host, VolumeDelete, self._args())


class DomainSnapshot:
    """A snapshot of a domain; ``record`` as the last reply described it."""

    def __init__(self, domain: Domain, record: SnapshotRecord) -> None:
        self.domain = domain
        self.record = record

    @property
    def name(self) -> str:
        return self.record.name

    async def _on_domain(self, expected: type[Any], op: type[Any], **args: Any) -> Any:
        domain = self.domain
        target = {"uuid": str(domain.uuid)}
        return await domain._conn._call(
            expected, domain.host, op, {"snapshot": self.name, **args}, target
        )

    async def refresh(self) -> SnapshotRecord:
        self.record = await self._on_domain(SnapshotRecord, SnapshotLookup)
        return self.record

    async def xml_desc(self) -> str:
        described: DomainXml = await self._on_domain(DomainXml, SnapshotGetXmlDesc)
        return described.xml

    async def revert(self, start: Literal["running", "paused"] | None = None) -> DomainRecord:
        """virDomainRevertToSnapshot; the domain's record afterwards."""
        record: DomainRecord = await self._on_domain(DomainRecord, SnapshotRevert, start=start)
        self.domain.record = record
        return record

    async def delete(self) -> None:
        await self._on_domain(SnapshotRecord, SnapshotDelete)
