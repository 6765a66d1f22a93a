"""``dashboard``: the fleet in a web page, live; ``dashboard-user``: its users file."""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.gateway_user import _password
from agent.cli.options import add_client_options
from agent.cli.output import Output
from agent.cli.runner import run_client

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.client import Connection

DEFAULT_LISTEN = "127.0.0.1:8080"


def register(commands: Commands, config: CliConfig) -> None:
    parser = commands.add_parser(
        "dashboard",
        help="serve the fleet dashboard (a live web page)",
        description="Serve a web page that shows the fleet live and acts on it. Loopback "
        "only unless --tls-cert, --tls-key and --users are given.",
    )
    add_client_options(parser, config)
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"ADDRESS:PORT (default {DEFAULT_LISTEN})"
    )
    parser.add_argument("--users", type=Path, help="users and roles (TOML); a login is asked")
    parser.add_argument("--tls-cert", type=Path, help="the page's certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="the certificate's key (PEM)")
    parser.add_argument(
        "--discover", type=float, default=2.0, help="seconds to gather the fleet at start"
    )
    parser.set_defaults(main=main)

    user = commands.add_parser(
        "dashboard-user",
        help="add, change or remove a dashboard user (the --users FILE of virtbus dashboard)",
        description="Edit the dashboard's users file; it keeps bcrypt hashes, never "
        "passwords. A password is read from the terminal, or from stdin's first line.",
    )
    user.add_argument("--users", "-f", required=True, type=Path, help="the users FILE")
    verbs = user.add_subparsers(dest="user_verb", required=True)
    add = verbs.add_parser("add", help="add a user, or change its password and role")
    add.add_argument("name", help="the user's login name")
    add.add_argument(
        "--role",
        choices=("read-only", "operator"),
        default="read-only",
        help="what the user may do (default read-only: no actions)",
    )
    remove = verbs.add_parser("remove", help="remove a user")
    remove.add_argument("name", help="the user's login name")
    user.set_defaults(main=user_main)


def main(args: argparse.Namespace) -> int:
    return run_client(args, run)


def listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen {text!r}: expected ADDRESS:PORT")
    return host.strip("[]"), int(port)


async def run(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    from agent.dashboard.access import Access, read_users
    from agent.dashboard.fleet import Fleet
    from agent.dashboard.server import Dashboard, is_loopback, run_forever, serve

    logging.getLogger("virtbus.dashboard.audit").setLevel(logging.INFO)
    audit = logging.StreamHandler(sys.stderr)
    audit.setFormatter(logging.Formatter("%(asctime)s audit: %(message)s"))
    logging.getLogger("virtbus.dashboard.audit").addHandler(audit)
    try:
        host, port = listen_address(args.listen)
    except ValueError as error:
        output.error(str(error))
        return 1
    context: ssl.SSLContext | None = None
    if args.tls_cert is not None or args.tls_key is not None:
        if args.tls_cert is None or args.tls_key is None:
            output.error("--tls-cert and --tls-key go together")
            return 1
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    if not is_loopback(host) and (context is None or args.users is None):
        output.error(
            f"listening on {host} (not loopback) needs TLS (--tls-cert, --tls-key) and "
            "a login (--users)"
        )
        return 1
    access = Access(read_users(args.users) if args.users is not None else None)
    fleet = Fleet(conn)
    await fleet.start(discover_s=args.discover)
    try:
        runner = await serve(
            Dashboard(conn, fleet, access, context is not None), host, port, context
        )
        scheme = "https" if context else "http"
        print(f"dashboard: {scheme}://{args.listen}/", file=output.err, flush=True)
        await run_forever(runner)
    finally:
        await fleet.stop()
    return 0


def user_main(args: argparse.Namespace) -> int:
    from agent.dashboard.access import User, hash_password, read_users, write_users
    from agent.errors import VirtbusError

    try:
        users = read_users(args.users)
        if args.user_verb == "add":
            new = args.name not in users
            hashed = hash_password(_password()).encode()
            users[args.name] = User(args.name, args.role, hashed)
            write_users(args.users, users)
            print(f"{'added' if new else 'changed'} {args.name} ({args.role})")
        else:
            if users.pop(args.name, None) is None:
                print(f"error: no user {args.name!r} in {args.users}", file=sys.stderr)
                return 1
            write_users(args.users, users)
            print(f"removed {args.name}")
    except (VirtbusError, OSError, EOFError, ValueError) as error:
        print(f"error: {str(error) or 'no password given'}", file=sys.stderr)
        return 1
    return 0
