"""What a domain is given: ``autostart``, ``setmem``, ``setvcpus``, ``domrename``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, target_of
from agent.cli.output import record_line
from schemas.commands import Rename, SetAutostart, SetMemory, SetVcpus

if TYPE_CHECKING:
    from agent.cli.options import Commands

SIZE_UNITS = {"": 1, "k": 1, "kib": 1, "m": 1024, "mib": 1024, "g": 1024**2, "gib": 1024**2}


def kib(text: str) -> int:
    """A size as virsh takes it: KiB by default, or with a unit (``512M``, ``1GiB``)."""
    number = text.lower().rstrip("kmgib")
    unit = text[len(number) :].lower()
    if not number.isdigit() or unit not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"invalid size '{text}' (KiB, or with K, M or G)")
    return int(number) * SIZE_UNITS[unit]


def register(commands: Commands, config: CliConfig) -> None:
    autostart = add_verb(
        commands, config, "autostart", "start a domain when its agent starts", autostart_request
    )
    autostart.add_argument("domain", help="name, UUID or ID")
    autostart.add_argument("--disable", action="store_true", help="disable autostart")
    setmem = add_verb(commands, config, "setmem", "set a domain's memory", setmem_request)
    setmem.add_argument("domain", help="name, UUID or ID")
    setmem.add_argument("size", type=kib, help="KiB, or with a unit: 64M, 1G")
    setvcpus = add_verb(commands, config, "setvcpus", "set a domain's vCPU count", setvcpus_request)
    setvcpus.add_argument("domain", help="name, UUID or ID")
    setvcpus.add_argument("count", type=int, help="number of virtual CPUs")
    domrename = add_verb(
        commands, config, "domrename", "rename a shut-off domain", domrename_request
    )
    domrename.add_argument("domain", help="name, UUID or ID")
    domrename.add_argument("new_name", help="new domain name")


def autostart_request(args: argparse.Namespace) -> Request:
    message = "Domain '{name}' " + ("unmarked" if args.disable else "marked") + " as autostarted"
    args_of = {"autostart": not args.disable}
    return Request(SetAutostart, args_of, target_of(args.domain), record_line(message))


def setmem_request(args: argparse.Namespace) -> Request:
    args_of = {"memory_kib": args.size}
    return Request(SetMemory, args_of, target_of(args.domain), record_line(""))


def setvcpus_request(args: argparse.Namespace) -> Request:
    return Request(SetVcpus, {"vcpus": args.count}, target_of(args.domain), record_line(""))


def domrename_request(args: argparse.Namespace) -> Request:
    args_of = {"new_name": args.new_name}
    message = "Domain successfully renamed"
    return Request(Rename, args_of, target_of(args.domain), record_line(message))
