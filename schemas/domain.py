"""A domain's definition (the ``spec``) and the record that describes one.

Everything a spec says is checked here, at the edge: paths are absolute and normal (no
``..``), image references follow Docker's reference grammar, strings that reach a
process carry no NUL. No field can ask for privileged mode, host namespaces, devices or
capabilities: unknown fields are refused, and ``network`` cannot be ``host``.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Annotated, Literal

from docker_image.reference import InvalidReference, Reference
from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.base import DomainName, Uuid, WireModel
from schemas.codes import DomainState, reason_of
from schemas.xmldoc import normal_fragment

MIN_MEMORY_KIB = 6 * 1024
"""Docker refuses a memory limit below 6 MiB."""
MIN_CPU_SHARES, MAX_CPU_SHARES = 2, 262144
"""The kernel's bounds of ``cpu.shares``."""
TUNABLES = ("memory_kib", "soft_limit_kib", "swap_hard_limit_kib", "vcpus", "cpu_shares")
"""The spec's fields that can change while the domain runs (libvirt's tunables)."""
MAX_PIDS = 4_194_304
"""The kernel's highest ``pid_max``."""


def _normal_path(path: str) -> str:
    """The path without ``//``, ``.`` components or a trailing ``/``; ``..`` is refused
    rather than resolved, so a path never climbs out of where it says it is."""
    if ".." in path.split("/"):
        raise ValueError("path must not contain '..'")
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/")


def _image_reference(image: str) -> str:
    try:
        Reference.parse_normalized_named(image)
    except InvalidReference as error:
        raise ValueError(f"not a valid image reference: {error}") from None
    return image


AbsolutePath = Annotated[
    str,
    StringConstraints(pattern=r"^/[^\x00-\x1f\x7f]*$", min_length=1, max_length=4096),
    AfterValidator(_normal_path),
]
ImageRef = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$", min_length=1, max_length=255),
    AfterValidator(_image_reference),
]
"""An image reference as Docker parses it: ``[registry[:port]/]path[:tag][@digest]``."""
EnvKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
UserRef = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$"
    ),
]
NetworkName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
MacAddress = Annotated[
    str, StringConstraints(pattern=r"^[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$", to_lower=True)
]
"""A unicast Ethernet address, ``52:54:00:12:34:56``; kept in lower case."""
ObjectName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
"""The name of a storage pool, volume or snapshot."""
PoolName = ObjectName
VolumeName = ObjectName
SnapshotName = ObjectName
Description = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=4096)]
MetadataKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
# a process receives these as C strings, which end at the first NUL
Argument = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=4096)]
EnvValue = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=32768)]
MetadataValue = Annotated[str, StringConstraints(max_length=4096)]
Title = Annotated[str, StringConstraints(pattern=r"^[^\n]*$", max_length=4096)]
"""libvirt's ``<title>``: one line."""
DomainDescription = Annotated[str, StringConstraints(max_length=65536)]
"""libvirt's ``<description>``: any text."""
MetadataXml = Annotated[
    str, StringConstraints(min_length=1, max_length=65536), AfterValidator(normal_fragment)
]
"""The elements of libvirt's ``<metadata>``, as XML text; normalised on the way in, so the
same elements always read as the same text."""


class Mount(WireModel):
    """A bind mount of a host path; which host paths may be mounted is the host policy's."""

    source: AbsolutePath
    target: AbsolutePath
    readonly: bool = False


class Interface(WireModel):
    """A further network interface: the domain joins ``network`` beside its first one."""

    network: NetworkName
    mac: MacAddress | None = None

    @field_validator("network")
    @classmethod
    def _joinable(cls, network: str) -> str:
        if network in ("none", "host"):
            raise ValueError(f"network '{network}' cannot be a further interface")
        return network


def derived_mac(uuid: object, network: str) -> str:
    """The MAC address a domain's interface on ``network`` has when its spec names none:
    in libvirt's ``52:54:00`` range, derived from the domain's UUID and the network, so
    it is the same at every start and on every host."""
    digest = hashlib.sha256(f"{uuid}/{network}".encode()).digest()
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in digest[:3])


class VolumeMount(WireModel):
    """A volume of a storage pool mounted into the domain (libvirt's ``<filesystem
    type='volume'>``); which domain may mount which volume is the host policy's."""

    volume: VolumeName
    target: AbsolutePath
    pool: PoolName = "default"
    readonly: bool = False


class HealthCheck(WireModel):
    """A command Docker runs in the domain every ``interval_s``: healthy when it exits 0,
    unhealthy after ``retries`` failures in a row (each bounded by ``timeout_s``)."""

    command: list[Argument] = Field(min_length=1, max_length=256)
    interval_s: int = Field(default=30, ge=1, le=3600)
    timeout_s: int = Field(default=30, ge=1, le=3600)
    retries: int = Field(default=3, ge=1, le=100)


class DomainSpec(WireModel):
    """A domain's definition (docs/protocol.md). The image must be on the host or pullable.

    Limits left out are the host's: no memory or CPU limit, and the policy's default
    number of processes (``pids_limit``).
    """

    name: DomainName
    uuid: Uuid | None = None
    image: ImageRef
    command: list[Argument] | None = Field(default=None, min_length=1)
    env: dict[EnvKey, EnvValue] = {}
    workdir: AbsolutePath | None = None
    user: UserRef | None = None
    memory_kib: int | None = Field(default=None, ge=MIN_MEMORY_KIB, le=2**40)
    """The hard limit of the domain's memory (libvirt's ``<memory>``, and memtune's
    ``hard_limit``)."""
    soft_limit_kib: int | None = Field(default=None, ge=MIN_MEMORY_KIB, le=2**40)
    """What the kernel reclaims the domain's memory down to under host memory pressure."""
    swap_hard_limit_kib: int | None = Field(default=None, ge=MIN_MEMORY_KIB, le=2**40)
    """The limit of memory and swap together; None: ``memory_kib`` (no swap)."""
    vcpus: int | None = Field(default=None, ge=1, le=4096)
    cpu_shares: int | None = Field(default=None, ge=MIN_CPU_SHARES, le=MAX_CPU_SHARES)
    """The domain's weight against others when the host's CPUs are busy (cgroup v1's
    ``cpu.shares``; the kernel's default 1,024 if None)."""
    pids_limit: int | None = Field(default=None, ge=1, le=MAX_PIDS)
    autostart: bool = False
    on_crash: Literal["destroy", "restart"] = "destroy"
    mounts: list[Mount] = Field(default=[], max_length=64)
    volumes: list[VolumeMount] = Field(default=[], max_length=64)
    network: NetworkName = "none"
    mac: MacAddress | None = None
    """The MAC address of the interface on ``network``; derived from the UUID if None."""
    interfaces: list[Interface] = Field(default=[], max_length=16)
    """Interfaces beyond the one on ``network``, in the order they were added."""
    init: bool = True
    metadata: dict[MetadataKey, MetadataValue] = {}
    metadata_xml: MetadataXml | None = None
    title: Title | None = None
    description: DomainDescription | None = None
    console: bool = False
    """An interactive console (libvirt's ``<console type='pty'>``): the container gets
    a terminal and an open standard input, which ``domain.open_console`` attaches to."""
    healthcheck: HealthCheck | None = None
    """Its transitions are ``health`` events (docs/console-metadata.md)."""

    @field_validator("network")
    @classmethod
    def _no_host_namespace(cls, network: str) -> str:
        if network == "host":
            raise ValueError("network 'host' would share the host's namespace")
        return network

    @model_validator(mode="after")
    def _interfaces_need_a_network(self) -> DomainSpec:
        if self.network == "none" and (self.interfaces or self.mac is not None):
            raise ValueError("a domain on network 'none' has no interface")
        joined = [self.network, *(i.network for i in self.interfaces)]
        if len(set(joined)) != len(joined):
            raise ValueError("a domain joins each network once")
        return self

    @model_validator(mode="after")
    def _memory_limits_in_order(self) -> DomainSpec:
        self.check_memory_limits()
        return self

    def check_memory_limits(self) -> None:
        """Raise ValueError unless soft limit ≤ hard limit ≤ swap limit, as Docker (and,
        for swap, libvirt) requires; a swap limit needs a hard limit."""
        memory, soft, swap = self.memory_kib, self.soft_limit_kib, self.swap_hard_limit_kib
        if swap is not None and memory is None:
            raise ValueError("a swap_hard_limit needs a memory hard_limit")
        if swap is not None and memory is not None and memory > swap:
            raise ValueError(
                "memory hard_limit tunable value must be lower than or equal to swap_hard_limit"
            )
        if soft is not None and memory is not None and soft > memory:
            raise ValueError(
                "a memory soft_limit above the hard_limit: Docker refuses a reservation above "
                "the memory limit"
            )

    def tunables(self) -> dict[str, int]:
        """The controls the domain's container is given, by field name; those left to the
        host are left out, and so is a swap limit equal to the memory limit (no swap)."""
        given = {name: getattr(self, name) for name in TUNABLES}
        if given["swap_hard_limit_kib"] == self.memory_kib:
            del given["swap_hard_limit_kib"]
        return {name: value for name, value in given.items() if value is not None}

    def nics(self) -> list[Interface]:
        """Every interface, the one on ``network`` first, each with its MAC address
        (derived from the UUID where none is given; None without a UUID)."""
        if self.network == "none":
            return []
        return [
            Interface.model_construct(
                network=nic.network,
                mac=nic.mac or (derived_mac(self.uuid, nic.network) if self.uuid else None),
            )
            for nic in [
                Interface.model_construct(network=self.network, mac=self.mac),
                *self.interfaces,
            ]
        ]


State = Annotated[int, AfterValidator(DomainState)]
"""``virDomainState``: a number on the wire, a DomainState (an ``int``) in Python, so the
agent may build records from plain numbers."""


def reason_enum(reason: int, info: ValidationInfo) -> int:
    """A ``reason`` field's validator: its state's reason enum member where there is one
    (``ShutoffReason.DESTROYED``), an int either way, and a number on the wire."""
    state = info.data.get("state")
    return reason if state is None else reason_of(state, reason)


class DomainRecord(WireModel):
    """A domain as it stands: libvirt's identity, state and reason."""

    name: DomainName
    uuid: Uuid
    id: int
    state: State
    reason: int
    persistent: bool
    autostart: bool

    _reason = field_validator("reason")(reason_enum)
