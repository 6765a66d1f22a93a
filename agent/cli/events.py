"""``event``: wait for domain events, as ``virsh event``."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.options import client_options
from agent.cli.output import Output, event_text, jsonable
from agent.cli.runner import run_client
from schemas.codes import Lifecycle
from schemas.errors import VirtbusError

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.client import Connection, EventKind

EVENT_CHOICES = (
    "lifecycle",
    "reboot",
    "tunable",
    "metadata_change",
    "health",
    "agent",
    *dict.fromkeys(member.event for member in Lifecycle),
)


def register(commands: Commands, config: CliConfig) -> None:
    event = commands.add_parser(
        "event", parents=[client_options(config)], help="wait for domain events"
    )
    event.add_argument("domain", nargs="?", help="only this domain (by name)")
    event.add_argument("--host", default=None, help="only this host (default: all)")
    event.add_argument(
        "--event",
        choices=EVENT_CHOICES,
        help="an event kind, or a lifecycle event",
    )
    event.add_argument("--all", action="store_true", help="every domain event")
    event.add_argument("--loop", action="store_true", help="keep going after the first event")
    event.add_argument("--ready", action="store_true", help="say 'ready' on stderr once listening")
    event.set_defaults(timeout=None, main=main)


def main(args: argparse.Namespace) -> int:
    return run_client(args, run)


async def run(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    if not args.all and args.event is None:
        output.error("one of --event or --all is required")
        return 1
    kind: EventKind | None = None
    event: str | None = None
    if args.event in ("reboot", "tunable", "metadata_change", "health", "agent"):
        kind = args.event
    elif args.event == "lifecycle":
        kind = "lifecycle"
    elif args.event is not None:
        event = args.event
    received = 0
    async with conn.events(
        host=args.host or "*", domain=args.domain, kind=kind, event=event
    ) as stream:
        if args.ready:
            print("ready", file=output.err, flush=True)
        loop = asyncio.get_running_loop()
        deadline = None if args.timeout is None else loop.time() + args.timeout
        while True:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                break
            try:
                item = await (stream.next(left) if left is not None else stream.__anext__())
            except VirtbusError:
                break
            received += 1
            if output.as_json:
                print(json.dumps(jsonable(item)), file=output.out)
            else:
                print(event_text(item), file=output.out)
            output.out.flush()
            if not args.loop:
                break
    print(f"events received: {received}", file=output.err)
    return 0
