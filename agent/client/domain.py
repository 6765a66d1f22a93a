"""The handle on one domain, as libvirt-python's ``virDomain``."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agent.client.storage import DomainSnapshot
from schemas.commands import (
    AttachDevice,
    Create,
    Destroy,
    DetachDevice,
    DomainCommand,
    GetConsoleOutput,
    GetInfo,
    GetMetadata,
    GetState,
    GetStats,
    GetTuning,
    GetXmlDesc,
    InterfaceAddresses,
    ListSnapshots,
    Lookup,
    MetadataKind,
    Reboot,
    Rename,
    Resume,
    SetAutostart,
    SetMemory,
    SetMetadata,
    SetTuning,
    SetVcpus,
    Shutdown,
    SnapshotCreate,
    SnapshotCurrent,
    SnapshotLookup,
    StatGroup,
    Suspend,
    Undefine,
)
from schemas.domain import DomainRecord, DomainSpec, Interface, Mount
from schemas.replies import (
    ConsoleOutput,
    DeviceChange,
    DomainInfo,
    DomainInterface,
    DomainStateInfo,
    DomainStats,
    DomainTuning,
    DomainXml,
    Metadata,
)
from schemas.replies import DomainInterfaces as Addresses
from schemas.storage import SnapshotList, SnapshotRecord

if TYPE_CHECKING:
    from agent.client.connection import Connection
    from agent.client.streams import Console


def spec_args(spec: DomainSpec | dict[str, Any]) -> dict[str, Any]:
    """A definition as a command's ``spec`` argument."""
    if isinstance(spec, DomainSpec):
        return spec.model_dump(mode="json", exclude_none=True)
    return spec


class Domain:
    """A domain on one host, as virDomainPtr: its methods send commands by UUID, so a
    rename does not lose it. ``record`` is the domain as the last reply described it."""

    def __init__(self, conn: Connection, host: str, record: DomainRecord) -> None:
        self._conn = conn
        self.host = host
        self.record = record

    def __repr__(self) -> str:
        return f"Domain(host={self.host!r}, name={self.name!r}, uuid='{self.uuid}')"

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def uuid(self) -> uuid.UUID:
        return self.record.uuid

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def _target(self) -> dict[str, Any]:
        return {"uuid": str(self.uuid)}

    async def _record(
        self, op: type[DomainCommand], args: dict[str, Any] | None = None
    ) -> DomainRecord:
        self.record = await self._conn._call(DomainRecord, self.host, op, args, self._target)
        return self.record

    async def refresh(self) -> DomainRecord:
        return await self._record(Lookup)

    async def create(self, start_paused: bool = False) -> DomainRecord:
        return await self._record(Create, {"start_paused": start_paused})

    async def shutdown(self, timeout_s: int = 10, escalate: bool = True) -> DomainRecord:
        """``escalate``: stop, killing after ``timeout_s``, and answer once down; without,
        libvirt's request to the domain's init, answered once delivered."""
        return await self._record(Shutdown, {"timeout_s": timeout_s, "escalate": escalate})

    async def destroy(self) -> DomainRecord:
        return await self._record(Destroy)

    async def reboot(self, timeout_s: int = 10, escalate: bool = True) -> DomainRecord:
        return await self._record(Reboot, {"timeout_s": timeout_s, "escalate": escalate})

    async def suspend(self) -> DomainRecord:
        return await self._record(Suspend)

    async def resume(self) -> DomainRecord:
        return await self._record(Resume)

    async def undefine(self, snapshots: bool = False, volumes: bool = False) -> DomainRecord:
        """virDomainUndefineFlags: ``snapshots`` deletes its snapshots with it (without,
        a domain that has any stays defined); ``volumes`` the volumes only it mounts."""
        return await self._record(Undefine, {"snapshots": snapshots, "volumes": volumes})

    async def snapshot_create(
        self, name: str | None = None, description: str = ""
    ) -> DomainSnapshot:
        """virDomainSnapshotCreateXML, disk-only: the domain's filesystem now."""
        args: dict[str, Any] = {"description": description}
        if name is not None:
            args["name"] = name
        record = await self._conn._call(
            SnapshotRecord, self.host, SnapshotCreate, args, self._target
        )
        return DomainSnapshot(self, record)

    async def list_all_snapshots(self) -> list[DomainSnapshot]:
        listed = await self._conn._call(SnapshotList, self.host, ListSnapshots, target=self._target)
        return [DomainSnapshot(self, record) for record in listed.snapshots]

    async def snapshot_current(self) -> DomainSnapshot:
        """NO_DOMAIN_SNAPSHOT when the domain has no current snapshot."""
        record = await self._conn._call(
            SnapshotRecord, self.host, SnapshotCurrent, target=self._target
        )
        return DomainSnapshot(self, record)

    async def snapshot_lookup_by_name(self, name: str) -> DomainSnapshot:
        args = {"snapshot": name}
        record = await self._conn._call(
            SnapshotRecord, self.host, SnapshotLookup, args, self._target
        )
        return DomainSnapshot(self, record)

    async def set_autostart(self, autostart: bool) -> DomainRecord:
        return await self._record(SetAutostart, {"autostart": autostart})

    async def set_memory(self, memory_kib: int) -> DomainRecord:
        return await self._record(SetMemory, {"memory_kib": memory_kib})

    async def set_vcpus(self, vcpus: int) -> DomainRecord:
        return await self._record(SetVcpus, {"vcpus": vcpus})

    async def rename(self, new_name: str) -> DomainRecord:
        return await self._record(Rename, {"new_name": new_name})

    async def info(self) -> DomainInfo:
        return await self._conn._call(DomainInfo, self.host, GetInfo, target=self._target)

    async def tuning(self, *, live: bool = False, config: bool = False) -> DomainTuning:
        """virDomainGetSchedulerParametersFlags and virDomainGetMemoryParameters: the
        cgroup's CPU and memory controls (``live``, the default for an active domain)
        or what the definition asks for (``config``)."""
        args = {"live": live, "config": config}
        return await self._conn._call(DomainTuning, self.host, GetTuning, args, self._target)

    async def set_tuning(
        self,
        *,
        cpu_shares: int | None = None,
        memory_kib: int | None = None,
        soft_limit_kib: int | None = None,
        swap_hard_limit_kib: int | None = None,
        live: bool = False,
        config: bool = False,
    ) -> DomainRecord:
        """virDomainSetSchedulerParametersFlags and virDomainSetMemoryParameters: the
        controls given, in the running definition (``live``, the default for an active
        domain), the persistent one (``config``) or both."""
        controls = {
            "cpu_shares": cpu_shares,
            "memory_kib": memory_kib,
            "soft_limit_kib": soft_limit_kib,
            "swap_hard_limit_kib": swap_hard_limit_kib,
        }
        args = {name: value for name, value in controls.items() if value is not None}
        return await self._record(SetTuning, {**args, "live": live, "config": config})

    async def state(self) -> DomainStateInfo:
        return await self._conn._call(DomainStateInfo, self.host, GetState, target=self._target)

    async def xml_desc(self, inactive: bool = False) -> str:
        """virDomainGetXMLDesc: the domain's libvirt domain XML; ``inactive`` for the
        definition it will have at its next start."""
        args = {"inactive": inactive}
        described = await self._conn._call(DomainXml, self.host, GetXmlDesc, args, self._target)
        return described.xml

    async def stats(self, groups: Iterable[StatGroup] = ()) -> DomainStats:
        """virDomainListGetStats for this domain: libvirt's keys of ``groups`` (none:
        libvirt's groups and ``pids``), read from the kernel at ``time``."""
        args = {"groups": list(groups)}
        return await self._conn._call(DomainStats, self.host, GetStats, args, self._target)

    async def attach_device(
        self, device: Interface | Mount | str, live: bool = False, config: bool = False
    ) -> DeviceChange:
        """virDomainAttachDeviceFlags: an Interface, a Mount (a filesystem: persistent
        definition only) or device XML; neither flag means live if running, else config."""
        return await self._device(AttachDevice, device, live, config)

    async def detach_device(
        self, device: Interface | Mount | str, live: bool = False, config: bool = False
    ) -> DeviceChange:
        """virDomainDetachDeviceFlags; an interface is found by network (and MAC)."""
        return await self._device(DetachDevice, device, live, config)

    async def _device(
        self,
        op: type[AttachDevice | DetachDevice],
        device: Interface | Mount | str,
        live: bool,
        config: bool,
    ) -> DeviceChange:
        args: dict[str, Any] = {"live": live, "config": config}
        if isinstance(device, str):
            args["xml"] = device
        elif isinstance(device, Interface):
            args["interface"] = device.model_dump(mode="json", exclude_none=True)
        else:
            args["filesystem"] = device.model_dump(mode="json")
        change = await self._conn._call(DeviceChange, self.host, op, args, self._target)
        self.record = change.domain
        return change

    async def interface_addresses(self, source: str = "lease") -> list[DomainInterface]:
        """virDomainInterfaceAddresses: the addresses Docker assigned, per interface."""
        found = await self._conn._call(
            Addresses, self.host, InterfaceAddresses, {"source": source}, self._target
        )
        return found.interfaces

    async def set_metadata(
        self,
        kind: MetadataKind,
        metadata: str | None,
        key: str | None = None,
        uri: str | None = None,
        live: bool = False,
        config: bool = False,
    ) -> DomainRecord:
        """virDomainSetMetadata: ``kind`` is description, title or element (one XML
        element under namespace ``uri`` with prefix ``key``); None removes it."""
        args = {"type": kind, "metadata": metadata, "key": key, "uri": uri}
        args = {k: v for k, v in args.items() if v is not None}
        return await self._record(SetMetadata, {**args, "live": live, "config": config})

    async def metadata(
        self, kind: MetadataKind, uri: str | None = None, live: bool = False, config: bool = False
    ) -> str:
        """virDomainGetMetadata; NO_DOMAIN_METADATA when there is none."""
        args: dict[str, Any] = {"type": kind, "live": live, "config": config}
        if uri is not None:
            args["uri"] = uri
        got = await self._conn._call(Metadata, self.host, GetMetadata, args, self._target)
        return got.metadata

    async def console_output(self, max_bytes: int = 65536) -> ConsoleOutput:
        """The domain's most recent console output, at most ``max_bytes``."""
        args = {"max_bytes": max_bytes}
        return await self._conn._call(
            ConsoleOutput, self.host, GetConsoleOutput, args, self._target
        )

    async def open_console(self, force: bool = False) -> Console:
        """virDomainOpenConsole: ``async with await dom.open_console() as console``."""
        return await self._conn.open_console(self.host, self._target, force)
