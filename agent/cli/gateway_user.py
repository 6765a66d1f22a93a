"""``virtbus gateway-user``: the operator's verbs on the gateway's SASL users file.

A password is read from the terminal (asked twice) or, when stdin is not a terminal,
as the first line of stdin; never from the command line, where ``ps`` would show it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agent.gateway.sasl import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    check_username,
    read_users,
    remove_user,
    set_user,
)

if TYPE_CHECKING:
    from agent.cli.config import CliConfig
    from agent.cli.options import Commands


def register(commands: Commands, config: CliConfig) -> None:
    parser = commands.add_parser(
        "gateway-user",
        help="add, change or remove a user of the gateway's SASL login (--sasl-users)",
        description="Edit the users file of 'virtbus gateway --sasl-users FILE'. It keeps "
        "SCRAM-SHA-256 verifiers (salted, iterated), never passwords.",
    )
    parser.add_argument("--users", "-f", required=True, type=Path, help="the users FILE")
    verbs = parser.add_subparsers(dest="user_verb", required=True)
    add = verbs.add_parser(
        "add",
        help="add a user, or set its password (read from the terminal, or from stdin's first line)",
    )
    add.add_argument("name", help="the user's name, as the client logs in with it")
    add.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help=f"PBKDF2 rounds, {MIN_ITERATIONS}-{MAX_ITERATIONS} "
        f"(libvirt's client computes no more; default {DEFAULT_ITERATIONS})",
    )
    remove = verbs.add_parser("remove", help="remove a user")
    remove.add_argument("name", help="the user to remove")
    verbs.add_parser("list", help="the users' names")
    parser.set_defaults(main=main)


def main(args: argparse.Namespace) -> int:
    try:
        if args.user_verb == "add":
            check_username(args.name)
            new = set_user(args.users, args.name, _password(), args.iterations)
            print(f"{'added' if new else 'changed the password of'} {args.name}")
        elif args.user_verb == "remove":
            if not remove_user(args.users, args.name):
                print(f"error: no user {args.name!r} in {args.users}", file=sys.stderr)
                return 1
            print(f"removed {args.name}")
        else:
            for name in sorted(read_users(args.users)):
                print(name)
    except (ValueError, OSError, EOFError) as error:  # a UsersFileError is a ValueError
        print(f"error: {str(error) or 'no password given'}", file=sys.stderr)
        return 1
    return 0


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise ValueError("the passwords differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n")
