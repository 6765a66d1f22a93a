"""``schema``: the wire models' JSON Schemas, or an AsyncAPI document of the bus."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from agent import __version__
from agent.cli.config import CliConfig

if TYPE_CHECKING:
    from agent.cli.options import Commands


def register(commands: Commands, config: CliConfig) -> None:
    schema = commands.add_parser("schema", help="print the wire models' schemas")
    schema.add_argument(
        "--asyncapi", action="store_true", help="an AsyncAPI 3.0 document of the whole bus"
    )
    schema.set_defaults(main=main)


def main(args: argparse.Namespace) -> int:
    if args.asyncapi:
        from schemas.asyncapi import asyncapi_document

        document = asyncapi_document(__version__)
    else:
        from schemas import json_schemas

        document = json_schemas()
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
