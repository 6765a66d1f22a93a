"""``virtbus``: the command line. ``virtbus agent`` runs a host agent; ``virtbus schema``
prints the JSON Schema of every wire model."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from agent import __version__
from agent.agent import Agent
from agent.config import Config
from schemas import json_schemas


def _agent_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "agent",
        help="run the host agent",
        description="Run the host agent. Flags override VIRTBUS_* variables, which "
        "override the defaults.",
    )
    parser.add_argument("--host", help="this host's name, a DNS label (VIRTBUS_HOST)")
    parser.add_argument("--amqp-url", help="broker URL (VIRTBUS_AMQP_URL)")
    parser.add_argument(
        "--group", dest="groups", action="append", help="a group to join; repeatable"
    )
    parser.add_argument("--docker-url", help="Docker engine URL (VIRTBUS_DOCKER_URL)")
    parser.add_argument("--state-dir", help="base of the per-host state (VIRTBUS_STATE_DIR)")
    parser.add_argument("--queue-type", choices=["quorum", "classic"])
    parser.add_argument("--concurrency", type=int, help="commands run at once")
    parser.add_argument("--prefetch", type=int, help="commands taken from the queue at once")
    parser.add_argument("--heartbeat-s", type=float, help="seconds between heartbeats")
    parser.add_argument("--drain-s", type=float, help="graceful stop bound, in seconds")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtbus", description=__doc__)
    parser.add_argument("--version", action="version", version=f"virtbus {__version__}")
    commands = parser.add_subparsers(dest="verb", required=True)
    _agent_parser(commands)
    commands.add_parser("schema", help="print the JSON Schema of every wire model")
    return parser


def config_from(args: argparse.Namespace) -> Config:
    flags = {key: value for key, value in vars(args).items() if key != "verb" and value is not None}
    return Config(**flags)


async def run_agent(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    async with Agent(config):
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verb == "schema":
        json.dump(json_schemas(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    try:
        config = config_from(args)
    except ValidationError as error:
        print(f"error: invalid configuration: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run_agent(config))
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
