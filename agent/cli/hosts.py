"""``hosts``: the fleet and its presence, and the hosts a broadcast expects."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.known import load_known, remember, save_known
from agent.cli.options import add_client_options
from agent.cli.output import Output, hosts_table
from agent.cli.runner import run_client

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.client import Connection


def register(commands: Commands, config: CliConfig) -> None:
    hosts = commands.add_parser("hosts", help="the fleet and its presence")
    add_client_options(hosts, config)
    hosts.add_argument("--group", help="only this group")
    hosts.add_argument("--misses", type=int, default=3, help="heartbeats missed before lost")
    hosts.add_argument(
        "--forget", action="append", metavar="HOST", help="stop expecting a retired host"
    )
    hosts.set_defaults(timeout=2.0, main=main)


def main(args: argparse.Namespace) -> int:
    return run_client(args, run)


async def run(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    from agent.client import HostStatus

    known = load_known()
    if args.forget:
        for host in args.forget:
            known.pop(host, None)
        save_known(known)
        return 0
    async with conn.hosts(misses=args.misses, discover_s=args.timeout) as registry:
        now = datetime.now(UTC)
        for host, facts in known.items():
            if host in registry.hosts:
                continue
            last_seen = datetime.fromisoformat(facts.get("last_seen", now.isoformat()))
            heartbeat_s = float(facts.get("heartbeat_s", 10.0))
            silent_s = (now - last_seen).total_seconds()
            registry.hosts[host] = HostStatus(
                host=host,
                state="offline"
                if facts.get("state") == "offline"
                else ("lost" if silent_s > args.misses * heartbeat_s else "alive"),
                last_seen=last_seen,
                agent_version=str(facts.get("agent_version", "")),
                groups=list(facts.get("groups", [])),
                heartbeat_s=heartbeat_s,
            )
        statuses = sorted(registry.hosts.values(), key=lambda s: s.host)
    remember({}, statuses)
    shown = [s for s in statuses if args.group is None or args.group in s.groups]
    output.result(
        [{**s.__dict__, "last_seen": s.last_seen.isoformat()} for s in shown],
        hosts_table(shown),
    )
    return 0
