"""Networks and interfaces with the real virsh, a real agent, broker and engine.

Every network here is internal (the engine runs with --bridge=none --iptables=false) and
no packet is sent: addresses are read from ``docker inspect`` and the bus.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from agent.gateway.server import Gateway
from agent.host.driver import HOST_LABEL
from schemas.events import DeviceEvent, NetworkEvent
from tests.integration import test_gateway
from tests.integration.test_gateway import Virsh, uri
from tests.support import BusPeer, EventRecorder
from tests.support.fleet import CLI, Fleet, Host, spec
from tests.support.services import IMAGE

pytestmark = pytest.mark.integration
gateway = test_gateway.gateway
virsh_path = test_gateway.virsh_path
libvirt_python = test_gateway.libvirt_python

POLICY = """
images = ["virtbus-test:*"]
networks = ["none", "vt-*"]
network_define = ["vt-*"]
network_subnets = ["10.251.0.0/16"]

[[mounts]]
prefix = "/tmp"
"""


def network_xml(name: str, third: int) -> str:
    return f"""<network>
  <name>{name}</name>
  <ip address='10.251.{third}.1' prefix='24'>
    <dhcp><range start='10.251.{third}.128' end='10.251.{third}.255'/></dhcp>
  </ip>
</network>
"""


DOMAIN_XML = f"""<domain type='docker'>
  <name>web</name>
  <os><type>exe</type><init>sleep</init><initarg>3600</initarg></os>
  <devices>
    <filesystem type='template'><source name='{IMAGE}'/><target dir='/'/></filesystem>
    <interface type='network'><source network='vt-a'/></interface>
  </devices>
</domain>
"""


@pytest.fixture
async def netted(fleet: Fleet, peer: BusPeer, tmp_path: Path) -> Host:
    """An agent whose policy lets it define and join ``vt-*`` networks in 10.251/16."""
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    agent = await fleet.start(policy_file=policy)
    recorder = await EventRecorder(peer.channel, f"{agent.host}.#").start()
    return Host(agent.host, peer, recorder, agent)


@pytest.fixture
def vsh(virsh_path: str, gateway: Gateway, netted: Host) -> Virsh:
    return Virsh(virsh_path, uri(gateway, netted.name))


@pytest.fixture
async def engine(services: None) -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker()
    yield client
    await client.close()


async def host_networks(docker: aiodocker.Docker, host: str) -> dict[str, dict[str, Any]]:
    listed = await docker.networks.list(filters={"label": [f"{HOST_LABEL}={host}"]})
    return {n["Name"]: n for n in listed}


async def inspect(docker: aiodocker.Docker, host: Host, domain: str) -> dict[str, Any]:
    container = docker.containers.container(host.container_name(domain))
    networks: dict[str, Any] = (await container.show())["NetworkSettings"]["Networks"]
    return networks


def net_list(out: str) -> dict[str, list[str]]:
    """``virsh net-list``: name → its other columns."""
    rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
    return {row[0]: row[1:] for row in rows}


async def test_virsh_network_a_domain_joins_and_domifaddr(
    vsh: Virsh, netted: Host, engine: aiodocker.Docker, tmp_path: Path
) -> None:
    definition = tmp_path / "vt-a.xml"
    definition.write_text(network_xml("vt-a", 61))
    assert "Network vt-a defined" in await vsh.ok("net-define", str(definition))
    assert net_list(await vsh.ok("net-list", "--all"))["vt-a"] == ["inactive", "no", "yes"]
    assert "vt-a" not in net_list(await vsh.ok("net-list"))
    assert await host_networks(engine, netted.name) == {}

    await vsh.ok("net-start", "vt-a")
    assert net_list(await vsh.ok("net-list"))["vt-a"] == ["active", "no", "yes"]
    docker_net = (await host_networks(engine, netted.name))[f"{netted.name}.vt-a"]
    assert docker_net["Internal"] is True
    assert docker_net["IPAM"]["Config"][0]["Subnet"] == "10.251.61.0/24"
    assert docker_net["IPAM"]["Config"][0]["IPRange"] == "10.251.61.128/25"
    dumped = await vsh.ok("net-dumpxml", "vt-a")
    assert "<ip address='10.251.61.1' prefix='24'>" in dumped
    assert "<range start='10.251.61.128' end='10.251.61.255'/>" in dumped

    domain_file = tmp_path / "web.xml"
    domain_file.write_text(DOMAIN_XML)
    await vsh.ok("define", str(domain_file))
    await vsh.ok("start", "web")
    joined = (await inspect(engine, netted, "web"))[f"{netted.name}.vt-a"]
    out = await vsh.ok("domifaddr", "web")
    rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
    assert rows == [
        ["eth0", joined["MacAddress"], "ipv4", f"{joined['IPAddress']}/{joined['IPPrefixLen']}"]
    ]
    assert ipaddress.ip_address(joined["IPAddress"]) in ipaddress.ip_network("10.251.61.128/25")
    mac = re.search(r"<mac address='([0-9a-f:]+)'/>", await vsh.ok("dumpxml", "web"))
    assert mac is not None and mac.group(1) == joined["MacAddress"]

    # the MAC address is the domain's across restarts
    await vsh.ok("destroy", "web")
    await vsh.ok("start", "web")
    assert (await inspect(engine, netted, "web"))[f"{netted.name}.vt-a"]["MacAddress"] == mac[1]

    leases = await vsh.ok("net-dhcp-leases", "vt-a")
    assert joined["IPAddress"] in leases and "web" in leases

    await vsh.ok("destroy", "web")
    await vsh.ok("undefine", "web")
    await vsh.ok("net-destroy", "vt-a")
    assert await host_networks(engine, netted.name) == {}
    await vsh.ok("net-undefine", "vt-a")
    assert "vt-a" not in net_list(await vsh.ok("net-list", "--all"))
    events = [e for e in netted.events.events if isinstance(e, NetworkEvent)]
    assert [(e.network.name, e.event, e.event_code, e.detail_code) for e in events] == [
        ("vt-a", "defined", 0, 0),
        ("vt-a", "started", 2, 0),
        ("vt-a", "stopped", 3, 0),
        ("vt-a", "undefined", 1, 0),
    ]


async def test_attach_interface_live_shows_everywhere_with_one_device_added(
    vsh: Virsh, netted: Host, engine: aiodocker.Docker, tmp_path: Path
) -> None:
    for name, third in (("vt-a", 62), ("vt-b", 63)):
        await netted.ok("network.define", args={"xml": network_xml(name, third)})
        await netted.ok("network.create", name)
    await netted.ok("domain.create_xml", args={"spec": spec("web", network="vt-a")})

    await vsh.ok("attach-interface", "web", "network", "vt-b", "--live")

    networks = await inspect(engine, netted, "web")
    assert set(networks) == {f"{netted.name}.vt-a", f"{netted.name}.vt-b"}
    assert "<source network='vt-b'/>" in await vsh.ok("dumpxml", "web")
    await netted.fence()
    added = [e for e in netted.events.events if isinstance(e, DeviceEvent)]
    assert [(e.event, e.event_id, e.alias, e.domain.name) for e in added] == [
        ("added", 19, "net1", "web")
    ]
    out = await vsh.ok("domifaddr", "web")
    shown = {line.split()[1]: line.split()[3] for line in out.splitlines()[2:] if line.strip()}
    assert shown == {
        n["MacAddress"]: f"{n['IPAddress']}/{n['IPPrefixLen']}" for n in networks.values()
    }

    mac = networks[f"{netted.name}.vt-b"]["MacAddress"]
    await vsh.ok("detach-interface", "web", "network", "--mac", mac, "--live")
    assert set(await inspect(engine, netted, "web")) == {f"{netted.name}.vt-a"}
    await netted.fence()
    removed = [e for e in netted.events.events if isinstance(e, DeviceEvent)][1:]
    assert [(e.event, e.event_id, e.alias) for e in removed] == [("removed", 15, "net1")]
    await netted.ok("domain.destroy", "web")
    for name in ("vt-a", "vt-b"):
        await netted.ok("network.destroy", name)
    assert await host_networks(engine, netted.name) == {}


async def test_a_filesystem_attach_goes_to_the_definition_and_says_so(
    netted: Host, engine: aiodocker.Docker
) -> None:
    await netted.ok("domain.define", args={"spec": spec("web")})
    await netted.ok("domain.create", "web")
    mount = {"source": "/tmp", "target": "/data", "readonly": True}
    live = await netted.call("domain.attach_device", "web", {"filesystem": mount, "live": True})
    assert live["error"]["code"] == "OPERATION_UNSUPPORTED"
    assert "persistent definition" in live["error"]["message"]
    change = await netted.ok("domain.attach_device", "web", {"filesystem": mount, "config": True})
    assert (change["live"], change["config"]) == (False, True)
    assert "/data" not in await mounted(engine, netted, "web")
    inactive = await netted.ok("domain.get_xml_desc", "web", {"inactive": True})
    assert "<target dir='/data'/>" in inactive["xml"]
    await netted.ok("domain.destroy", "web")
    await netted.ok("domain.create", "web")
    assert "/data" in await mounted(engine, netted, "web")


async def mounted(docker: aiodocker.Docker, host: Host, domain: str) -> set[str]:
    shown = await docker.containers.container(host.container_name(domain)).show()
    return {mount["Destination"] for mount in shown["Mounts"]}


async def test_policy_refusals_come_before_docker(
    vsh: Virsh, netted: Host, engine: aiodocker.Docker, tmp_path: Path
) -> None:
    refused = {
        "outside the names": network_xml("other", 64),
        "outside the subnets": network_xml("vt-far", 64).replace("10.251.64", "10.99.64"),
        "forwarding": network_xml("vt-nat", 65).replace("</name>", "</name><forward mode='nat'/>"),
    }
    for case, xml in refused.items():
        reply = await netted.call("network.define", args={"xml": xml})
        assert reply["error"]["code"] == "OPERATION_DENIED", case
    no_subnet = await netted.call("network.define", args={"spec": {"name": "vt-any"}})
    assert no_subnet["error"]["code"] == "OPERATION_DENIED"
    domain = await netted.call("domain.define", args={"spec": spec("web", network="bridge")})
    assert domain["error"]["code"] == "OPERATION_DENIED"
    ran = await vsh("net-define", str(_write(tmp_path, "other.xml", refused["outside the names"])))
    assert ran.status == 1 and "operation forbidden" in ran.err
    await netted.ok("domain.create_xml", args={"spec": spec("web2")})
    attach = await netted.call(
        "domain.attach_device", "web2", {"interface": {"network": "bridge"}, "live": True}
    )
    assert attach["error"]["code"] == "OPERATION_DENIED"
    assert await host_networks(engine, netted.name) == {}
    assert set(await inspect(engine, netted, "web2")) == {"none"}


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


async def test_the_virtbus_cli_names_network_verbs_as_virsh(
    netted: Host, cli: CLI, engine: aiodocker.Docker, tmp_path: Path
) -> None:
    on = ("--host", netted.name)
    definition = _write(
        tmp_path,
        "vt-c.json",
        json.dumps({"name": "vt-c", "ipv4": {"subnet": "10.251.66.0/24"}}),
    )
    assert (await cli("net-define", str(definition), *on)).out.startswith("Network vt-c defined")
    listed = (await cli("net-list", "--all", *on)).out
    assert re.search(r"vt-c\s+inactive\s+no\s+yes", listed)
    assert (await cli("net-start", "vt-c", *on)).out.strip() == "Network vt-c started"
    assert "<ip address='10.251.66.1' prefix='24'/>" in (await cli("net-dumpxml", "vt-c", *on)).out
    await netted.ok("domain.create_xml", args={"spec": spec("web", network="vt-c")})
    out = (await cli("domifaddr", "web", *on)).out
    joined = (await inspect(engine, netted, "web"))[f"{netted.name}.vt-c"]
    assert f"{joined['IPAddress']}/24" in out and joined["MacAddress"] in out
    ran = await cli("attach-interface", "web", "network", "vt-c", "--config", *on)
    assert ran.status == 1 and "transient" in ran.err
    await netted.ok("domain.destroy", "web")
    assert (await cli("net-destroy", "vt-c", *on)).out.strip() == "Network vt-c destroyed"
    assert (await cli("net-undefine", "vt-c", *on)).status == 0
    assert await host_networks(engine, netted.name) == {}


LIBVIRT_SCRIPT = """
import json, sys, threading
import libvirt

libvirt.virEventRegisterDefaultImpl()
threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl() for _ in iter(int, 1)],
                 daemon=True).start()
found = {}
seen = []
arrived = threading.Condition()

def on_network(conn, net, event, detail, opaque):
    with arrived:
        seen.append([net.name(), event, detail])
        arrived.notify_all()

def on_device(name):
    def callback(conn, dom, alias, opaque):
        with arrived:
            seen.append([dom.name(), name, alias])
            arrived.notify_all()
    return callback

conn = libvirt.open(sys.argv[1])
net_id = conn.networkEventRegisterAny(
    None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, on_network, None)
conn.domainEventRegisterAny(
    None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, on_device("added"), None)
conn.domainEventRegisterAny(
    None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, on_device("removed"), None)
net = conn.networkDefineXML(sys.argv[2])
found["defined"] = [net.isActive(), net.isPersistent(), net.autostart()]
inactive = conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_INACTIVE)
found["inactive"] = [n.name() for n in inactive]
net.create()
net.setAutostart(1)
found["by_uuid"] = conn.networkLookupByUUIDString(net.UUIDString()).name()
found["active"] = [n.name() for n in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)]
found["state"] = [net.isActive(), net.autostart(), net.bridgeName() != ""]
dom = conn.lookupByName("web")
iface = "<interface type='network'><source network='vt-p'/></interface>"
dom.attachDeviceFlags(iface, libvirt.VIR_DOMAIN_AFFECT_LIVE)
addresses = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
found["addresses"] = {name: [info["hwaddr"], info["addrs"]] for name, info in addresses.items()}
found["leases"] = [[l["mac"], l["ipaddr"], l["prefix"], l["hostname"]] for l in net.DHCPLeases()]
dom.detachDeviceFlags(iface, libvirt.VIR_DOMAIN_AFFECT_LIVE)
net.destroy()
net.undefine()
with arrived:
    arrived.wait_for(lambda: len(seen) >= 6, timeout=30)
found["events"] = seen
conn.networkEventDeregisterAny(net_id)
conn.close()
print(json.dumps(found))
"""


async def test_libvirt_python_manages_networks_and_interfaces(
    libvirt_python: str, gateway: Gateway, netted: Host, engine: aiodocker.Docker, tmp_path: Path
) -> None:
    await netted.ok("network.define", args={"xml": network_xml("vt-o", 67)})
    await netted.ok("network.create", "vt-o")
    await netted.ok("domain.create_xml", args={"spec": spec("web", network="vt-o")})
    script = _write(tmp_path, "nets.py", LIBVIRT_SCRIPT)
    process = await asyncio.create_subprocess_exec(
        libvirt_python,
        str(script),
        uri(gateway, netted.name),
        network_xml("vt-p", 68),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    found: dict[str, Any] = json.loads(out)
    assert found["defined"] == [0, 1, 0]
    assert found["inactive"] == ["vt-p"]
    assert found["by_uuid"] == "vt-p"
    assert found["active"] == ["vt-o", "vt-p"]
    assert found["state"] == [1, 1, True]
    assert sorted(found["addresses"]) == ["eth0", "eth1"]
    hwaddr, addrs = found["addresses"]["eth1"]
    assert addrs[0]["addr"].startswith("10.251.68.") and addrs[0]["prefix"] == 24
    assert found["leases"] == [[hwaddr, addrs[0]["addr"], 24, "web"]]
    assert found["events"] == [
        ["vt-p", 0, 0],
        ["vt-p", 2, 0],
        ["web", "added", "net1"],
        ["web", "removed", "net1"],
        ["vt-p", 3, 0],
        ["vt-p", 1, 0],
    ]
    await netted.ok("domain.destroy", "web")
    await netted.ok("network.destroy", "vt-o")
    assert await host_networks(engine, netted.name) == {}
    await gateway.wait_callbacks(lambda n: n == 0, 60)
