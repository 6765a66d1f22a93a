"""A domain's console: ``console`` (interactive, as ``virsh console``) and
``console-output`` (its recent output, as nova's get_console_output)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Iterator
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, no_host, target_of
from agent.cli.options import add_client_options, add_targeting
from agent.cli.output import Output, render_console_output
from agent.cli.runner import run_client
from schemas.commands import GetConsoleOutput

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.client import Connection
    from agent.client.streams import Console

ESCAPE = 0x1D
"""Ctrl-]: detach, as virsh."""


def register(commands: Commands, config: CliConfig) -> None:
    console = commands.add_parser(
        "console",
        help="connect to a domain's console (Ctrl-] detaches)",
        description="Connect to a domain's console (Ctrl-] detaches).",
    )
    add_targeting(console, config)
    add_client_options(console, config)
    console.add_argument("domain", help="name, UUID or ID")
    console.add_argument(
        "--force", action="store_true", help="take the console from a session open on it"
    )
    console.set_defaults(main=main)
    output = add_verb(
        commands, config, "console-output", "print a domain's recent console output", output_request
    )
    output.add_argument("domain", help="name, UUID or ID")
    output.add_argument("--bytes", type=int, default=65536, help="at most this much (64 KiB)")


def output_request(args: argparse.Namespace) -> Request:
    return Request(
        GetConsoleOutput, {"max_bytes": args.bytes}, target_of(args.domain), render_console_output
    )


def main(args: argparse.Namespace) -> int:
    return run_client(args, run)


async def run(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    if no_host(args, output):
        return 1
    console = await conn.open_console(args.host, target_of(args.domain), args.force)
    async with console:
        with raw(sys.stdin.fileno()):
            # once the terminal is raw: keys typed after this line reach the domain
            print(f"Connected to domain '{args.domain}'\r", file=output.err)
            print("Escape character is ^]\r", file=output.err, flush=True)
            await attached(console, sys.stdin.fileno(), sys.stdout.buffer.fileno())
    print("", file=output.err)
    return 0


@contextlib.contextmanager
def raw(fd: int) -> Iterator[None]:
    """The terminal in raw mode while attached (when it is one), restored after."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: keys typed already stay
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def attached(console: Console, stdin: int, stdout: int) -> None:
    """Keys to the domain until Ctrl-] (or end of input), its output to ``stdout``,
    until either side ends."""
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    loop.add_reader(stdin, lambda: keys.put_nowait(os.read(stdin, 4096)))

    async def typing() -> None:
        while data := await keys.get():
            if ESCAPE in data:
                await console.send(data[: data.index(ESCAPE)])
                break
            await console.send(data)
        await console.finish()

    async def showing() -> None:
        while (data := await console.recv()) is not None:
            os.write(stdout, data)

    tasks = [asyncio.create_task(typing()), asyncio.create_task(showing())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        loop.remove_reader(stdin)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
