"""What a domain is: ``dominfo``, ``domstate``, ``domid``, ``domuuid``, ``domname``,
``dumpxml``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli import domain
from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, target_of
from agent.cli.output import Output, dominfo_text, render_field, render_state, render_xml
from agent.cli.runner import run_client
from schemas.commands import GetInfo, GetState, GetXmlDesc, Lookup
from schemas.domain import DomainRecord
from schemas.replies import DomainInfo

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.client import Connection


def register(commands: Commands, config: CliConfig) -> None:
    dominfo = add_verb(commands, config, "dominfo", "domain information", lookup_request)
    dominfo.add_argument("domain", help="name, UUID or ID")
    dominfo.set_defaults(main=dominfo_main)
    domstate = add_verb(commands, config, "domstate", "domain state", state_request)
    domstate.add_argument("domain", help="name, UUID or ID")
    domstate.add_argument("--reason", action="store_true", help="also print the reason")
    for verb, summary in (("domid", "id"), ("domuuid", "UUID"), ("domname", "name")):
        field = add_verb(commands, config, verb, f"domain {summary}", lookup_request)
        field.add_argument("domain", help="name, UUID or ID")
    dumpxml = add_verb(
        commands, config, "dumpxml", "a domain's libvirt domain XML", dumpxml_request
    )
    dumpxml.add_argument("domain", help="name, UUID or ID")
    dumpxml.add_argument(
        "--inactive", action="store_true", help="the definition for the next start"
    )


def lookup_request(args: argparse.Namespace) -> Request:
    """``domid``, ``domuuid``, ``domname``: one field of the domain's record."""
    return Request(Lookup, None, target_of(args.domain), render_field(args.verb[3:]))


def state_request(args: argparse.Namespace) -> Request:
    return Request(GetState, None, target_of(args.domain), render_state(args.reason))


def dumpxml_request(args: argparse.Namespace) -> Request:
    target = target_of(args.domain)
    return Request(GetXmlDesc, {"inactive": args.inactive}, target, render_xml)


def dominfo_main(args: argparse.Namespace) -> int:
    return run_client(args, dominfo)


async def dominfo(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    """Two commands, the record and the info, so one host only."""
    if domain.broadcasts(args):
        output.error("dominfo takes one host: use --host")
        return 1
    if domain.no_host(args, output):
        return 1
    target = target_of(args.domain)
    record = await conn.call(args.host, Lookup, target=target)
    info = await conn.call(args.host, GetInfo, target=target)
    assert isinstance(record, DomainRecord) and isinstance(info, DomainInfo)
    output.result({"record": record, "info": info}, dominfo_text(record, info))
    return 0
