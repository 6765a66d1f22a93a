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

LIST_HELP = {
    "inactive": "list inactive domains",
    "state-running": "list domains in running state",
    "state-paused": "list domains in paused state",
    "state-shutoff": "list domains in shutoff state",
    "persistent": "list persistent domains",
    "transient": "list transient domains",
    "autostart": "list domains with autostart enabled",
    "no-autostart": "list domains with autostart disabled",
    "with-snapshot": "list domains with existing snapshot",
    "without-snapshot": "list domains without a snapshot",
}
"""virsh's words for its list flags."""


def register(commands: Commands, config: CliConfig) -> None:
    listing = add_verb(commands, config, "list", "list domains", request)
    listing.add_argument("--all", action="store_true", help="list inactive & active domains")
    for option, meaning in LIST_HELP.items():
        listing.add_argument(f"--{option}", action="store_true", help=meaning)


def list_flags(args: argparse.Namespace) -> list[ListFlag]:
    flags = [flag for option, flag in LIST_FLAGS.items() if getattr(args, option)]
    if not args.all and not any(f in flags for f in ("running", "paused", "shutoff", "inactive")):
        flags.append("active")
    return flags


def request(args: argparse.Namespace) -> Request:
    return Request(ListDomains, {"flags": list_flags(args)}, None, render_list)
