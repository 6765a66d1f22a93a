"""What every domain verb shares: a verb is a typed command (its model, args and
target) and a way to print the result, sent to one host or broadcast to a group or
the fleet."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.config import CliConfig
from agent.cli.known import expected_hosts, remember
from agent.cli.options import add_client_options, add_targeting
from agent.cli.output import Output, Progress, Render, broadcast_text
from agent.cli.runner import run_client
from schemas.codes import ErrorCode
from schemas.commands import CommandBase
from schemas.errors import VirtbusError

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.client import Connection


@dataclass(frozen=True)
class Request:
    """One verb as a command: its model, args and target, and how to print the result."""

    op: type[CommandBase]
    args: dict[str, Any] | None
    target: dict[str, Any] | None
    render: Render


def add_verb(
    commands: Commands,
    config: CliConfig,
    verb: str,
    summary: str,
    request: Callable[[argparse.Namespace], Request],
) -> argparse.ArgumentParser:
    """A domain verb's parser: the connection options, the choice of hosts, and
    ``request`` to turn its arguments into the command."""
    parser = commands.add_parser(
        verb, help=summary, description=summary[:1].upper() + summary[1:] + "."
    )
    add_targeting(parser, config)
    add_client_options(parser, config)
    parser.set_defaults(main=main, request=request)
    return parser


def target_of(domain: str) -> dict[str, Any]:
    """A DOMAIN argument as virsh takes it: an ID, a UUID or a name."""
    if domain.isdigit():
        return {"id": int(domain)}
    try:
        return {"uuid": str(uuid.UUID(domain))}
    except ValueError:
        return {"name": domain}


def read_definition(path: str) -> dict[str, Any]:
    """A definition file as a command's args: ``{"xml": …}`` for libvirt domain XML (a
    ``.xml`` name, or text that starts with ``<``), ``{"spec": …}`` for a JSON spec."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"cannot read {path}: {error}") from None
    if path.endswith(".xml") or text.lstrip("\ufeff \t\r\n").startswith("<"):
        return {"xml": text}
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, f"{path} is neither JSON nor XML: {error}"
        ) from None
    if not isinstance(spec, dict):
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"{path} must hold a JSON object")
    return {"spec": spec}


def main(args: argparse.Namespace) -> int:
    return run_client(args, run)


def broadcasts(args: argparse.Namespace) -> bool:
    return bool(args.group or args.all_hosts)


def no_host(args: argparse.Namespace, output: Output) -> bool:
    """True, having said so, when no host is chosen."""
    if args.host:
        return False
    output.error("no host: give --host, --group or --all-hosts (or set VIRTBUS_HOST)")
    return True


async def run(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    if broadcasts(args):
        return await broadcast(conn, args, output)
    if no_host(args, output):
        return 1
    request: Request = args.request(args)
    timeout_s = args.timeout
    if request.args and "timeout_s" in request.args:
        timeout_s = max(timeout_s, request.args["timeout_s"] + 10.0)
    result = await conn.call(args.host, request.op, request.args, request.target, timeout_s)
    output.result(result, request.render(result))
    return 0


async def broadcast(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    request: Request = args.request(args)
    progress = Progress(output.err)
    result = await conn.broadcast(
        request.op,
        request.args,
        target=request.target,
        group=args.group,
        expect=expected_hosts(args.expect, args.group),
        timeout_s=args.timeout,
        progress=progress,
    )
    progress.done(result)
    remember(result.replies)
    if output.as_json:
        output.result(
            {
                "replies": result.replies,
                "expected": sorted(result.expected) if result.expected is not None else None,
                "missing": sorted(result.missing),
            },
            "",
        )
    else:
        text = broadcast_text(result, request.render, args.timeout)
        if text:
            print(text, file=output.out)
    for host in sorted(result.missing):
        output.error(f"host {host} did not answer within {args.timeout:g} s")
    if not result.replies and not result.missing:
        where = f"in group '{args.group}'" if args.group else "on the bus"
        output.error(f"no host {where} answered within {args.timeout:g} s")
        return 1
    return 1 if result.failed or result.missing else 0
