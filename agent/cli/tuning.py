"""What a domain is given: ``autostart``, ``setmem``, ``setvcpus``, ``domrename``, and its
controls as virsh shows and sets them: ``schedinfo``, ``memtune``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, target_of
from agent.cli.output import record_line
from schemas.commands import GetTuning, Rename, SetAutostart, SetMemory, SetTuning, SetVcpus
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
    schedinfo = _tuning_verb(
        commands, config, "schedinfo", "a domain's CPU scheduler parameters", schedinfo_request
    )
    schedinfo.add_argument(
        "--set",
        action="append",
        default=[],
        type=scheduler_setting,
        metavar="NAME=VALUE",
        help="set a parameter (cpu_shares)",
    )
    memtune = _tuning_verb(commands, config, "memtune", "a domain's memory limits", memtune_request)
    for flag, what in (
        ("--hard-limit", "the memory limit"),
        ("--soft-limit", "what memory is reclaimed down to under host memory pressure"),
        ("--swap-hard-limit", "the limit of memory and swap together"),
    ):
        memtune.add_argument(flag, type=kib, metavar="SIZE", help=f"set {what}: KiB, or 64M, 1G")


def _tuning_verb(
    commands: Commands,
    config: CliConfig,
    verb: str,
    summary: str,
    request: Callable[[argparse.Namespace], Request],
) -> argparse.ArgumentParser:
    shown = add_verb(commands, config, verb, summary, request)
    shown.add_argument("domain", help="name, UUID or ID")
    shown.add_argument("--live", action="store_true", help="the running domain's")
    shown.add_argument("--config", action="store_true", help="the definition's")
    return shown


SCHEDULER_SETTINGS = ("cpu_shares",)


def scheduler_setting(text: str) -> tuple[str, int]:
    """virsh's ``--set name=value``."""
    name, _, value = text.partition("=")
    if name not in SCHEDULER_SETTINGS:
        raise argparse.ArgumentTypeError(
            f"invalid scheduler parameter '{name}' (one of: {', '.join(SCHEDULER_SETTINGS)})"
        )
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"invalid value '{value}' of {name}")
    return name, int(value)


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
    if args.set:
        changes = {**_affect(args), **dict(args.set)}
        return Request(SetTuning, changes, target_of(args.domain), record_line(""))
    return Request(GetTuning, _affect(args), target_of(args.domain), render_scheduler)


def memtune_request(args: argparse.Namespace) -> Request:
    limits = {
        "memory_kib": args.hard_limit,
        "soft_limit_kib": args.soft_limit,
        "swap_hard_limit_kib": args.swap_hard_limit,
    }
    changes = {name: kib for name, kib in limits.items() if kib is not None}
    if changes:
        changes_of = {**_affect(args), **changes}
        return Request(SetTuning, changes_of, target_of(args.domain), record_line(""))
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
