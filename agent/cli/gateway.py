"""``gateway``: serve libvirt's remote protocol to virsh and libvirt clients, over the
bus (agent.gateway)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import logs
from agent.cli.config import CliConfig
from agent.cli.options import add_client_options
from agent.cli.output import Output
from agent.cli.runner import run
from agent.settings import setting_problems
from agent.tls import client_context
from schemas.codes import ErrorCode
from schemas.errors import VirtbusError

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.gateway.settings import GatewaySettings


def register(commands: Commands, config: CliConfig) -> None:
    parser = commands.add_parser(
        "gateway",
        help="serve libvirt's remote protocol: virsh -c virtbus+tcp://ADDRESS:PORT/HOST",
    )
    add_client_options(parser, config)
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
    from agent.gateway.settings import GatewaySettings

    settings_options(parser, GatewaySettings)
    parser.set_defaults(timeout=30.0, main=main)


GATEWAY_GROUPS = {
    "who is admitted (see docs/gateway-security.md)": ("tls_allowed_dn", "sasl_users", "authz"),
    "limits (libvirtd's defaults)": (
        "max_clients",
        "max_anonymous_clients",
        "max_client_requests",
        "max_packet_bytes",
        "max_client_callbacks",
        "handshake_timeout_s",
        "packet_timeout_s",
        "keepalive_interval_s",
        "keepalive_count",
        "log_interval_s",
    ),
}


def gateway_flag(name: str) -> str:
    """The option of a GatewaySettings field: ``--handshake-timeout`` for
    ``handshake_timeout_s``."""
    return "--" + name.replace("_", "-").removesuffix("-s")


def settings_options(parser: argparse.ArgumentParser, model: Any) -> None:
    """One option per settings field, ``--max-clients`` for ``max_clients``, in groups;
    the field's description is its help and its default is shown."""
    for title, names in GATEWAY_GROUPS.items():
        group = parser.add_argument_group(title)
        for name in names:
            info = model.model_fields[name]
            flag = gateway_flag(name)
            if name == "tls_allowed_dn":
                group.add_argument(
                    flag,
                    action="append",
                    dest=name,
                    metavar="DN",
                    help=f"{info.description} (repeat the option for each)",
                )
                continue
            kind = {int: int, float: float}.get(info.annotation, str)
            unit = " (seconds)" if name.endswith("_s") else ""
            default = "" if info.default is None else f" (default {info.default})"
            group.add_argument(
                flag,
                type=kind,
                dest=name,
                metavar="FILE" if info.annotation == Path | None else None,
                help=f"{info.description}{unit}{default}",
            )


def listen_address(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (``[::1]:PORT`` for IPv6) for ``--listen``."""
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDRESS:PORT")
    return address.strip("[]"), int(port)


def gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    """The options given on the command line; the defaults for the others."""
    from agent.gateway.settings import GatewaySettings

    given = {
        name: getattr(args, name)
        for names in GATEWAY_GROUPS.values()
        for name in names
        if getattr(args, name, None) is not None
    }
    return GatewaySettings(**given)


def main(args: argparse.Namespace) -> int:
    logs.configure("info", "text", "gateway")
    try:
        return run(serve(args), Output(False))
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


async def serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from agent.client import Connection
    from agent.gateway.server import Gateway, tls_context

    if (args.tls_key or args.tls_ca or args.sasl_users) and not args.tls_cert:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, "--tls-key, --tls-ca and --sasl-users need --tls-cert"
        )
    if args.tls_allowed_dn and not args.tls_ca:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, "--tls-allowed-dn needs --tls-ca")
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
    try:
        settings = gateway_settings(args)
    except ValidationError as error:
        flags = {name: gateway_flag(name) for names in GATEWAY_GROUPS.values() for name in names}
        problems = setting_problems(error, flags, env_prefix=None)
        raise VirtbusError.of(ErrorCode.INVALID_ARG, "; ".join(problems)) from None
    conn = Connection(args.connect, args.timeout, args.signing_key, broker_tls)
    try:
        address, port = args.listen
        gateway = Gateway(conn, address, port, tls, settings)
    except ValueError as error:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, str(error)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    async with gateway:
        await stop.wait()
    return 0
