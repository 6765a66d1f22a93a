"""``define`` and ``create``: a domain from a JSON spec or libvirt domain XML file."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, read_definition
from agent.cli.output import record_line
from schemas.commands import CreateXml, Define

if TYPE_CHECKING:
    from agent.cli.options import Commands

FILE_HELP = "JSON spec or domain XML file (.xml, or starting with <), or - for stdin"


def register(commands: Commands, config: CliConfig) -> None:
    summary = "{} a domain from a JSON spec or libvirt domain XML file"
    define = add_verb(commands, config, "define", summary.format("define"), define_request)
    define.add_argument("file", help=FILE_HELP)
    create = add_verb(commands, config, "create", summary.format("create"), create_request)
    create.add_argument("file", help=FILE_HELP)
    create.add_argument("--paused", action="store_true", help="leave the domain paused")


def define_request(args: argparse.Namespace) -> Request:
    message = "Domain '{name}' defined from " + args.file
    return Request(Define, read_definition(args.file), None, record_line(message))


def create_request(args: argparse.Namespace) -> Request:
    definition = read_definition(args.file)
    extra = {"start_paused": True} if args.paused else {}
    message = "Domain '{name}' created from " + args.file
    return Request(CreateXml, {**definition, **extra}, None, record_line(message))
