"""``agent``: run the host agent. Flags override ``VIRTBUS_*`` variables (agent.config),
which override the defaults."""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import signal
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from agent import logs
from agent.cli.config import CliConfig
from agent.cli.options import TLS_FILES
from agent.settings import setting_problems

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.host.config import Config

NOT_SETTINGS = frozenset({"verb", "main"})
"""Namespace entries that are the parser's, not the agent's configuration."""
AGENT_FLAGS = {"groups": "--group", "trusted_keys": "--trusted-key"}
"""Settings whose flag is not their name."""

log = logging.getLogger(__name__)


def register(commands: Commands, config: CliConfig) -> None:
    parser = commands.add_parser(
        "agent",
        help="run the host agent",
        description="Run the host agent. Flags override VIRTBUS_* variables, which "
        "override the defaults.",
    )
    parser.set_defaults(main=main)
    parser.add_argument("--host", help="this host's name, a DNS label (VIRTBUS_HOST)")
    parser.add_argument("--amqp-url", help="broker URL (VIRTBUS_AMQP_URL)")
    parser.add_argument(
        "--group", dest="groups", action="append", help="a group to join; repeatable"
    )
    parser.add_argument("--docker-url", help="Docker engine URL (VIRTBUS_DOCKER_URL)")
    parser.add_argument("--state-dir", help="base of the per-host state (VIRTBUS_STATE_DIR)")
    parser.add_argument(
        "--queue-type",
        choices=["quorum", "classic"],
        help="type of the host queue (default quorum) (VIRTBUS_QUEUE_TYPE)",
    )
    parser.add_argument("--concurrency", type=int, help="commands run at once")
    parser.add_argument("--prefetch", type=int, help="commands taken from the queue at once")
    parser.add_argument("--heartbeat-s", type=float, help="seconds between heartbeats")
    parser.add_argument("--drain-s", type=float, help="graceful stop bound, in seconds")
    parser.add_argument("--reconcile-s", type=float, help="seconds between re-lists of Docker")
    parser.add_argument(
        "--docker-timeout-s",
        type=float,
        help="bound on one call to the Docker engine (a stop's grace period added)",
    )
    parser.add_argument(
        "--outbox-limit", type=int, help="pending events beyond which commands wait"
    )
    parser.add_argument(
        "--event-loop",
        choices=["uvloop", "asyncio"],
        help="the agent's event loop (default uvloop) (VIRTBUS_EVENT_LOOP)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="least severe message logged (default info) (VIRTBUS_LOG_LEVEL)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines for people or for a collector (default text) (VIRTBUS_LOG_FORMAT)",
    )
    parser.add_argument("--metrics-port", type=int, help="serve /metrics and /health on this port")
    parser.add_argument("--metrics-host", help="address of the metrics endpoint (127.0.0.1)")
    parser.add_argument(
        "--trusted-key",
        dest="trusted_keys",
        action="append",
        metavar="ID=ALGORITHM:PATH",
        help="accept commands signed by this key (hmac-sha256 secret or ed25519 public key "
        "file); repeatable; any one makes signatures required (VIRTBUS_TRUSTED_KEYS)",
    )
    parser.add_argument(
        "--signing-window-s", type=float, help="allowed clock difference of a signed command"
    )
    parser.add_argument("--policy-file", help="TOML host policy (VIRTBUS_POLICY_FILE)")
    parser.add_argument("--max-message-bytes", type=int, help="largest command body accepted")
    parser.add_argument(
        "--declare-topology",
        action=argparse.BooleanOptionalAction,
        help="declare exchanges, the host queue and its bindings at start (default); "
        "--no-declare-topology for a user made by 'virtbus provision agent' "
        "(VIRTBUS_DECLARE_TOPOLOGY)",
    )
    for peer, prefix in (("amqp", "amqps"), ("docker", "Docker over TLS")):
        for what, meaning in TLS_FILES.items():
            parser.add_argument(
                f"--{peer}-{what}-file",
                help=f"{prefix}: {meaning} (VIRTBUS_{peer.upper()}_{what.upper()}_FILE)",
            )


def config_from(args: argparse.Namespace) -> Config:
    """The agent's configuration: the flags given, over ``VIRTBUS_*``, over defaults."""
    from agent.host.config import Config

    flags = {
        key: value
        for key, value in vars(args).items()
        if key not in NOT_SETTINGS and value is not None
    }
    return Config(**flags)


async def run_agent(config: Config) -> None:
    from agent.host.agent import Agent

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    async with Agent(config):
        await stop.wait()


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit on open descriptors to its hard limit, as Go's
    runtime does for every Go program (dockerd included): the usual soft limit of 1,024
    would cap the kernel files the statistics keep open (a share of the soft limit) and
    leave little room for sockets. An unlimited hard limit is left alone (the kernel's
    ``nr_open`` caps it anyway). Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as error:
        log.warning(
            "kept the descriptor limit at %d (could not raise it to %d: %s)", soft, hard, error
        )
        return soft
    return hard


def main(args: argparse.Namespace) -> int:
    try:
        config = config_from(args)
    except ValidationError as error:
        for line in setting_problems(error, AGENT_FLAGS):
            print(f"error: {line}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format, config.host)
    raise_descriptor_limit()
    try:
        if config.event_loop == "uvloop":
            import uvloop

            uvloop.run(run_agent(config))
        else:
            asyncio.run(run_agent(config))
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
