"""What every domain verb shares: a verb is a typed command (its model, args and
target) and a way to print the result, sent to one host or broadcast to a group or
the fleet.

A verb whose command the CLI can tell is valid without the models (a ``WireRequest``:
flags, booleans, a domain named as the contract allows) is sent as JSON over
``agent.client.wire`` and its result printed from the decoded JSON, so the process loads
aio-pika and no pydantic; anything else is validated with the models first. Broadcast
answers are printed as they arrive."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.cli.config import CliConfig
from agent.cli.known import expected_hosts, remember
from agent.cli.options import add_client_options, add_targeting
from agent.cli.plain import JsonRender, Output, broadcast_summary, host_answer
from agent.cli.pullbar import PullBar
from agent.cli.runner import run_client, run_wire
from schemas.names import OP_NAMES, is_domain_name

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.cli.output import Render
    from agent.client import Connection
    from agent.client.wire import WireConnection
    from schemas.commands import CommandBase


class Request(NamedTuple):
    """One verb as a command: its model, args and target, and how to print the result."""

    op: type[CommandBase]
    args: dict[str, Any] | None
    target: dict[str, Any] | None
    render: Render


class WireRequest(NamedTuple):
    """One verb as a command sent without the models: the command model's name (one of
    ``schemas.names.OP_NAMES``), args, target, and how to print the decoded result."""

    model: str
    args: dict[str, Any] | None
    target: dict[str, Any] | None
    render: JsonRender

    @property
    def op(self) -> str:
        return OP_NAMES[self.model]

    def plainly_valid(self) -> bool:
        """True if the command is valid by its shape alone: args of booleans and flag
        lists (the parser chose them), a target the contract accepts."""
        for value in (self.args or {}).values():
            if not isinstance(value, bool | list):
                return False
        target = self.target or {}
        if "name" in target:
            return is_domain_name(target["name"])
        if "id" in target:
            return bool(target["id"] >= 1)
        return True

    def check(self, timeout_s: float) -> None:
        """Validate with the models unless ``plainly_valid``: bad input raises
        INVALID_ARG here, in the client's words, not on a host."""
        if self.plainly_valid():
            return
        from agent.client.connection import Connection
        from schemas import commands

        model = getattr(commands, self.model)
        Connection("amqp://").command(model, self.args, self.target, timeout_s)


def add_verb(
    commands: Commands,
    config: CliConfig,
    verb: str,
    summary: str,
    request: Callable[[argparse.Namespace], Request] | Callable[[argparse.Namespace], WireRequest],
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
    from schemas.codes import ErrorCode
    from schemas.errors import VirtbusError

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
    if isinstance(args.request(args), WireRequest):
        return run_wire(args, run_json)
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
    timeout_s = timeout_of(args, request.args)
    with PullBar(output.err, getattr(args, "progress", "never")) as bar:
        result = await conn.call(
            args.host, request.op, request.args, request.target, timeout_s, bar.update
        )
    output.result(result, request.render(result))
    return 0


async def broadcast(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    from agent.cli.output import Progress, broadcast_text

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


def timeout_of(args: argparse.Namespace, given: dict[str, Any] | None) -> float:
    """The verb's timeout, longer than a grace period the command itself waits."""
    if given and "timeout_s" in given:
        return float(max(args.timeout, given["timeout_s"] + 10.0))
    return float(args.timeout)


async def run_json(conn: WireConnection, args: argparse.Namespace, output: Output) -> int:
    request: WireRequest = args.request(args)
    if not broadcasts(args) and no_host(args, output):
        return 1
    timeout_s = timeout_of(args, request.args) if not broadcasts(args) else args.timeout
    request.check(timeout_s)
    command = conn.command(request.op, request.args, request.target, timeout_s)
    if broadcasts(args):
        return await broadcast_json(conn, command, request, args, output)
    result = await conn.call(args.host, command, timeout_s)
    output.result(result, request.render(result))
    return 0


async def broadcast_json(
    conn: WireConnection,
    command: dict[str, Any],
    request: WireRequest,
    args: argparse.Namespace,
    output: Output,
) -> int:
    """Each host's answer printed as it arrives (text), or all of them at the end
    (``--json``: one document); then the hosts that stayed silent."""
    expected = expected_hosts(args.expect, args.group)
    replies: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    async for reply in conn.broadcast(command, args.group, expected, args.timeout):
        replies[reply["host"]] = reply
        if not output.as_json:
            print(host_answer(reply["host"], reply, request.render), file=output.out, flush=True)
    missing = sorted((expected or set()) - replies.keys())
    print(broadcast_summary(replies, expected, time.monotonic() - started), file=output.err)
    remember(replies)
    if output.as_json:
        document = {
            "replies": {host: replies[host] for host in sorted(replies)},
            "expected": sorted(expected) if expected is not None else None,
            "missing": missing,
        }
        output.result(document, "")
    else:
        for host in missing:
            print(f"== {host}\nerror: no reply within {args.timeout:g} s", file=output.out)
    for host in missing:
        output.error(f"host {host} did not answer within {args.timeout:g} s")
    if not replies and not missing:
        where = f"in group '{args.group}'" if args.group else "on the bus"
        output.error(f"no host {where} answered within {args.timeout:g} s")
        return 1
    failed = any(isinstance(reply.get("error"), dict) for reply in replies.values())
    return 1 if failed or missing else 0
