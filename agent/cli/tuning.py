"""What a domain is given: ``autostart``, ``setmem``, ``setvcpus``, ``domrename``, and its
controls as virsh shows them: ``schedinfo``, ``memtune``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, target_of
from agent.cli.output import record_line
from schemas.commands import GetTuning, Rename, SetAutostart, SetMemory, SetVcpus
from schemas.replies import DomainTuning, Result

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
    for verb, summary, request in (
        ("schedinfo", "a domain's CPU scheduler parameters", schedinfo_request),
        ("memtune", "a domain's memory limits", memtune_request),
    ):
        shown = add_verb(commands, config, verb, summary, request)
        shown.add_argument("domain", help="name, UUID or ID")
        affect = shown.add_mutually_exclusive_group()
        affect.add_argument("--live", action="store_true", help="the running domain's")
        affect.add_argument("--config", action="store_true", help="the definition's")


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


def schedinfo_request(args: argparse.Namespace) -> Request:
    return Request(GetTuning, _affect(args), target_of(args.domain), render_scheduler)


def memtune_request(args: argparse.Namespace) -> Request:
    return Request(GetTuning, _affect(args), target_of(args.domain), render_memory)


def _affect(args: argparse.Namespace) -> dict[str, bool]:
    return {"live": args.live, "config": args.config}


def render_scheduler(result: Result) -> str:
    assert isinstance(result, DomainTuning)
    return _lines(
        ("Scheduler", "posix"),
        ("cpu_shares", result.cpu_shares),
        ("vcpu_period", result.vcpu_period),
        ("vcpu_quota", result.vcpu_quota),
    )


def render_memory(result: Result) -> str:
    assert isinstance(result, DomainTuning)
    return _lines(
        ("hard_limit", _limit(result.hard_limit_kib)),
        ("soft_limit", _limit(result.soft_limit_kib)),
        ("swap_hard_limit", _limit(result.swap_hard_limit_kib)),
    )


def _limit(kib: int | None) -> str:
    return "unlimited" if kib is None else str(kib)


def _lines(*pairs: tuple[str, object]) -> str:
    """virsh's ``name : value`` lines, the names padded to one width."""
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name:<{width}}: {value}" for name, value in pairs)
