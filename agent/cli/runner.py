"""How a verb runs: its coroutine under asyncio, its VirtbusError as ``error: …`` with
exit status 1, and, for the verbs that talk to the bus, one client connection."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from agent.cli.output import Output
from agent.tls import client_context
from schemas.errors import VirtbusError

if TYPE_CHECKING:
    from agent.client import Connection

ClientWork = Callable[["Connection", argparse.Namespace, Output], Awaitable[int]]
"""A client verb: what it does with the connection, its arguments and its output."""


def run(work: Awaitable[int], output: Output) -> int:
    try:
        return asyncio.run(_guarded(work, output))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (| head): nothing left to say, and nobody to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


async def _guarded(work: Awaitable[int], output: Output) -> int:
    try:
        return await work
    except VirtbusError as error:
        output.error(str(error))
        return 1


def run_client(args: argparse.Namespace, work: ClientWork) -> int:
    """Run a verb that talks to the bus over one connection, made from the connection
    options (``options.add_client_options``)."""
    # the client's own errors are reported as `error: …`; library chatter is not
    logging.basicConfig(level=logging.CRITICAL)
    output = Output(args.json)
    return run(_connected(args, output, work), output)


async def _connected(args: argparse.Namespace, output: Output, work: ClientWork) -> int:
    from agent.client import connect

    try:
        tls = client_context(args.ca_file, args.cert_file, args.key_file)
    except ValueError as error:
        output.error(str(error))
        return 1
    async with connect(
        args.connect,
        timeout_s=args.timeout or 10.0,
        signing_key=args.signing_key,
        ssl_context=tls,
    ) as conn:
        return await work(conn, args, output)
