"""The ``virtbus`` command: one module per group of verbs, each adding its parsers and
``set_defaults(main=...)``; ``main`` parses and calls the verb's ``main``.

    agent        the host agent              gateway      libvirt's remote protocol
    gateway_user the gateway's SASL users
    provision    broker users                schema       the wire models' schemas
    listing      list                        define       define, create
    info         dominfo, domstate, …        lifecycle    start, shutdown, …
    tuning       autostart, setmem, …        events       event
    hosts        hosts
    metadata     desc, metadata              console      console, console-output

Shared: ``config`` (the ``VIRTBUS_*`` settings), ``options`` (connection options and
the choice of hosts), ``domain`` (a domain verb as a typed command, to one host or
many), ``output`` (all formatting), ``known`` (the hosts seen), ``runner`` (asyncio,
errors, the connection). Libraries that talk to the broker, Docker or HTTP are imported
by the verb that runs, so ``virtbus --help`` loads none of them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from agent import __version__
from agent.cli import (
    agent,
    console,
    define,
    events,
    gateway,
    gateway_user,
    hosts,
    info,
    lifecycle,
    listing,
    metadata,
    provision,
    schema,
    tuning,
)
from agent.cli.agent import config_from
from agent.cli.config import CliConfig
from agent.cli.tuning import kib

DESCRIPTION = """``virtbus``: the operator's virsh for a fleet of Docker hosts, and the agent.

Domain verbs talk to one host (``--host``), one group (``--group``) or every host
(``--all-hosts``). Tables for people, ``--json`` for scripts; errors go to stderr as
``error: <message>`` with exit status 1.
"""
VERB_GROUPS = (
    agent,
    gateway,
    gateway_user,
    provision,
    schema,
    listing,
    define,
    info,
    lifecycle,
    tuning,
    events,
    hosts,
    metadata,
    console,
)
"""In the order ``--help`` lists their verbs."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtbus", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"virtbus {__version__}")
    commands = parser.add_subparsers(dest="verb", required=True)
    config = CliConfig()
    for group in VERB_GROUPS:
        group.register(commands, config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.main(args)
    return status


__all__ = ["build_parser", "config_from", "kib", "main"]
