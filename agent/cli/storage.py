"""Storage and snapshots, named as virsh names them: ``pool-list``, ``pool-info``,
``pool-dumpxml``, ``vol-list``, ``vol-create-as``, ``vol-delete``, ``vol-info``,
``vol-dumpxml``, ``snapshot-create-as``, ``snapshot-list``, ``snapshot-current``,
``snapshot-dumpxml``, ``snapshot-revert``, ``snapshot-delete``."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, target_of
from agent.cli.output import (
    Render,
    record_line,
    render_pool_info,
    render_pools,
    render_snapshots,
    render_volume_info,
    render_volumes,
    render_xml,
    snapshot_line,
)
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
    SnapshotRevert,
    VolumeCreate,
    VolumeDelete,
    VolumeGetInfo,
    VolumeGetXmlDesc,
)
from schemas.domxml import unit_scale
from schemas.replies import Result

if TYPE_CHECKING:
    from agent.cli.options import Commands


def register(commands: Commands, config: CliConfig) -> None:
    add_verb(commands, config, "pool-list", "list storage pools", pools_request)
    for verb, summary in (
        ("pool-info", "storage pool information"),
        ("pool-dumpxml", "a pool's XML"),
    ):
        parser = add_verb(commands, config, verb, summary, pool_request)
        parser.add_argument("pool", help="pool name")
    volumes = add_verb(commands, config, "vol-list", "list the volumes of a pool", pool_request)
    volumes.add_argument("pool", help="pool name")
    create = add_verb(commands, config, "vol-create-as", "create a volume", create_request)
    create.add_argument("pool", help="pool name")
    create.add_argument("name", help="volume name")
    create.add_argument("capacity", type=size_bytes, help="bytes, or with a unit: 10M, 1G")
    for verb, summary in (
        ("vol-delete", "delete a volume"),
        ("vol-info", "volume information"),
        ("vol-dumpxml", "a volume's XML"),
    ):
        parser = add_verb(commands, config, verb, summary, volume_request)
        parser.add_argument("vol", help="volume name")
        parser.add_argument("--pool", default="default", help="pool name (default: default)")
    snapshot = add_verb(
        commands, config, "snapshot-create-as", "snapshot a domain's filesystem", snapshot_request
    )
    snapshot.add_argument("domain", help="name, UUID or ID")
    snapshot.add_argument("name", nargs="?", help="snapshot name (default: the time)")
    snapshot.add_argument(
        "description", nargs="?", default="", help="what the snapshot is for (optional)"
    )
    snapshot.add_argument("--disk-only", action="store_true", help="the only kind there is")
    for verb, summary in (
        ("snapshot-list", "list a domain's snapshots"),
        ("snapshot-current", "a domain's current snapshot"),
    ):
        parser = add_verb(commands, config, verb, summary, domain_snapshots_request)
        parser.add_argument("domain", help="name, UUID or ID")
        if verb == "snapshot-current":
            parser.add_argument("--name", action="store_true", help="its name (always)")
    for verb, summary in (
        ("snapshot-dumpxml", "a snapshot's XML"),
        ("snapshot-revert", "revert a domain to a snapshot"),
        ("snapshot-delete", "delete a snapshot"),
    ):
        parser = add_verb(commands, config, verb, summary, one_snapshot_request)
        parser.add_argument("domain", help="name, UUID or ID")
        parser.add_argument("snapshotname", help="snapshot name")
        if verb == "snapshot-revert":
            start = parser.add_mutually_exclusive_group()
            start.add_argument(
                "--running", action="store_true", help="start the domain after the revert"
            )
            start.add_argument(
                "--paused", action="store_true", help="start it paused after the revert"
            )


def pools_request(args: argparse.Namespace) -> Request:
    return Request(ListPools, None, None, render_pools)


POOL_VERBS: dict[str, tuple[type[CommandBase], Render]] = {
    "pool-info": (PoolLookup, render_pool_info),
    "pool-dumpxml": (PoolGetXmlDesc, render_xml),
    "vol-list": (PoolListVolumes, render_volumes),
}


def pool_request(args: argparse.Namespace) -> Request:
    op, render = POOL_VERBS[args.verb]
    return Request(op, {"pool": args.pool}, None, render)


def size_bytes(text: str) -> int:
    """A capacity as virsh takes it: bytes, or with a unit (``10M`` is MiB, ``1GB`` GB)."""
    found = re.fullmatch(r"([0-9]+)([A-Za-z]*)", text)
    scale = unit_scale(found.group(2) or "b") if found else None
    if found is None or scale is None:
        raise argparse.ArgumentTypeError(f"invalid size '{text}' (bytes, or with K, M, G…)")
    return int(found.group(1)) * scale


def create_request(args: argparse.Namespace) -> Request:
    args_of = {"pool": args.pool, "name": args.name, "capacity": args.capacity}
    return Request(VolumeCreate, args_of, None, lambda _: f"Vol {args.name} created")


def _fixed(text: str) -> Render:
    def render(result: Result) -> str:
        return text

    return render


def volume_request(args: argparse.Namespace) -> Request:
    volume = {"pool": args.pool, "volume": args.vol}
    if args.verb == "vol-delete":
        return Request(VolumeDelete, volume, None, _fixed(f"Vol {args.vol} deleted"))
    if args.verb == "vol-info":
        return Request(VolumeGetInfo, volume, None, render_volume_info)
    return Request(VolumeGetXmlDesc, volume, None, render_xml)


def snapshot_request(args: argparse.Namespace) -> Request:
    args_of = {"description": args.description}
    if args.name:
        args_of["name"] = args.name
    render = snapshot_line("Domain snapshot {name} created")
    return Request(SnapshotCreate, args_of, target_of(args.domain), render)


def domain_snapshots_request(args: argparse.Namespace) -> Request:
    target = target_of(args.domain)
    if args.verb == "snapshot-list":
        return Request(ListSnapshots, None, target, render_snapshots)
    return Request(SnapshotCurrent, None, target, snapshot_line("{name}"))


def one_snapshot_request(args: argparse.Namespace) -> Request:
    target = target_of(args.domain)
    snapshot = {"snapshot": args.snapshotname}
    if args.verb == "snapshot-dumpxml":
        return Request(SnapshotGetXmlDesc, snapshot, target, render_xml)
    if args.verb == "snapshot-delete":
        deleted = f"Domain snapshot {args.snapshotname} deleted"
        return Request(SnapshotDelete, snapshot, target, _fixed(deleted))
    start = "running" if args.running else "paused" if args.paused else None
    reverted = record_line("Domain '{name}' reverted to snapshot " + args.snapshotname)
    return Request(SnapshotRevert, {**snapshot, "start": start}, target, reverted)
