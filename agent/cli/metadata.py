"""A domain's description, title and metadata elements: ``desc``, ``metadata``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, target_of
from agent.cli.output import record_line, render_metadata
from schemas.commands import GetMetadata, SetMetadata

if TYPE_CHECKING:
    from agent.cli.options import Commands


def register(commands: Commands, config: CliConfig) -> None:
    desc = add_verb(
        commands, config, "desc", "show or set a domain's description or title", desc_request
    )
    desc.add_argument("domain", help="name, UUID or ID")
    desc.add_argument("--title", action="store_true", help="the title, not the description")
    desc.add_argument("--new-desc", help="set it to this text ('' removes it)")
    affect(desc)
    metadata = add_verb(
        commands, config, "metadata", "show or set a domain's metadata element", metadata_request
    )
    metadata.add_argument("domain", help="name, UUID or ID")
    metadata.add_argument("uri", help="the element's namespace URI")
    metadata.add_argument("--key", help="the namespace prefix the element is stored with")
    change = metadata.add_mutually_exclusive_group()
    change.add_argument("--set", help="one XML element, replacing the namespace's")
    change.add_argument("--remove", action="store_true", help="remove the namespace's element")
    affect(metadata)


def affect(parser: argparse.ArgumentParser) -> None:
    """virsh's --live, --config and --current (neither: the running definition of an
    active domain, the persistent one of an inactive one)."""
    parser.add_argument("--live", action="store_true", help="the running definition")
    parser.add_argument("--config", action="store_true", help="the persistent definition")
    parser.add_argument("--current", action="store_true", help="as the domain's state says")


def flags(args: argparse.Namespace) -> dict[str, Any]:
    return {"live": args.live, "config": args.config}


def desc_request(args: argparse.Namespace) -> Request:
    kind = "title" if args.title else "description"
    target = target_of(args.domain)
    if args.new_desc is None:
        return Request(GetMetadata, {"type": kind, **flags(args)}, target, render_metadata)
    done = f"Domain {kind} updated successfully"
    set_args = {"type": kind, "metadata": args.new_desc, **flags(args)}
    return Request(SetMetadata, set_args, target, record_line(done))


def metadata_request(args: argparse.Namespace) -> Request:
    target = target_of(args.domain)
    if args.set is None and not args.remove:
        asked = {"type": "element", "uri": args.uri, **flags(args)}
        return Request(GetMetadata, asked, target, render_metadata)
    change: dict[str, Any] = {"type": "element", "uri": args.uri, **flags(args)}
    if args.set is not None:
        change.update(metadata=args.set, key=args.key)
    message = "Metadata modified" if args.set is not None else "Metadata removed"
    return Request(SetMetadata, change, target, record_line(message))
