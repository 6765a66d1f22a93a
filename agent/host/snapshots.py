"""Disk-only snapshots: libvirt's virDomainSnapshot as images committed from a domain.

A snapshot is the domain's filesystem committed into an image of this host
(``virtbus-snapshot:<domain uuid>.<name>``), labelled with the domain's UUID, the
snapshot's name, time, description and parent, and the domain's definition at the
time: the engine holds everything, the agent's store nothing. What a snapshot does not
hold: the domain's memory and processes (there is no memory image of a container) and
what its volumes and host mounts contain (they are not part of its filesystem).

A revert rebuilds the domain's container from the snapshot's image, beside the old one,
with the domain's name and UUID kept; its events are libvirt's "from snapshot" ones.
An image goes when no snapshot names it and no domain runs from it.
"""

from __future__ import annotations

import time

from agent.errors import VirtError, invalid
from agent.host.domains import DomainObj
from agent.host.driver import (
    CREATED_LABEL,
    SNAPSHOT_LABEL,
    SNAPSHOT_REPOSITORY,
    UUID_LABEL,
    SnapshotImage,
)
from agent.host.mounts import MountGuard
from agent.host.operations import Operations, Step, handles
from agent.host.translate import Mode
from schemas.codes import ErrorCode, Lifecycle
from schemas.commands import (
    ListSnapshots,
    SnapshotCreate,
    SnapshotCurrent,
    SnapshotDelete,
    SnapshotGetXmlDesc,
    SnapshotLookup,
    SnapshotRevert,
)
from schemas.domain import DomainRecord, DomainSpec
from schemas.domxml import domain_xml
from schemas.replies import DomainXml
from schemas.storage import SnapshotList, SnapshotRecord, snapshot_xml

DESCRIPTION_LABEL = "virtbus.snapshot.description"
PARENT_LABEL = "virtbus.snapshot.parent"
ACTIVE_LABEL = "virtbus.snapshot.active"
SPEC_LABEL = "virtbus.snapshot.spec"


def _tag(domain: DomainObj, name: str) -> str:
    return f"{domain.uuid.hex}.{name}"


async def _images(ops: Operations, domain: DomainObj) -> list[SnapshotImage]:
    images = [
        image
        for image in await ops.driver.snapshot_images()
        if image.labels.get(UUID_LABEL) == str(domain.uuid) and SNAPSHOT_LABEL in image.labels
    ]
    return sorted(images, key=lambda i: (int(i.labels.get(CREATED_LABEL, "0")), i.tag))


def _record(domain: DomainObj, image: SnapshotImage, names: set[str]) -> SnapshotRecord:
    labels = image.labels
    name = labels[SNAPSHOT_LABEL]
    parent = labels.get(PARENT_LABEL) or None
    return SnapshotRecord(
        name=name,
        domain=domain.name,
        domain_uuid=domain.uuid,
        creation_time=int(labels.get(CREATED_LABEL, "0")),
        description=labels.get(DESCRIPTION_LABEL, ""),
        active=labels.get(ACTIVE_LABEL) == "1",
        parent=parent if parent in names else None,
        current=name == domain.current_snapshot,
    )


async def _find(
    ops: Operations, domain: DomainObj, name: str
) -> tuple[SnapshotImage, SnapshotRecord]:
    images = await _images(ops, domain)
    names = {i.labels[SNAPSHOT_LABEL] for i in images}
    for image in images:
        if image.labels[SNAPSHOT_LABEL] == name:
            return image, _record(domain, image, names)
    raise VirtError(ErrorCode.NO_DOMAIN_SNAPSHOT, f"no domain snapshot with matching name '{name}'")


def _spec(domain: DomainObj, image: SnapshotImage) -> DomainSpec:
    """The definition the snapshot was taken with, under the domain's name and UUID."""
    spec = DomainSpec.model_validate_json(image.labels[SPEC_LABEL])
    return spec.model_copy(update={"name": domain.name, "uuid": domain.spec.uuid})


@handles(SnapshotCreate)
async def create(ops: Operations, command: SnapshotCreate) -> SnapshotRecord:
    """Committed without pausing the domain: the filesystem as a crash would leave it,
    as libvirt's disk-only snapshot without quiescing."""
    domain = ops.domains.get(command.target)
    name = command.args.name or str(int(time.time()))
    images = await _images(ops, domain)
    if any(i.labels[SNAPSHOT_LABEL] == name for i in images):
        raise invalid(f"domain snapshot '{name}' already exists")
    labels = {
        UUID_LABEL: str(domain.uuid),
        SNAPSHOT_LABEL: name,
        CREATED_LABEL: str(int(time.time())),
        DESCRIPTION_LABEL: command.args.description,
        PARENT_LABEL: domain.current_snapshot or "",
        ACTIVE_LABEL: "1" if domain.active else "0",
        SPEC_LABEL: domain.next_definition.model_dump_json(),
    }
    await ops.driver.commit(ops.handle_of(domain), _tag(domain, name), labels)
    domain.snapshots = len(images) + 1
    domain.current_snapshot = name
    _, record = await _find(ops, domain, name)
    return record


@handles(ListSnapshots)
async def list_snapshots(ops: Operations, command: ListSnapshots) -> SnapshotList:
    domain = ops.domains.get(command.target)
    images = await _images(ops, domain)
    names = {i.labels[SNAPSHOT_LABEL] for i in images}
    return SnapshotList(snapshots=[_record(domain, i, names) for i in images])


@handles(SnapshotCurrent)
async def current(ops: Operations, command: SnapshotCurrent) -> SnapshotRecord:
    domain = ops.domains.get(command.target)
    if domain.current_snapshot is None:
        raise VirtError(ErrorCode.NO_DOMAIN_SNAPSHOT, "the domain does not have a current snapshot")
    _, record = await _find(ops, domain, domain.current_snapshot)
    return record


@handles(SnapshotLookup)
async def lookup(ops: Operations, command: SnapshotLookup) -> SnapshotRecord:
    _, record = await _find(ops, ops.domains.get(command.target), command.args.snapshot)
    return record


@handles(SnapshotGetXmlDesc)
async def xml_desc(ops: Operations, command: SnapshotGetXmlDesc) -> DomainXml:
    domain = ops.domains.get(command.target)
    image, record = await _find(ops, domain, command.args.snapshot)
    return DomainXml(xml=snapshot_xml(record, domain_xml(_spec(domain, image))))


@handles(SnapshotRevert)
async def revert(ops: Operations, command: SnapshotRevert) -> DomainRecord:
    """The domain runs afterwards if it ran when the snapshot was taken (or ``start``
    says so). Its definition becomes the snapshot's, checked against the policy now."""
    domain = ops.domains.get(command.target)
    if not domain.persistent:
        raise invalid("cannot revert a transient domain to a snapshot")
    image, record = await _find(ops, domain, command.args.snapshot)
    spec = _spec(domain, image)
    ops.mounts.admit(spec, domain.uuid)
    start = command.args.start or ("running" if record.active else None)
    built = MountGuard.pinned(spec).model_copy(
        update={"image": f"{SNAPSHOT_REPOSITORY}:{image.tag}"}
    )
    old = ops.handle_of(domain)

    async def build_beside() -> None:
        domain.handle = await ops.driver.create(f"_{domain.name}", domain.uuid, built)

    async def swap() -> None:
        await ops.driver.remove(old)
        await ops.driver.rename(ops.handle_of(domain), domain.name)

    steps: list[Step] = [build_beside, swap]
    until = Lifecycle.DEFINED_FROM_SNAPSHOT
    if start is not None:
        steps.append(lambda: ops.verify_mounts(domain, spec))
        steps.append(lambda: ops.driver.start(ops.handle_of(domain)))
        until = Lifecycle.STARTED_FROM_SNAPSHOT
    if start == "paused":
        steps.append(lambda: ops.driver.pause(ops.handle_of(domain)))
        until = Lifecycle.SUSPENDED_PAUSED
    on_the_way = {
        Lifecycle.STOPPED_FROM_SNAPSHOT,
        Lifecycle.DEFINED_FROM_SNAPSHOT,
        Lifecycle.STARTED_FROM_SNAPSHOT,
    } - {until}
    await ops.act(
        domain, command.id, frozenset({until}), *steps, mode=Mode.REVERT, via=frozenset(on_the_way)
    )
    domain.spec, domain.pending = spec, None
    domain.current_snapshot = record.name
    await ops.driver.prune_snapshot_images()
    return ops.saved(domain)


@handles(SnapshotDelete)
async def delete(ops: Operations, command: SnapshotDelete) -> SnapshotRecord:
    """The snapshot's parent becomes current if it was; its image goes unless the
    domain runs from it (then it goes once the domain no longer does)."""
    domain = ops.domains.get(command.target)
    image, record = await _find(ops, domain, command.args.snapshot)
    await ops.driver.remove_snapshot_image(image.tag)
    await ops.driver.prune_snapshot_images()
    domain.snapshots = max(domain.snapshots - 1, 0)
    if domain.current_snapshot == record.name:
        domain.current_snapshot = record.parent
    return record
