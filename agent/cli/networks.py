"""Networks and interfaces, named as virsh names them: ``net-define``, ``net-start``,
``net-destroy``, ``net-undefine``, ``net-autostart``, ``net-list``, ``net-dumpxml``,
``net-dhcp-leases``, ``domifaddr``, ``attach-interface``, ``detach-interface``."""

from __future__ import annotations

import argparse
import re
import uuid
from typing import TYPE_CHECKING, Any

from agent.cli import domain
from agent.cli.config import CliConfig
from agent.cli.domain import Request, add_verb, read_definition, target_of
from agent.cli.options import add_client_options, add_targeting
from agent.cli.output import (
    Output,
    network_line,
    render_addresses,
    render_device,
    render_leases,
    render_network_xml,
    render_networks,
)
from agent.cli.runner import run_client
from schemas.codes import ErrorCode
from schemas.commands import (
    AttachDevice,
    DetachDevice,
    GetXmlDesc,
    InterfaceAddresses,
    ListNetworks,
    NetworkCreate,
    NetworkDefine,
    NetworkDestroy,
    NetworkGetDhcpLeases,
    NetworkGetXmlDesc,
    NetworkSetAutostart,
    NetworkUndefine,
)
from schemas.errors import VirtbusError
from schemas.replies import DeviceChange, DomainXml

if TYPE_CHECKING:
    from agent.cli.options import Commands
    from agent.client import Connection

NETWORK_HELP = "network name or UUID"
LIST_FLAGS = ("inactive", "persistent", "transient", "autostart", "no_autostart")


def register(commands: Commands, config: CliConfig) -> None:
    define = add_verb(
        commands,
        config,
        "net-define",
        "define a network from network XML or a JSON spec",
        define_request,
    )
    define.add_argument("file", help="network XML file (.xml, or starting with <), JSON spec, or -")
    for verb, summary, request in (
        ("net-start", "start a defined network (its Docker network is created)", start_request),
        ("net-destroy", "stop a network (its Docker network is removed)", destroy_request),
        ("net-undefine", "forget a network's definition", undefine_request),
        ("net-dumpxml", "a network's libvirt network XML", dumpxml_request),
    ):
        parser = add_verb(commands, config, verb, summary, request)
        parser.add_argument("network", help=NETWORK_HELP)
    autostart = add_verb(
        commands, config, "net-autostart", "start a network with its agent", autostart_request
    )
    autostart.add_argument("network", help=NETWORK_HELP)
    autostart.add_argument("--disable", action="store_true", help="stop starting it with its agent")
    listing = add_verb(
        commands, config, "net-list", "list networks (active ones by default)", list_request
    )
    listing.add_argument("--all", action="store_true", help="active and inactive")
    for flag in LIST_FLAGS:
        listing.add_argument(
            f"--{flag.replace('_', '-')}",
            action="store_true",
            help=f"only {flag.replace('_', ' ')} networks",
        )
    leases = add_verb(
        commands, config, "net-dhcp-leases", "addresses Docker gave on a network", leases_request
    )
    leases.add_argument("network", help=NETWORK_HELP)
    leases.add_argument("--mac", help="only this MAC address's")
    domifaddr = add_verb(
        commands, config, "domifaddr", "a running domain's addresses", domifaddr_request
    )
    domifaddr.add_argument("domain", help="name, UUID or ID")
    domifaddr.add_argument(
        "--source",
        choices=("lease", "agent", "arp"),
        default="lease",
        help="where addresses come from (each answers with Docker's view; default lease)",
    )
    attach = add_verb(
        commands,
        config,
        "attach-interface",
        "plug a network interface into a domain",
        attach_request,
    )
    attach.add_argument("domain", help="name, UUID or ID")
    attach.add_argument("type", choices=("network",), help="the interface type: network")
    attach.add_argument("source", help="the network")
    attach.add_argument(
        "--mac", help="its MAC address (derived from the domain's UUID if not given)"
    )
    detach = commands.add_parser("detach-interface", help="unplug a network interface")
    add_targeting(detach, config)
    add_client_options(detach, config)
    detach.set_defaults(main=detach_main)
    detach.add_argument("domain", help="name, UUID or ID")
    detach.add_argument("type", choices=("network",), help="the interface type: network")
    detach.add_argument("--mac", help="the interface's MAC address")
    detach.add_argument("--source", help="the interface's network")
    for parser in (attach, detach):
        parser.add_argument("--live", action="store_true", help="the running domain")
        parser.add_argument("--config", action="store_true", help="the persistent definition")
        parser.add_argument("--current", action="store_true", help="live if running, else config")
        parser.add_argument("--persistent", action="store_true", help="--live and --config")


def network_target(network: str) -> dict[str, Any]:
    try:
        return {"uuid": str(uuid.UUID(network))}
    except ValueError:
        return {"name": network}


def define_request(args: argparse.Namespace) -> Request:
    message = "Network {name} defined from " + args.file
    return Request(NetworkDefine, read_definition(args.file), None, network_line(message))


def start_request(args: argparse.Namespace) -> Request:
    target = network_target(args.network)
    return Request(NetworkCreate, None, target, network_line("Network {name} started"))


def destroy_request(args: argparse.Namespace) -> Request:
    target = network_target(args.network)
    return Request(NetworkDestroy, None, target, network_line("Network {name} destroyed"))


def undefine_request(args: argparse.Namespace) -> Request:
    line = network_line("Network {name} has been undefined")
    return Request(NetworkUndefine, None, network_target(args.network), line)


def dumpxml_request(args: argparse.Namespace) -> Request:
    return Request(NetworkGetXmlDesc, None, network_target(args.network), render_network_xml)


def autostart_request(args: argparse.Namespace) -> Request:
    done = "unmarked as autostarted" if args.disable else "marked as autostarted"
    return Request(
        NetworkSetAutostart,
        {"autostart": not args.disable},
        network_target(args.network),
        network_line("Network {name} " + done),
    )


def list_request(args: argparse.Namespace) -> Request:
    """As virsh: active networks unless --all or --inactive."""
    flags = [flag for flag in LIST_FLAGS if getattr(args, flag)]
    if not args.all and "inactive" not in flags:
        flags.append("active")
    return Request(ListNetworks, {"flags": flags}, None, render_networks)


def leases_request(args: argparse.Namespace) -> Request:
    values = {"mac": args.mac} if args.mac else None
    return Request(NetworkGetDhcpLeases, values, network_target(args.network), render_leases)


def domifaddr_request(args: argparse.Namespace) -> Request:
    target = target_of(args.domain)
    return Request(InterfaceAddresses, {"source": args.source}, target, render_addresses)


def affect(args: argparse.Namespace) -> dict[str, bool]:
    """virsh's --live, --config, --persistent; --current (or none) leaves it to the agent."""
    if args.current and (args.live or args.config or args.persistent):
        raise VirtbusError.of(ErrorCode.INVALID_ARG, "--current excludes --live and --config")
    return {"live": args.live or args.persistent, "config": args.config or args.persistent}


def attach_request(args: argparse.Namespace) -> Request:
    interface = {"network": args.source, **({"mac": args.mac} if args.mac else {})}
    values = {"interface": interface, **affect(args)}
    return Request(
        AttachDevice,
        values,
        target_of(args.domain),
        render_device("Interface attached successfully"),
    )


def detach_main(args: argparse.Namespace) -> int:
    return run_client(args, detach)


async def detach(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    """As virsh: the interface found by its MAC address (or network) in the domain's XML
    (the persistent one with --config), then detached."""
    if domain.broadcasts(args):
        output.error("detach-interface takes one host: use --host")
        return 1
    if domain.no_host(args, output):
        return 1
    target = target_of(args.domain)
    where = affect(args)
    network = args.source
    if network is None:
        inactive = where["config"] and not where["live"]
        described = await conn.call(args.host, GetXmlDesc, {"inactive": inactive}, target)
        assert isinstance(described, DomainXml)
        network = interface_network(described.xml, args.mac)
    interface = {"network": network, **({"mac": args.mac.lower()} if args.mac else {})}
    change = await conn.call(args.host, DetachDevice, {"interface": interface, **where}, target)
    assert isinstance(change, DeviceChange)
    output.result(change, render_device("Interface detached successfully")(change))
    return 0


_INTERFACE = re.compile(
    r"<interface type='network'>\s*<mac address='([0-9a-f:]+)'/>\s*<source network='([^']+)'/>"
)


def interface_network(xml: str, mac: str | None) -> str:
    """The network of the domain's interface with ``mac`` (the only one, without)."""
    found = [(m, n) for m, n in _INTERFACE.findall(xml) if mac is None or m == mac.lower()]
    if len(found) != 1:
        detail = "multiple matching interfaces found" if found else "No interface found"
        raise VirtbusError.of(ErrorCode.OPERATION_FAILED, detail)
    return str(found[0][1])
