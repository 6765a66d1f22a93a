"""``list``: the domains of a host, as virsh lists them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb
from agent.cli.output import render_list
from schemas.commands import ListDomains, ListFlag

if TYPE_CHECKING:
    from agent.cli.options import Commands

LIST_FLAGS: dict[str, ListFlag] = {
    "state_running": "running",
    "state_paused": "paused",
    "state_shutoff": "shutoff",
    "persistent": "persistent",
    "transient": "transient",
    "autostart": "autostart",
    "no_autostart": "no_autostart",
    "inactive": "inactive",
    "with_snapshot": "has_snapshot",
    "without_snapshot": "no_snapshot",
}


def register(commands: Commands, config: CliConfig) -> None:
    listing = add_verb(commands, config, "list", "list domains", request)
    listing.add_argument("--all", action="store_true", help="active and inactive domains")
    listing.add_argument("--inactive", action="store_true")
    for option in ("state-running", "state-paused", "state-shutoff", "persistent"):
        listing.add_argument(f"--{option}", action="store_true")
    for option in ("transient", "autostart", "no-autostart", "with-snapshot", "without-snapshot"):
        listing.add_argument(f"--{option}", action="store_true")


def list_flags(args: argparse.Namespace) -> list[ListFlag]:
    flags = [flag for option, flag in LIST_FLAGS.items() if getattr(args, option)]
    if not args.all and not any(f in flags for f in ("running", "paused", "shutoff", "inactive")):
        flags.append("active")
    return flags


def request(args: argparse.Namespace) -> Request:
    return Request(ListDomains, {"flags": list_flags(args)}, None, render_list)
