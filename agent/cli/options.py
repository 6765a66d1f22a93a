"""What several verbs share on their command line: the connection options, the choice
of hosts, and argument types."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from pydantic import TypeAdapter, ValidationError

from agent.cli.config import CliConfig
from schemas.base import HostName

if TYPE_CHECKING:
    from agent.signing import SigningKey

    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    """What ``add_subparsers()`` returns: where each verb module adds its verbs."""
TLS_FILES = {
    "ca": "CA bundle that signed the peer's certificate",
    "cert": "client certificate",
    "key": "client certificate's key",
}
HOST_NAME: TypeAdapter[str] = TypeAdapter(HostName)


def signing_key(text: str) -> SigningKey:
    """An argparse type: ``ID=ALGORITHM:PATH``, loaded."""
    from agent.signing import SigningKey

    try:
        return SigningKey.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def host_name(text: str) -> str:
    """An argparse type: a host or group name (a DNS label)."""
    try:
        return HOST_NAME.validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a host or group name (a DNS label: a-z, 0-9, -)"
        ) from None


def add_client_options(parser: argparse.ArgumentParser, config: CliConfig) -> None:
    """The broker connection, as every verb that talks to the bus takes it: a group of
    its own in ``--help``, apart from the verb's options."""
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print JSON for scripts")
    options = parser.add_argument_group(
        "connection", "how to reach the broker; each also read from its VIRTBUS_* variable"
    )
    options.add_argument(
        "-c",
        "--connect",
        default=config.amqp_url,
        metavar="URL",
        help="broker URL (VIRTBUS_AMQP_URL)",
    )
    options.add_argument(
        "--signing-key",
        type=signing_key,
        default=config.signing_key,
        metavar="ID=ALGORITHM:PATH",
        help="sign every command with this key (hmac-sha256 secret or ed25519 private key "
        "file) (VIRTBUS_SIGNING_KEY)",
    )
    options.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for replies (default 10; a pull in progress extends it)",
    )
    defaults = {
        "ca": config.amqp_ca_file,
        "cert": config.amqp_cert_file,
        "key": config.amqp_key_file,
    }
    for what, meaning in TLS_FILES.items():
        options.add_argument(
            f"--{what}-file",
            type=Path,
            default=defaults[what],
            metavar="PATH",
            help=f"amqps: {meaning} (VIRTBUS_AMQP_{what.upper()}_FILE)",
        )


def add_targeting(parser: argparse.ArgumentParser, config: CliConfig) -> None:
    """Which hosts a domain verb talks to: one, a group, or all."""
    hosts = parser.add_argument_group("hosts", "where the command goes (one of these)")
    where = hosts.add_mutually_exclusive_group()
    where.add_argument(
        "--host", type=host_name, default=config.host, help="one host (VIRTBUS_HOST)"
    )
    where.add_argument("--group", type=host_name, help="every host of a group (broadcast)")
    where.add_argument("--all-hosts", action="store_true", help="every host (broadcast)")
    hosts.add_argument(
        "--expect",
        action="append",
        metavar="HOST[,HOST…]",
        help="hosts expected to answer a broadcast (comma-separated; repeatable); "
        "default: the hosts seen before",
    )
