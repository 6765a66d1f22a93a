"""A domain's definition (the ``spec``) and the record that describes one."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, field_validator

from schemas.base import DomainName, Uuid, WireModel
from schemas.xmldoc import normal_fragment

AbsolutePath = Annotated[
    str, StringConstraints(pattern=r"^/[^\x00]*$", min_length=1, max_length=4096)
]
ImageRef = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$", min_length=1, max_length=255),
]
EnvKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
UserRef = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$"
    ),
]
NetworkName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
MetadataKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
MetadataXml = Annotated[
    str, StringConstraints(min_length=1, max_length=65536), AfterValidator(normal_fragment)
]
"""The elements of libvirt's ``<metadata>``, as XML text; normalised on the way in, so the
same elements always read as the same text."""

MIN_MEMORY_KIB = 6 * 1024
"""Docker refuses a memory limit below 6 MiB."""


def _check_path(path: str) -> str:
    if any(part == ".." for part in path.split("/")):
        raise ValueError("path must not contain '..'")
    return path


class Mount(WireModel):
    source: AbsolutePath
    target: AbsolutePath
    readonly: bool = False

    _clean = field_validator("source", "target")(_check_path)


class DomainSpec(WireModel):
    """A domain's definition (DESIGN §6). The image must be on the host or pullable."""

    name: DomainName
    uuid: Uuid | None = None
    image: ImageRef
    command: list[Annotated[str, StringConstraints(max_length=4096)]] | None = Field(
        default=None, min_length=1
    )
    env: dict[EnvKey, Annotated[str, StringConstraints(max_length=32768)]] = {}
    workdir: AbsolutePath | None = None
    user: UserRef | None = None
    memory_kib: int | None = Field(default=None, ge=MIN_MEMORY_KIB, le=2**40)
    vcpus: int | None = Field(default=None, ge=1, le=4096)
    autostart: bool = False
    on_crash: Literal["destroy", "restart"] = "destroy"
    mounts: list[Mount] = []
    network: NetworkName = "none"
    init: bool = True
    metadata: dict[MetadataKey, Annotated[str, StringConstraints(max_length=4096)]] = {}
    metadata_xml: MetadataXml | None = None

    _clean = field_validator("workdir")(lambda path: None if path is None else _check_path(path))

    @field_validator("network")
    @classmethod
    def _no_host_namespace(cls, network: str) -> str:
        if network == "host":
            raise ValueError("network 'host' would share the host's namespace")
        return network


class DomainRecord(WireModel):
    """A domain as it stands: libvirt's identity, state and reason numbers."""

    name: DomainName
    uuid: Uuid
    id: int
    state: int
    reason: int
    persistent: bool
    autostart: bool
