"""Commands: the envelope, one model per op (discriminated by ``op``), and their args."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    TypeAdapter,
    field_serializer,
    model_validator,
)

from schemas.base import WIRE_VERSION, AwareTimestamp, DomainName, MessageId, Uuid, WireModel
from schemas.codes import ErrorCode
from schemas.domain import (
    MAX_CPU_SHARES,
    MIN_CPU_SHARES,
    MIN_MEMORY_KIB,
    Description,
    DomainSpec,
    Interface,
    Mount,
    NetworkName,
    PoolName,
    SnapshotName,
    VolumeName,
)
from schemas.domxml import device_fields, domain_fields
from schemas.errors import VirtbusError
from schemas.network import NetworkSpec
from schemas.netxml import network_fields
from schemas.storage import snapshot_fields, volume_fields
from schemas.xmldoc import MAX_XML_CHARS, XmlError


class Target(WireModel):
    """Names one domain: by exactly one of name, UUID or ID (as virDomainLookupBy*)."""

    name: DomainName | None = None
    uuid: Uuid | None = None
    id: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [key for key in ("name", "uuid", "id") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("target needs exactly one of name, uuid or id")
        return self

    def __str__(self) -> str:
        if self.name is not None:
            return f"name '{self.name}'"
        if self.uuid is not None:
            return f"uuid '{self.uuid}'"
        return f"id '{self.id}'"


class NoArgs(WireModel):
    pass


def _spec_from_xml(data: Any) -> Any:
    """Args given as ``xml`` (libvirt domain XML) instead of ``spec``: read into a spec
    here, at the edge. XML that cannot be read raises XmlError, with its own code."""
    if not isinstance(data, dict):
        return data
    if "xml" not in data:
        if "spec" not in data:
            raise ValueError("needs spec (a JSON definition) or xml (libvirt domain XML)")
        return data
    if "spec" in data:
        raise ValueError("takes spec or xml, not both")
    xml = data["xml"]
    if not isinstance(xml, str):
        raise ValueError("xml must be a string")
    rest = {key: value for key, value in data.items() if key != "xml"}
    return {**rest, "spec": domain_fields(xml)}


def _document_xml(schema: dict[str, Any]) -> None:
    """What _spec_from_xml accepts, in the JSON Schema: exactly one of spec and xml."""
    schema["properties"]["xml"] = {
        "type": "string",
        "maxLength": MAX_XML_CHARS,
        "title": "Xml",
        "description": "libvirt domain XML, instead of spec",
    }
    schema["required"] = [key for key in schema.get("required", []) if key != "spec"]
    if not schema["required"]:
        del schema["required"]
    schema["oneOf"] = [{"required": ["spec"]}, {"required": ["xml"]}]


class DefineArgs(WireModel):
    """``spec``, or ``xml``: libvirt domain XML, read into the spec on arrival."""

    model_config = ConfigDict(json_schema_extra=_document_xml)

    spec: DomainSpec

    _from_xml = model_validator(mode="before")(_spec_from_xml)


class CreateXmlArgs(WireModel):
    """``spec``, or ``xml``: libvirt domain XML, read into the spec on arrival."""

    model_config = ConfigDict(json_schema_extra=_document_xml)

    spec: DomainSpec
    start_paused: bool = False

    _from_xml = model_validator(mode="before")(_spec_from_xml)


class XmlDescArgs(WireModel):
    """virDomainGetXMLDesc's VIR_DOMAIN_XML_INACTIVE: the definition the domain will have
    at its next start, rather than the one it runs with."""

    inactive: bool = False


class CreateArgs(WireModel):
    start_paused: bool = False


class ShutdownArgs(WireModel):
    """``escalate`` (the default): stop, and kill after ``timeout_s`` if the domain is
    still up, answering once it is down. Without: libvirt's virDomainShutdown, a request
    delivered to the domain's init (SIGTERM) that is answered at once and never becomes
    a kill; the stopped event follows when the domain stops."""

    timeout_s: int = Field(default=10, ge=0, le=3600)
    escalate: bool = True


class RebootArgs(WireModel):
    """``escalate`` (the default): restart, killing after ``timeout_s`` a domain that does
    not stop, answering once it runs again. Without: libvirt's virDomainReboot, answered
    once delivered; the domain is restarted when it stops by itself, never killed."""

    timeout_s: int = Field(default=10, ge=0, le=3600)
    escalate: bool = True


class SetAutostartArgs(WireModel):
    autostart: bool


class SetMemoryArgs(WireModel):
    memory_kib: int = Field(ge=MIN_MEMORY_KIB, le=2**40)


class SetVcpusArgs(WireModel):
    vcpus: int = Field(ge=1, le=4096)


class RenameArgs(WireModel):
    new_name: DomainName


ListFlag = Literal[
    "active",
    "inactive",
    "persistent",
    "transient",
    "running",
    "paused",
    "shutoff",
    "autostart",
    "no_autostart",
    "has_snapshot",
    "no_snapshot",
]


MetadataKind = Literal["description", "title", "element"]
"""libvirt's virDomainMetadataType, by name."""
MetadataPrefix = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")]
NamespaceUri = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class SetMetadataArgs(WireModel):
    """virDomainSetMetadata. ``metadata`` null (or empty) removes it. An ``element`` is
    one XML element, stored under the namespace ``uri`` with the prefix ``key``; it
    replaces the element of that namespace. ``live`` and ``config`` are libvirt's
    VIR_DOMAIN_AFFECT_* flags: the running definition, the persistent one, or (neither)
    the running one of an active domain and the persistent one of an inactive one."""

    type: MetadataKind
    metadata: Annotated[str, StringConstraints(max_length=MAX_XML_CHARS)] | None = None
    key: MetadataPrefix | None = None
    uri: NamespaceUri | None = None
    live: bool = False
    config: bool = False


class GetMetadataArgs(WireModel):
    """virDomainGetMetadata; ``live`` and ``config`` as for set_metadata, not both."""

    type: MetadataKind
    uri: NamespaceUri | None = None
    live: bool = False
    config: bool = False


class ConsoleOutputArgs(WireModel):
    """At most ``max_bytes`` of the domain's most recent console output."""

    max_bytes: int = Field(default=65536, ge=1, le=1 << 20)


class OpenConsoleArgs(WireModel):
    """``queue``: the caller's own exclusive queue, where the agent sends the console's
    output. ``force``: end a session already open on the domain (libvirt's
    VIR_DOMAIN_CONSOLE_FORCE); without it a second session is refused."""

    queue: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,255}$")]
    force: bool = False


class ListDomainsArgs(WireModel):
    """libvirt's ``virConnectListAllDomains`` flags: within a group (active/inactive,
    persistent/transient, running/paused/shutoff, autostart/no_autostart,
    has_snapshot/no_snapshot) any flag may
    match; across groups all must. No flags lists every domain."""

    flags: list[ListFlag] = []


StatGroup = Literal[
    "state", "cpu-total", "balloon", "vcpu", "interface", "block", "pids", "percpu", "affinity"
]
"""libvirt's stat groups (``virDomainStatsTypes``: state, cpu-total, balloon, vcpu,
interface, block) and the ones a container adds: ``pids``, ``percpu`` (CPU time per
host CPU) and ``affinity`` (the host CPUs it may run on and last ran on)."""
LIBVIRT_GROUPS: tuple[StatGroup, ...] = (
    "state",
    "cpu-total",
    "balloon",
    "vcpu",
    "interface",
    "block",
)


class StatsArgs(WireModel):
    """virDomainListGetStats: the groups wanted; none asks for libvirt's groups and
    ``pids``."""

    groups: list[StatGroup] = []


class AllStatsArgs(WireModel):
    """virConnectGetAllDomainStats: the groups (as ``StatsArgs``) of every domain that
    ``flags`` selects (as ``ListDomainsArgs``)."""

    groups: list[StatGroup] = []
    flags: list[ListFlag] = []


class CapabilitiesArgs(WireModel):
    """virConnectGetDomainCapabilities' virttype: the domain type its document is for."""

    virttype: Literal["docker", "lxc"] = "docker"


RegistryName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?$", max_length=255)
]


class LoginArgs(WireModel):
    registry: RegistryName
    username: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    password: SecretStr = Field(min_length=1, max_length=4096)

    @field_serializer("password", when_used="json")
    def _reveal_on_wire(self, password: SecretStr) -> str:
        return password.get_secret_value()


class LogoutArgs(WireModel):
    registry: RegistryName


class NetworkTarget(WireModel):
    """Names one network: by exactly one of name or UUID (as virNetworkLookupBy*)."""

    name: NetworkName | None = None
    uuid: Uuid | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> NetworkTarget:
        if (self.name is None) == (self.uuid is None):
            raise ValueError("target needs exactly one of name or uuid")
        return self

    def __str__(self) -> str:
        return f"name '{self.name}'" if self.name is not None else f"uuid '{self.uuid}'"


def _network_from_xml(data: Any) -> Any:
    """``xml`` (libvirt network XML) instead of ``spec``, read into a spec here."""
    if not isinstance(data, dict) or "xml" not in data:
        return data
    if "spec" in data:
        raise ValueError("takes spec or xml, not both")
    if not isinstance(data["xml"], str):
        raise ValueError("xml must be a string")
    return {**{k: v for k, v in data.items() if k != "xml"}, "spec": network_fields(data["xml"])}


def _document_network_xml(schema: dict[str, Any]) -> None:
    _document_xml(schema)
    schema["properties"]["xml"]["description"] = "libvirt network XML, instead of spec"


class NetworkDefineArgs(WireModel):
    """``spec``, or ``xml``: libvirt network XML, read into the spec on arrival."""

    model_config = ConfigDict(json_schema_extra=_document_network_xml)

    spec: NetworkSpec

    _from_xml = model_validator(mode="before")(_network_from_xml)


NetworkListFlag = Literal[
    "active", "inactive", "persistent", "transient", "autostart", "no_autostart"
]


class ListNetworksArgs(WireModel):
    """``virConnectListAllNetworks`` flags, grouped as for domains."""

    flags: list[NetworkListFlag] = []


class DhcpLeasesArgs(WireModel):
    mac: str | None = None
    """Only the leases of this MAC address."""


def _device_from_xml(data: Any) -> Any:
    """``xml`` (a libvirt ``<interface>`` or ``<filesystem>``) instead of the device."""
    if not isinstance(data, dict) or "xml" not in data:
        return data
    if "interface" in data or "filesystem" in data:
        raise ValueError("takes interface, filesystem or xml, one of them")
    if not isinstance(data["xml"], str):
        raise ValueError("xml must be a string")
    return {**{k: v for k, v in data.items() if k != "xml"}, **device_fields(data["xml"])}


def _document_device_xml(schema: dict[str, Any]) -> None:
    schema["properties"]["xml"] = {
        "type": "string",
        "maxLength": MAX_XML_CHARS,
        "title": "Xml",
        "description": "libvirt device XML (<interface> or <filesystem>), instead of the device",
    }
    schema["oneOf"] = [{"required": [key]} for key in ("interface", "filesystem", "xml")]


class DeviceArgs(WireModel):
    """One device (``interface``, ``filesystem``, or ``xml``: libvirt device XML) and
    where the change applies, as libvirt's VIR_DOMAIN_AFFECT_LIVE and _CONFIG: neither
    means the running domain if it runs, its definition otherwise. An interface to
    detach is found by its network (and MAC address, if given); a filesystem by target."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _document_device_xml(schema))

    interface: Interface | None = None
    filesystem: Mount | None = None
    live: bool = False
    config: bool = False

    _from_xml = model_validator(mode="before")(_device_from_xml)

    @model_validator(mode="after")
    def _one_device(self) -> DeviceArgs:
        if (self.interface is None) == (self.filesystem is None):
            raise ValueError("needs exactly one device: interface or filesystem")
        return self


AddressSource = Literal["lease", "agent", "arp"]


class InterfaceAddressesArgs(WireModel):
    """virDomainInterfaceAddresses' source; every source answers what Docker assigned."""

    source: AddressSource = "lease"


class CommandBase(WireModel):
    v: Literal[1] = WIRE_VERSION
    id: MessageId
    deadline: AwareTimestamp | None = None
    read_only: ClassVar[bool] = False
    """The op changes nothing on the host: running it again has no effect to double."""

    def expired(self, now: datetime) -> bool:
        return self.deadline is not None and now > self.deadline


class DomainCommand(CommandBase):
    """A command about one existing domain."""

    target: Target


class Define(CommandBase):
    op: Literal["domain.define"]
    args: DefineArgs


class CreateXml(CommandBase):
    op: Literal["domain.create_xml"]
    args: CreateXmlArgs


class Create(DomainCommand):
    op: Literal["domain.create"]
    args: CreateArgs = CreateArgs()


class Shutdown(DomainCommand):
    op: Literal["domain.shutdown"]
    args: ShutdownArgs = ShutdownArgs()


class Destroy(DomainCommand):
    op: Literal["domain.destroy"]
    args: NoArgs = NoArgs()


class Reboot(DomainCommand):
    op: Literal["domain.reboot"]
    args: RebootArgs = RebootArgs()


class Suspend(DomainCommand):
    op: Literal["domain.suspend"]
    args: NoArgs = NoArgs()


class Resume(DomainCommand):
    op: Literal["domain.resume"]
    args: NoArgs = NoArgs()


class UndefineArgs(WireModel):
    """virDomainUndefineFlags: ``snapshots`` (VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    deletes the domain's snapshots with it, without which a domain that has any is not
    undefined; ``volumes`` deletes the volumes it mounts that no other domain mounts.
    Volumes are kept unless asked."""

    snapshots: bool = False
    volumes: bool = False


class Undefine(DomainCommand):
    op: Literal["domain.undefine"]
    args: UndefineArgs = UndefineArgs()


class Lookup(DomainCommand):
    op: Literal["domain.lookup"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class GetInfo(DomainCommand):
    op: Literal["domain.get_info"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class GetState(DomainCommand):
    op: Literal["domain.get_state"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class SetAutostart(DomainCommand):
    op: Literal["domain.set_autostart"]
    args: SetAutostartArgs


class SetMemory(DomainCommand):
    op: Literal["domain.set_memory"]
    args: SetMemoryArgs


class SetVcpus(DomainCommand):
    op: Literal["domain.set_vcpus"]
    args: SetVcpusArgs


class Rename(DomainCommand):
    op: Literal["domain.rename"]
    args: RenameArgs


class GetXmlDesc(DomainCommand):
    op: Literal["domain.get_xml_desc"]
    read_only: ClassVar[bool] = True
    args: XmlDescArgs = XmlDescArgs()


class SetMetadata(DomainCommand):
    op: Literal["domain.set_metadata"]
    args: SetMetadataArgs


class GetMetadata(DomainCommand):
    op: Literal["domain.get_metadata"]
    read_only: ClassVar[bool] = True
    args: GetMetadataArgs


class GetConsoleOutput(DomainCommand):
    op: Literal["domain.get_console_output"]
    read_only: ClassVar[bool] = True
    args: ConsoleOutputArgs = ConsoleOutputArgs()


class OpenConsole(DomainCommand):
    op: Literal["domain.open_console"]
    args: OpenConsoleArgs


class ListDomains(CommandBase):
    op: Literal["host.list_domains"]
    read_only: ClassVar[bool] = True
    args: ListDomainsArgs = ListDomainsArgs()


class GetHostInfo(CommandBase):
    op: Literal["host.get_info"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class Ping(CommandBase):
    op: Literal["host.ping"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class GetStats(DomainCommand):
    op: Literal["domain.get_stats"]
    read_only: ClassVar[bool] = True
    args: StatsArgs = StatsArgs()


class TuningArgs(WireModel):
    """``live`` and ``config`` as for get_metadata, not both."""

    live: bool = False
    config: bool = False


class GetTuning(DomainCommand):
    """virDomainGetSchedulerParametersFlags and virDomainGetMemoryParameters: the
    domain's CPU and memory controls."""

    op: Literal["domain.get_tuning"]
    read_only: ClassVar[bool] = True
    args: TuningArgs = TuningArgs()


class SetTuningArgs(WireModel):
    """The controls to change (at least one), and which definitions: ``live``, ``config``
    or both; neither: the running one of an active domain, the persistent one otherwise
    (libvirt's VIR_DOMAIN_AFFECT_*)."""

    live: bool = False
    config: bool = False
    cpu_shares: int | None = Field(default=None, ge=MIN_CPU_SHARES, le=MAX_CPU_SHARES)
    memory_kib: int | None = Field(default=None, ge=MIN_MEMORY_KIB, le=2**40)
    soft_limit_kib: int | None = Field(default=None, ge=MIN_MEMORY_KIB, le=2**40)
    swap_hard_limit_kib: int | None = Field(default=None, ge=MIN_MEMORY_KIB, le=2**40)
    vcpus: int | None = Field(default=None, ge=1, le=4096)

    @model_validator(mode="after")
    def _something_to_set(self) -> SetTuningArgs:
        if not self.changes():
            raise ValueError("no control to set")
        return self

    def changes(self) -> dict[str, int]:
        """The spec's fields this sets, by name."""
        return self.model_dump(exclude={"live", "config"}, exclude_none=True)


class SetTuning(DomainCommand):
    """virDomainSetSchedulerParametersFlags, virDomainSetMemoryParameters, and
    virDomainSetMemoryFlags and virDomainSetVcpusFlags with their flags."""

    op: Literal["domain.set_tuning"]
    args: SetTuningArgs


class GetAllDomainStats(CommandBase):
    op: Literal["host.get_all_domain_stats"]
    read_only: ClassVar[bool] = True
    args: AllStatsArgs = AllStatsArgs()


class GetCapabilities(CommandBase):
    op: Literal["host.get_capabilities"]
    read_only: ClassVar[bool] = True
    args: CapabilitiesArgs = CapabilitiesArgs()


class GetNodeStats(CommandBase):
    op: Literal["host.get_node_stats"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class Login(CommandBase):
    op: Literal["host.login"]
    args: LoginArgs


class Logout(CommandBase):
    op: Literal["host.logout"]
    args: LogoutArgs


class NetworkCommand(CommandBase):
    """A command about one existing network."""

    target: NetworkTarget


class NetworkDefine(CommandBase):
    op: Literal["network.define"]
    args: NetworkDefineArgs


class NetworkCreate(NetworkCommand):
    op: Literal["network.create"]
    args: NoArgs = NoArgs()


class NetworkDestroy(NetworkCommand):
    op: Literal["network.destroy"]
    args: NoArgs = NoArgs()


class NetworkUndefine(NetworkCommand):
    op: Literal["network.undefine"]
    args: NoArgs = NoArgs()


class NetworkSetAutostart(NetworkCommand):
    op: Literal["network.set_autostart"]
    args: SetAutostartArgs


class NetworkLookup(NetworkCommand):
    op: Literal["network.lookup"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class NetworkGetXmlDesc(NetworkCommand):
    op: Literal["network.get_xml_desc"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class NetworkGetDhcpLeases(NetworkCommand):
    op: Literal["network.get_dhcp_leases"]
    read_only: ClassVar[bool] = True
    args: DhcpLeasesArgs = DhcpLeasesArgs()


class ListNetworks(CommandBase):
    op: Literal["host.list_networks"]
    read_only: ClassVar[bool] = True
    args: ListNetworksArgs = ListNetworksArgs()


class AttachDevice(DomainCommand):
    op: Literal["domain.attach_device"]
    args: DeviceArgs


class DetachDevice(DomainCommand):
    op: Literal["domain.detach_device"]
    args: DeviceArgs


class InterfaceAddresses(DomainCommand):
    op: Literal["domain.interface_addresses"]
    read_only: ClassVar[bool] = True
    args: InterfaceAddressesArgs = InterfaceAddressesArgs()


class PoolArgs(WireModel):
    pool: PoolName


class VolumeArgs(WireModel):
    pool: PoolName
    volume: VolumeName


class VolumeCreateArgs(WireModel):
    """``name`` and ``capacity`` (bytes), or ``xml``: libvirt volume XML."""

    pool: PoolName
    name: VolumeName
    capacity: int = Field(default=0, ge=0, le=2**63 - 1)

    @model_validator(mode="before")
    @classmethod
    def _from_xml(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "xml" not in data:
            return data
        if not isinstance(data["xml"], str):
            raise ValueError("xml must be a string")
        rest = {key: value for key, value in data.items() if key != "xml"}
        return {**rest, **volume_fields(data["xml"])}


class SnapshotArgs(WireModel):
    snapshot: SnapshotName


class SnapshotCreateArgs(WireModel):
    """``name`` (the creation time in seconds when left out) and ``description``, or
    ``xml``: libvirt ``<domainsnapshot>`` XML."""

    name: SnapshotName | None = None
    description: Description = ""

    @model_validator(mode="before")
    @classmethod
    def _from_xml(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "xml" not in data:
            return data
        if not isinstance(data["xml"], str):
            raise ValueError("xml must be a string")
        rest = {key: value for key, value in data.items() if key != "xml"}
        return {**rest, **snapshot_fields(data["xml"])}


class SnapshotRevertArgs(WireModel):
    """virDomainRevertToSnapshot: the domain runs afterwards if it ran when the
    snapshot was taken, unless ``start`` says (REVERT_RUNNING, REVERT_PAUSED)."""

    snapshot: SnapshotName
    start: Literal["running", "paused"] | None = None


class ListPools(CommandBase):
    op: Literal["host.list_pools"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class PoolLookup(CommandBase):
    op: Literal["pool.lookup"]
    read_only: ClassVar[bool] = True
    args: PoolArgs


class PoolGetXmlDesc(CommandBase):
    op: Literal["pool.get_xml_desc"]
    read_only: ClassVar[bool] = True
    args: PoolArgs


class PoolListVolumes(CommandBase):
    op: Literal["pool.list_volumes"]
    read_only: ClassVar[bool] = True
    args: PoolArgs


class VolumeCreate(CommandBase):
    op: Literal["volume.create"]
    args: VolumeCreateArgs


class VolumeDelete(CommandBase):
    op: Literal["volume.delete"]
    args: VolumeArgs


class VolumeGetInfo(CommandBase):
    op: Literal["volume.get_info"]
    read_only: ClassVar[bool] = True
    args: VolumeArgs


class VolumeGetXmlDesc(CommandBase):
    op: Literal["volume.get_xml_desc"]
    read_only: ClassVar[bool] = True
    args: VolumeArgs


class SnapshotCreate(DomainCommand):
    op: Literal["domain.snapshot_create"]
    args: SnapshotCreateArgs = SnapshotCreateArgs()


class ListSnapshots(DomainCommand):
    op: Literal["domain.snapshot_list"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class SnapshotCurrent(DomainCommand):
    op: Literal["domain.snapshot_current"]
    read_only: ClassVar[bool] = True
    args: NoArgs = NoArgs()


class SnapshotLookup(DomainCommand):
    op: Literal["snapshot.lookup"]
    read_only: ClassVar[bool] = True
    args: SnapshotArgs


class SnapshotGetXmlDesc(DomainCommand):
    op: Literal["snapshot.get_xml_desc"]
    read_only: ClassVar[bool] = True
    args: SnapshotArgs


class SnapshotRevert(DomainCommand):
    op: Literal["domain.snapshot_revert"]
    args: SnapshotRevertArgs


class SnapshotDelete(DomainCommand):
    op: Literal["snapshot.delete"]
    args: SnapshotArgs


Command = Annotated[
    Define
    | CreateXml
    | Create
    | Shutdown
    | Destroy
    | Reboot
    | Suspend
    | Resume
    | Undefine
    | Lookup
    | GetInfo
    | GetState
    | SetAutostart
    | SetMemory
    | SetVcpus
    | Rename
    | GetXmlDesc
    | ListDomains
    | GetHostInfo
    | Ping
    | Login
    | Logout
    | GetStats
    | GetTuning
    | SetTuning
    | GetAllDomainStats
    | GetCapabilities
    | GetNodeStats
    | NetworkDefine
    | NetworkCreate
    | NetworkDestroy
    | NetworkUndefine
    | NetworkSetAutostart
    | NetworkLookup
    | NetworkGetXmlDesc
    | NetworkGetDhcpLeases
    | ListNetworks
    | AttachDevice
    | DetachDevice
    | InterfaceAddresses
    | ListPools
    | PoolLookup
    | PoolGetXmlDesc
    | PoolListVolumes
    | VolumeCreate
    | VolumeDelete
    | VolumeGetInfo
    | VolumeGetXmlDesc
    | SnapshotCreate
    | ListSnapshots
    | SnapshotCurrent
    | SnapshotLookup
    | SnapshotGetXmlDesc
    | SnapshotRevert
    | SnapshotDelete
    | SetMetadata
    | GetMetadata
    | GetConsoleOutput
    | OpenConsole,
    Field(discriminator="op"),
]

COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)


def op_of(model: type[CommandBase]) -> str:
    """The op a command model stands for: the value of its ``op`` literal."""
    return str(get_args(model.model_fields["op"].annotation)[0])


OPS: tuple[str, ...] = tuple(sorted(op_of(model) for model in get_args(get_args(Command)[0])))


class InvalidCommand(VirtbusError, ValueError):
    """A command body that is not a valid command; ``reason`` says why, for a person, and
    ``code`` is the libvirt error to answer with."""

    def __init__(self, reason: str, code: ErrorCode = ErrorCode.INVALID_ARG) -> None:
        super().__init__(code, reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def parse_command(body: bytes, fallback_id: str | None = None) -> Command:
    """Decode and validate one command body.

    A body without ``id`` takes ``fallback_id`` (the AMQP ``message_id``). Raises
    InvalidCommand with a readable reason for anything that is not a valid command:
    XML_ERROR or CONFIG_UNSUPPORTED for domain XML that cannot be read or done,
    INVALID_ARG for everything else.
    """
    try:
        # the usual body, read once; anything else is read again below, for its reason
        return COMMAND_ADAPTER.validate_json(body)
    except (ValueError, XmlError):
        pass
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError) as error:
        # ValueError covers undecodable bytes, bad JSON and integers beyond Python's
        # digit limit; RecursionError, nesting deeper than the decoder goes
        raise InvalidCommand(f"body is not UTF-8 JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidCommand("body must be a JSON object")
    if "id" not in document and fallback_id is not None:
        document["id"] = fallback_id
    op = document.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise InvalidCommand(f"unknown op {op!r}")
    try:
        return COMMAND_ADAPTER.validate_json(json.dumps(document))
    except ValueError as error:
        raise InvalidCommand(_describe(error)) from None
    except XmlError as error:
        raise InvalidCommand(error.detail, error.code) from None


def _describe(error: ValueError) -> str:
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"][1:]) or "body"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)
