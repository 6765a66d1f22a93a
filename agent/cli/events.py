"""``event``: wait for domain events, as ``virsh event``."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.options import add_client_options
from agent.cli.output import Output, event_text, jsonable
from agent.cli.runner import run_client
from schemas.codes import Lifecycle
from schemas.errors import VirtbusError

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.client import Connection, EventHistory, EventKind, EventStream
    from agent.client.history import Since

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
    event = commands.add_parser("event", help="wait for domain events")
    add_client_options(event, config)
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
    event.add_argument(
        "--since",
        type=since,
        metavar="TIME|SEQ",
        help="replay the fleet's event history from a time (ISO 8601, or 30s/10m/2h/1d ago) "
        "or an offset of the history (SEQ; --json prints each event's offset), then go on live",
    )
    event.set_defaults(timeout=None, main=main)


AGO = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since(text: str) -> Since:
    """An argparse type: an offset, ``first``, a duration ago, or an ISO 8601 time."""
    if text.isdigit():
        return int(text)
    if text == "first":
        return "first"
    if text[:-1].isdigit() and text[-1:] in AGO:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * AGO[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a time (ISO 8601, 30s, 10m, 2h, 1d) nor an offset"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone(UTC)


def main(args: argparse.Namespace) -> int:
    return run_client(args, run)


async def run(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    from agent.client import Replayed

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
    if args.since is not None:
        stream: EventHistory | EventStream = conn.history(
            args.since, host=args.host or "*", domain=args.domain, kind=kind, event=event
        )
    else:
        stream = conn.events(host=args.host or "*", domain=args.domain, kind=kind, event=event)
    async with stream:
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
            offset = None
            if isinstance(item, Replayed):
                offset, item = item.offset, item.event
            if output.as_json:
                shown = jsonable(item)
                if offset is not None:
                    shown = {"offset": offset, **shown}
                print(json.dumps(shown), file=output.out)
            else:
                print(event_text(item), file=output.out)
            output.out.flush()
            if not args.loop:
                break
    print(f"events received: {received}", file=output.err)
    return 0
