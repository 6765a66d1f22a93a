"""``provision``: broker users for agents, orchestrators and subscribers, through
RabbitMQ's management API (agent.provision)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from pydantic import SecretStr

from agent.cli.config import CliConfig
from agent.cli.options import host_name
from agent.cli.output import Output
from agent.cli.runner import run

if TYPE_CHECKING:
    from agent.admin.provision import Grant
    from agent.cli.options import Commands

MANAGEMENT_HELP = "management API with an administrator's credentials (VIRTBUS_MANAGEMENT_URL)"


def register(commands: Commands, config: CliConfig) -> None:
    parser = commands.add_parser(
        "provision",
        help="create broker users for agents, orchestrators and subscribers",
        description="Create (or reset) a RabbitMQ user with exactly the permissions of its "
        "role, through the management API. A generated password is printed once on stdout.",
    )
    parser.set_defaults(main=main)
    roles = parser.add_subparsers(dest="role", required=True)
    common = argparse.ArgumentParser(add_help=False)
    # None: agent.provision's defaults, looked up when the verb runs, not for --help
    common.add_argument("--management-url", default=config.management_url, help=MANAGEMENT_HELP)
    common.add_argument("--vhost", help="virtual host (default /)")
    password = common.add_mutually_exclusive_group()
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    password.add_argument(
        "--password-env", metavar="VAR", help="take the password from this environment variable"
    )
    agent = roles.add_parser("agent", parents=[common], help="the agent of one host")
    agent.add_argument("host", type=host_name, help="the host's name")
    agent.add_argument(
        "--group",
        dest="groups",
        type=host_name,
        action="append",
        default=[],
        help="a group it may join; repeatable",
    )
    agent.add_argument("--user", help="user name (default agent-HOST)")
    agent.add_argument(
        "--queue-type",
        choices=["quorum", "classic"],
        default="quorum",
        help="type of the host queue declared here (default quorum)",
    )
    agent.add_argument(
        "--agent-declares",
        action="store_true",
        help="let the agent declare the topology itself (run without --no-declare-topology); "
        "it can then also bind its queue to other hosts' commands and delete shared exchanges",
    )
    orchestrator = roles.add_parser(
        "orchestrator", parents=[common], help="sends commands, reads replies and events"
    )
    orchestrator.add_argument("user", help="user name")
    subscriber = roles.add_parser("subscriber", parents=[common], help="reads events only")
    subscriber.add_argument("user", help="user name")
    subscriber.add_argument(
        "--host",
        dest="hosts",
        type=host_name,
        action="append",
        default=[],
        help="only this host's events; repeatable",
    )
    remove = roles.add_parser("remove", help="delete a user")
    remove.add_argument("user", help="user name")
    remove.add_argument("--management-url", default=config.management_url, help=MANAGEMENT_HELP)


def main(args: argparse.Namespace) -> int:
    return run(provision(args, Output(False)), Output(False))


def _role(args: argparse.Namespace) -> tuple[str, Grant, str]:
    """The user, its grant, and what it may do in words."""
    from agent.admin.provision import agent_grant, orchestrator_grant, subscriber_grant

    if args.role == "agent":
        groups = f" (groups: {', '.join(args.groups)})" if args.groups else ""
        return (
            args.user or f"agent-{args.host}",
            agent_grant(args.host, args.groups, args.agent_declares),
            f"the agent of host {args.host}{groups}",
        )
    if args.role == "orchestrator":
        return args.user, orchestrator_grant(), "an orchestrator"
    only = f" of {', '.join(args.hosts)}" if args.hosts else ""
    return args.user, subscriber_grant(args.hosts), f"a subscriber to the events{only}"


async def provision(args: argparse.Namespace, output: Output) -> int:
    from agent.admin.provision import (
        DEFAULT_MANAGEMENT_URL,
        DEFAULT_VHOST,
        Management,
        new_password,
    )

    async with Management(args.management_url or DEFAULT_MANAGEMENT_URL) as api:
        if args.role == "remove":
            if not await api.remove(args.user):
                output.error(f"no user {args.user!r}")
                return 1
            print(f"user {args.user!r} removed", file=sys.stderr)
            return 0
        if args.password_stdin:
            password = SecretStr(sys.stdin.readline().rstrip("\n"))
        elif args.password_env:
            # a variable the operator names, not a setting: read as it is
            password = SecretStr(os.environ.get(args.password_env, ""))
        else:
            password = new_password()
        if not password.get_secret_value():
            output.error("the password is empty")
            return 1
        user, grant, what = _role(args)
        vhost = DEFAULT_VHOST if args.vhost is None else args.vhost
        declares_queue = args.role == "agent" and not args.agent_declares
        await api.provision(user, password, grant, vhost)
        await api.declare_topology(vhost)
        if declares_queue:
            await api.declare_host_queue(args.host, args.groups, args.queue_type, vhost)
        if not (args.password_stdin or args.password_env):
            print(password.get_secret_value())
        print(f"user {user!r} is now {what} on vhost {vhost!r}", file=sys.stderr)
        if declares_queue:
            print(
                "run the agent with --no-declare-topology: its queue and bindings are declared",
                file=sys.stderr,
            )
        return 0
