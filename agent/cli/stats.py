"""What a host and its domains use: ``domstats``, ``capabilities``, ``domcapabilities``,
``sysinfo``, ``nodeinfo``, ``nodememstats``, ``nodecpustats``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, target_of
from agent.cli.output import (
    render_document,
    render_domstats,
    render_nodecpustats,
    render_nodeinfo,
    render_nodememstats,
)
from schemas.commands import (
    GetAllDomainStats,
    GetCapabilities,
    GetHostInfo,
    GetNodeStats,
    GetStats,
    ListFlag,
    StatGroup,
)

if TYPE_CHECKING:
    from agent.cli.options import Commands

GROUP_OPTIONS: dict[str, StatGroup] = {
    "state": "state",
    "cpu_total": "cpu-total",
    "balloon": "balloon",
    "vcpu": "vcpu",
    "interface": "interface",
    "block": "block",
    "pids": "pids",
}
LIST_OPTIONS: dict[str, ListFlag] = {
    "list_active": "active",
    "list_inactive": "inactive",
    "list_persistent": "persistent",
    "list_transient": "transient",
    "list_running": "running",
    "list_paused": "paused",
    "list_shutoff": "shutoff",
}
"""virsh domstats' ``--list-*`` options."""


def register(commands: Commands, config: CliConfig) -> None:
    domstats = add_verb(
        commands, config, "domstats", "domain statistics, as virsh domstats", domstats_request
    )
    domstats.add_argument("domain", nargs="?", help="name, UUID or ID (default: every domain)")
    for option, group in GROUP_OPTIONS.items():
        domstats.add_argument(
            f"--{option.replace('_', '-')}",
            action="store_true",
            help=f"the {group} group (default: every group)",
        )
    for option, flag in LIST_OPTIONS.items():
        domstats.add_argument(
            f"--{option.replace('_', '-')}", action="store_true", help=f"only {flag} domains"
        )
    for verb, field, summary in (
        ("capabilities", "capabilities", "the host's libvirt capabilities XML"),
        ("domcapabilities", "domain_capabilities", "the domain capabilities XML"),
        ("sysinfo", "sysinfo", "the host's SMBIOS sysinfo XML"),
    ):
        parser = add_verb(commands, config, verb, summary, capabilities_request)
        parser.set_defaults(document=field)
        if verb == "domcapabilities":
            parser.add_argument(
                "--virttype",
                choices=("docker", "lxc"),
                default="docker",
                help="the domain type asked about (default docker)",
            )
    add_verb(commands, config, "nodeinfo", "the host's CPUs and memory", nodeinfo_request)
    add_verb(commands, config, "nodememstats", "the host's memory", nodememstats_request)
    cpu = add_verb(commands, config, "nodecpustats", "the host's CPU time", nodecpustats_request)
    cpu.add_argument("cpu", nargs="?", type=int, help="one CPU (default: all)")


def domstats_request(args: argparse.Namespace) -> Request:
    """One domain's groups, or every domain's (with ``--list-*``, those selected)."""
    groups = [group for option, group in GROUP_OPTIONS.items() if getattr(args, option)]
    if args.domain is not None:
        return Request(GetStats, {"groups": groups}, target_of(args.domain), render_domstats)
    flags = [flag for option, flag in LIST_OPTIONS.items() if getattr(args, option)]
    return Request(GetAllDomainStats, {"groups": groups, "flags": flags}, None, render_domstats)


def capabilities_request(args: argparse.Namespace) -> Request:
    virttype = getattr(args, "virttype", "docker")
    return Request(GetCapabilities, {"virttype": virttype}, None, render_document(args.document))


def nodeinfo_request(args: argparse.Namespace) -> Request:
    return Request(GetHostInfo, None, None, render_nodeinfo)


def nodememstats_request(args: argparse.Namespace) -> Request:
    return Request(GetNodeStats, None, None, render_nodememstats)


def nodecpustats_request(args: argparse.Namespace) -> Request:
    return Request(GetNodeStats, None, None, render_nodecpustats(args.cpu))
