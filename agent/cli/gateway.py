"""``gateway``: serve libvirt's remote protocol to virsh and libvirt clients, over the
bus (agent.gateway)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from agent import logs
from agent.cli.config import CliConfig
from agent.cli.options import client_options
from agent.cli.output import Output
from agent.cli.runner import run
from agent.tls import client_context
from schemas.codes import ErrorCode
from schemas.errors import VirtbusError

if TYPE_CHECKING:
    from agent.cli.options import Commands


def register(commands: Commands, config: CliConfig) -> None:
    parser = commands.add_parser(
        "gateway",
        parents=[client_options(config)],
        help="serve libvirt's remote protocol: virsh -c virtbus+tcp://ADDRESS:PORT/HOST",
    )
    parser.add_argument(
        "--listen",
        type=listen_address,
        default=("127.0.0.1", 16509),
        help="ADDRESS:PORT (default 127.0.0.1:16509)",
    )
    parser.add_argument("--tls-cert", help="serve TLS (virtbus+tls://) with this PEM certificate")
    parser.add_argument("--tls-key", help="the certificate's PEM key")
    parser.add_argument(
        "--tls-ca", help="accept only clients with a certificate signed by this PEM CA"
    )
    parser.set_defaults(timeout=30.0, main=main)


def listen_address(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (``[::1]:PORT`` for IPv6) for ``--listen``."""
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDRESS:PORT")
    return address.strip("[]"), int(port)


def main(args: argparse.Namespace) -> int:
    logs.configure("info", "text", "gateway")
    try:
        return run(serve(args), Output(False))
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


async def serve(args: argparse.Namespace) -> int:
    from agent.client import Connection
    from agent.gateway import Gateway, tls_context

    if (args.tls_key or args.tls_ca) and not args.tls_cert:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, "--tls-key and --tls-ca need --tls-cert")
    try:
        tls = tls_context(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None
    except OSError as error:  # ssl.SSLError included
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, f"cannot load the TLS certificate, key or CA: {error}"
        ) from None
    try:
        broker_tls = client_context(args.ca_file, args.cert_file, args.key_file)
    except ValueError as error:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, str(error)) from None
    conn = Connection(args.connect, args.timeout, args.signing_key, broker_tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    address, port = args.listen
    async with Gateway(conn, address, port, tls):
        await stop.wait()
    return 0
