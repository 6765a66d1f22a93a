"""A domain's lifecycle: ``start``, ``shutdown``, ``destroy``, ``reboot``, ``suspend``,
``resume``, ``undefine``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, target_of
from agent.cli.output import record_line
from schemas.commands import (
    Create,
    Destroy,
    DomainCommand,
    Reboot,
    Resume,
    Shutdown,
    Suspend,
    Undefine,
)

if TYPE_CHECKING:
    from agent.cli.options import Commands

SIMPLE: dict[str, tuple[str, type[DomainCommand], str]] = {
    "shutdown": ("gracefully shut a domain down", Shutdown, "Domain '{name}' is being shutdown"),
    "destroy": ("stop a domain at once", Destroy, "Domain '{name}' destroyed"),
    "reboot": ("reboot a domain", Reboot, "Domain '{name}' is being rebooted"),
    "suspend": ("suspend a domain", Suspend, "Domain '{name}' suspended"),
    "resume": ("resume a suspended domain", Resume, "Domain '{name}' resumed"),
    "undefine": ("undefine a domain", Undefine, "Domain '{name}' has been undefined"),
}
"""verb: (summary, command, what it prints)."""


def register(commands: Commands, config: CliConfig) -> None:
    start = add_verb(commands, config, "start", "start a defined domain", start_request)
    start.add_argument("domain", help="name, UUID or ID")
    start.add_argument("--paused", action="store_true", help="leave the domain paused")
    for verb, (summary, _, _) in SIMPLE.items():
        command = add_verb(commands, config, verb, summary, simple_request)
        command.add_argument("domain", help="name, UUID or ID")
        if verb == "shutdown":
            command.add_argument(
                "--grace", type=int, help="seconds before the domain is killed (default 10)"
            )
        if verb == "undefine":
            command.add_argument(
                "--snapshots-metadata", action="store_true", help="delete its snapshots too"
            )
            command.add_argument(
                "--remove-all-storage",
                action="store_true",
                help="delete the volumes it mounts that no other domain mounts",
            )
        if verb in ("shutdown", "reboot"):
            command.add_argument(
                "--no-kill",
                action="store_true",
                help="ask the domain and return (as libvirt): it is never killed",
            )


def start_request(args: argparse.Namespace) -> Request:
    return Request(
        Create,
        {"start_paused": args.paused},
        target_of(args.domain),
        record_line("Domain '{name}' started"),
    )


def simple_request(args: argparse.Namespace) -> Request:
    _, op, message = SIMPLE[args.verb]
    args_of: dict[str, object] | None = None
    if args.verb == "shutdown" and args.grace:
        args_of = {"timeout_s": args.grace}
    if args.verb in ("shutdown", "reboot") and args.no_kill:
        args_of = {**(args_of or {}), "escalate": False}
    if args.verb == "undefine":
        args_of = {"snapshots": args.snapshots_metadata, "volumes": args.remove_all_storage}
    return Request(op, args_of, target_of(args.domain), record_line(message))
