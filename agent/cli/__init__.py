"""The ``virtbus`` command: one module per group of verbs, each adding its parsers and
``set_defaults(main=...)``; ``main`` parses and calls the verb's ``main``.

    agent        the host agent              gateway      libvirt's remote protocol
    gateway_user the gateway's SASL users
    provision    broker users                schema       the wire models' schemas
    listing      list                        define       define, create
    info         dominfo, domstate, …        lifecycle    start, shutdown, …
    tuning       autostart, setmem, schedinfo, … events event
    hosts        hosts                       completion   completion bash|zsh
    stats        domstats, capabilities, …   networks     net-*, domifaddr, *-interface
    storage      pool-list, vol-*, snapshot-*
    dashboard    dashboard, dashboard-user
    metadata     desc, metadata              console      console, console-output

Shared: ``config`` (the ``VIRTBUS_*`` settings), ``options`` (connection options and
the choice of hosts), ``domain`` (a domain verb as a typed command, to one host or
many), ``output`` (all formatting), ``known`` (the hosts seen), ``runner`` (asyncio,
errors, the connection). Libraries that talk to the broker, Docker or HTTP are imported
by the verb that runs, so ``virtbus --help`` loads none of them.

A one-command verb (``ONE_COMMAND_VERBS``) builds the parser of its own group only and
loads no pydantic: ``virtbus domstate`` costs little more than importing aio-pika.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.cli.config import CliConfig

if TYPE_CHECKING:
    from agent.cli.agent import config_from
    from agent.cli.tuning import kib

DESCRIPTION = """virtbus: the operator's virsh for a fleet of Docker hosts, and the agent.

Domain commands talk to one host (--host), one group (--group) or every host
(--all-hosts). Tables for people, --json for scripts; errors go to stderr as
"error: <message>" with exit status 1. "virtbus COMMAND --help" tells more.
"""
VERB_GROUPS = (
    "agent",
    "gateway",
    "gateway_user",
    "provision",
    "schema",
    "listing",
    "define",
    "info",
    "lifecycle",
    "tuning",
    "events",
    "hosts",
    "completion",
    "stats",
    "networks",
    "storage",
    "dashboard",
    "metadata",
    "console",
)
"""The modules of ``agent.cli`` that add verbs, in the order ``--help`` lists their verbs."""
ONE_COMMAND_VERBS = {
    "list": "listing",
    "domstate": "info",
    "domid": "info",
    "domuuid": "info",
    "domname": "info",
    "dumpxml": "info",
    "start": "lifecycle",
    "shutdown": "lifecycle",
    "destroy": "lifecycle",
    "reboot": "lifecycle",
    "suspend": "lifecycle",
    "resume": "lifecycle",
    "undefine": "lifecycle",
}
"""Verbs that send one command as JSON (``agent.cli.domain.WireRequest``), by the group
that adds them: run with that group's parser alone (a test checks the groups)."""


def group(name: str) -> ModuleType:
    return importlib.import_module(f"agent.cli.{name}")


def build_parser(groups: Sequence[str] = VERB_GROUPS) -> argparse.ArgumentParser:
    """The parser of the verbs of ``groups`` (all by default)."""
    parser = argparse.ArgumentParser(
        prog="virtbus",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"virtbus {__version__}")
    commands = parser.add_subparsers(
        dest="verb", required=True, metavar="COMMAND", title="commands"
    )
    config = CliConfig()
    for name in groups:
        group(name).register(commands, config)
    return parser


def verbs(parser: argparse.ArgumentParser) -> list[str]:
    """The parser's commands, in the order ``--help`` lists them."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def unknown_verb(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """virsh's complaint about a command it does not know, with the closest ones, or None
    if the first word that is not an option is a command (or there is none)."""
    word = next((item for item in argv if not item.startswith("-")), None)
    known = verbs(parser)
    if word is None or word in known:
        return None
    import difflib

    message = f"error: unknown command: '{word}'"
    close = difflib.get_close_matches(word, known, n=3, cutoff=0.6)
    if close:
        message += "\ndid you mean " + " or ".join(f"'{verb}'" for verb in close) + "?"
    return message + "\n(virtbus --help lists every command)"


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    verb = next((item for item in words if not item.startswith("-")), None)
    if verb in ONE_COMMAND_VERBS:
        parser = build_parser([ONE_COMMAND_VERBS[verb]])
    else:
        parser = build_parser()
        complaint = unknown_verb(parser, words)
        if complaint is not None:
            print(complaint, file=sys.stderr)
            return 1
    args = parser.parse_args(words)
    status: int = args.main(args)
    return status


def __getattr__(name: str) -> Any:
    if name == "config_from":
        return group("agent").config_from
    if name == "kib":
        return group("tuning").kib
    raise AttributeError(f"module 'agent.cli' has no attribute {name!r}")


__all__ = ["build_parser", "config_from", "kib", "main"]
