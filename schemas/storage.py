"""Storage pools, volumes and domain snapshots: their names, records and libvirt XML.

A pool is libvirt's virStoragePool over the engine's local volume driver; a volume,
libvirt's virStorageVol, is one engine volume. A snapshot is libvirt's disk-only
virDomainSnapshot: the domain's filesystem committed into an image.
"""

from __future__ import annotations

from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

from pydantic import Field

from schemas.base import DomainName, Uuid, WireModel
from schemas.codes import ErrorCode
from schemas.domain import PoolName, SnapshotName, VolumeName
from schemas.domxml import unit_scale
from schemas.xmldoc import XmlError, parse_xml

DEFAULT_POOL = "default"
MAX_CAPACITY = 2**63 - 1


class PoolRecord(WireModel):
    """virStoragePoolGetInfo and the identity of a pool. Sizes in bytes; the local
    driver has no capacity of its own, so ``capacity`` and ``available`` are 0."""

    name: PoolName
    uuid: Uuid
    type: Literal["dir"] = "dir"
    active: bool = True
    persistent: bool = True
    autostart: bool = True
    capacity: int = 0
    allocation: int = 0
    available: int = 0
    path: str
    volumes: int = Field(ge=0)


class PoolList(WireModel):
    pools: list[PoolRecord]


class VolumeRecord(WireModel):
    """virStorageVolGetInfo and the identity of a volume. ``capacity`` is the size it
    was created with (the local driver does not enforce it); ``allocation`` is 0 when
    the engine does not say."""

    pool: PoolName
    name: VolumeName
    key: str
    path: str
    capacity: int = Field(ge=0)
    allocation: int = Field(ge=0)


class VolumeList(WireModel):
    volumes: list[VolumeRecord]


class SnapshotRecord(WireModel):
    """A disk-only snapshot of a domain: libvirt's virDomainSnapshot."""

    name: SnapshotName
    domain: DomainName
    domain_uuid: Uuid
    creation_time: int
    description: str = ""
    state: Literal["disk-snapshot"] = "disk-snapshot"
    active: bool
    """Whether the domain was running when the snapshot was taken."""
    parent: SnapshotName | None = None
    current: bool = False


class SnapshotList(WireModel):
    snapshots: list[SnapshotRecord]


def _attr(name: str, value: str) -> str:
    return f"{name}={quoteattr(value)}"


def pool_xml(pool: PoolRecord) -> str:
    return "\n".join(
        [
            f"<pool {_attr('type', pool.type)}>",
            f"  <name>{escape(pool.name)}</name>",
            f"  <uuid>{pool.uuid}</uuid>",
            f"  <capacity unit='bytes'>{pool.capacity}</capacity>",
            f"  <allocation unit='bytes'>{pool.allocation}</allocation>",
            f"  <available unit='bytes'>{pool.available}</available>",
            "  <source>",
            "  </source>",
            "  <target>",
            f"    <path>{escape(pool.path)}</path>",
            "  </target>",
            "</pool>",
            "",
        ]
    )


def volume_xml(volume: VolumeRecord) -> str:
    return "\n".join(
        [
            "<volume type='dir'>",
            f"  <name>{escape(volume.name)}</name>",
            f"  <key>{escape(volume.key)}</key>",
            f"  <capacity unit='bytes'>{volume.capacity}</capacity>",
            f"  <allocation unit='bytes'>{volume.allocation}</allocation>",
            "  <target>",
            f"    <path>{escape(volume.path)}</path>",
            "    <format type='dir'/>",
            "  </target>",
            "</volume>",
            "",
        ]
    )


def snapshot_xml(snapshot: SnapshotRecord, domain_xml: str) -> str:
    """libvirt's ``<domainsnapshot>``, with the domain's definition at the time."""
    lines = [
        "<domainsnapshot>",
        f"  <name>{escape(snapshot.name)}</name>",
    ]
    if snapshot.description:
        lines.append(f"  <description>{escape(snapshot.description)}</description>")
    lines.append(f"  <state>{snapshot.state}</state>")
    if snapshot.parent is not None:
        lines += ["  <parent>", f"    <name>{escape(snapshot.parent)}</name>", "  </parent>"]
    lines += [
        f"  <creationTime>{snapshot.creation_time}</creationTime>",
        "  <memory snapshot='no'/>",
    ]
    lines += ["  " + line for line in domain_xml.strip().splitlines()]
    lines += ["</domainsnapshot>", ""]
    return "\n".join(lines)


def _only(element: Any, where: str, children: set[str]) -> None:
    for child in element:
        if child.tag not in children:
            raise XmlError(
                ErrorCode.CONFIG_UNSUPPORTED, f"unsupported configuration: {where}<{child.tag}>"
            )


def volume_fields(xml: str) -> dict[str, Any]:
    """``name`` and ``capacity`` (bytes) of libvirt volume XML (virStorageVolCreateXML);
    XmlError for anything else a Docker volume cannot be."""
    root = parse_xml(xml)
    if root.tag != "volume":
        raise XmlError(
            ErrorCode.XML_ERROR, f"unexpected root element <{root.tag!s}>, expecting <volume>"
        )
    _only(root, "<volume>", {"name", "capacity", "allocation", "target", "key"})
    name = root.findtext("name")
    if not name:
        raise XmlError(ErrorCode.XML_ERROR, "missing volume name element")
    capacity = 0
    element = root.find("capacity")
    if element is not None:
        capacity = _bytes(element.text or "", element.get("unit", "bytes"))
    target = root.find("target")
    if target is not None:
        _only(target, "<volume><target>", {"format", "path", "permissions"})
        form = target.find("format")
        if form is not None and form.get("type", "raw") not in ("raw", "dir"):
            raise XmlError(
                ErrorCode.CONFIG_UNSUPPORTED,
                f"unsupported configuration: volume format '{form.get('type')}'",
            )
    return {"name": name.strip(), "capacity": capacity}


def _bytes(text: str, unit: str) -> int:
    scale = unit_scale(unit)
    try:
        value = int(text.strip())
    except ValueError:
        raise XmlError(ErrorCode.XML_ERROR, f"invalid capacity '{text}'") from None
    if scale is None:
        raise XmlError(ErrorCode.XML_ERROR, f"unknown unit '{unit}'")
    if value < 0 or value * scale > MAX_CAPACITY:
        raise XmlError(ErrorCode.INVALID_ARG, f"capacity '{text}' is out of range")
    return value * scale


def snapshot_fields(xml: str) -> dict[str, Any]:
    """``name`` and ``description`` of libvirt ``<domainsnapshot>`` XML (either may be
    missing); XmlError for what a disk-only container snapshot cannot be."""
    root = parse_xml(xml)
    if root.tag != "domainsnapshot":
        raise XmlError(
            ErrorCode.XML_ERROR,
            f"unexpected root element <{root.tag!s}>, expecting <domainsnapshot>",
        )
    _only(root, "<domainsnapshot>", {"name", "description", "memory", "disks"})
    memory = root.find("memory")
    if memory is not None and (memory.get("snapshot", "no") != "no" or memory.get("file")):
        raise XmlError(
            ErrorCode.CONFIG_UNSUPPORTED,
            "unsupported configuration: a memory snapshot (a container has no memory image)",
        )
    fields: dict[str, Any] = {}
    name = root.findtext("name")
    if name:
        fields["name"] = name.strip()
    description = root.findtext("description")
    if description:
        fields["description"] = description
    return fields
