"""Networks and interfaces over a fake engine: network XML, the policy's network rules,
and the network and device ops with their events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar, get_args

import pytest

from agent.errors import VirtError
from agent.host.operations import Operations
from agent.host.policy import Denied, Policy
from agent.host.store import Store
from schemas.codes import ErrorCode
from schemas.commands import (
    AttachDevice,
    CommandBase,
    Create,
    CreateXml,
    Define,
    DetachDevice,
    InterfaceAddresses,
    ListNetworks,
    NetworkCreate,
    NetworkDefine,
    NetworkDestroy,
    NetworkUndefine,
)
from schemas.domain import DomainSpec, derived_mac
from schemas.events import EVENT_ADAPTER, DeviceEvent, NetworkEvent
from schemas.network import NetworkSpec
from schemas.netxml import network_fields, network_xml
from schemas.xmldoc import XmlError
from tests.fakes import FakeHost, fake_host

C = TypeVar("C", bound=CommandBase)
_ids = iter(range(1, 1_000_000))
POLICY = Policy(
    networks=["none", "lan*"],
    network_define=["lan*"],
    network_subnets=["10.9.0.0/16"],
)
SPEC = {"name": "web", "image": "virtbus-test:latest", "command": ["sleep", "60"]}
XML = """<network>
  <name>lan</name>
  <uuid>3e3fce45-4f53-4fa7-bb32-11f34168b82b</uuid>
  <bridge name='vbr-lan'/>
  <ip address='10.9.1.1' prefix='24'>
    <dhcp>
      <range start='10.9.1.128' end='10.9.1.255'/>
    </dhcp>
  </ip>
</network>
"""


def command(model: type[C], target: str | None = None, **args: Any) -> C:
    (op,) = get_args(model.model_fields["op"].annotation)
    document: dict[str, Any] = {"op": op, "id": f"cmd-{next(_ids)}", "args": args}
    if target is not None:
        document["target"] = {"name": target}
    return model.model_validate(document)


class Rig:
    def __init__(self, host: FakeHost, operations: Operations) -> None:
        self.host = host
        self.operations = operations

    async def run(self, cmd: CommandBase) -> Any:
        return await asyncio.wait_for(self.operations.run(cmd), 5)  # type: ignore[arg-type]

    def events(self) -> list[Any]:
        return [EVENT_ADAPTER.validate_json(p.body) for p in self.host.store.pending(1000)]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with Store(tmp_path / "h1") as store:
        async with fake_host(store, tmp_path) as host:
            yield Rig(host, host.operations(policy=POLICY))


# -- network XML ----------------------------------------------------------------------------


def test_network_xml_reads_and_writes_as_libvirt() -> None:
    spec = NetworkSpec.model_validate(network_fields(XML))
    assert (spec.internal, spec.bridge, str(spec.ipv4.subnet if spec.ipv4 else None)) == (
        True,
        "vbr-lan",
        "10.9.1.0/24",
    )
    assert spec.ipv4 is not None and str(spec.ipv4.dhcp_range) == "10.9.1.128/25"
    assert network_xml(spec) == XML
    assert NetworkSpec.model_validate(network_fields(network_xml(spec))) == spec


@pytest.mark.parametrize(
    ("xml", "code", "detail"),
    [
        (
            "<network><name>n</name><forward mode='bridge'/><dns/></network>",
            ErrorCode.CONFIG_UNSUPPORTED,
            "not supported by virtbus: <forward mode='bridge'>, <dns>",
        ),
        (
            "<network><name>n</name><ip address='10.0.0.1' prefix='24'><dhcp>"
            "<range start='10.0.0.2' end='10.0.0.254'/></dhcp></ip></network>",
            ErrorCode.CONFIG_UNSUPPORTED,
            "not supported by virtbus: <ip><dhcp><range start='10.0.0.2' end='10.0.0.254'> "
            "(not one CIDR block, as Docker's IP range must be)",
        ),
        ("<domain/>", ErrorCode.XML_ERROR, "the root element is <domain>, not <network>"),
        ("<network><uuid>nope</uuid></network>", ErrorCode.XML_ERROR, "malformed <uuid>"),
    ],
)
def test_network_xml_refusals_say_what(xml: str, code: ErrorCode, detail: str) -> None:
    with pytest.raises(XmlError) as refused:
        network_fields(xml)
    assert (refused.value.code, refused.value.detail) == (code, detail)


# -- the policy -----------------------------------------------------------------------------


def test_the_policy_names_networks_by_pattern_and_never_host() -> None:
    POLICY.check_network("lan-2")
    for refused in ("host", "bridge"):
        with pytest.raises(Denied):
            POLICY.check_network(refused)
    with pytest.raises(Denied):
        Policy(networks=["*"]).check_network("host")


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"name": "wan", "ipv4": {"subnet": "10.9.2.0/24"}}, "defining network 'wan'"),
        ({"name": "lan", "ipv4": {"subnet": "10.8.0.0/24"}}, "subnet 10.8.0.0/24"),
        ({"name": "lan"}, "must name a subnet within 10.9.0.0/16"),
        ({"name": "lan", "internal": False, "ipv4": {"subnet": "10.9.2.0/24"}}, "internal"),
    ],
)
def test_the_policy_says_which_networks_may_be_defined(fields: dict[str, Any], why: str) -> None:
    with pytest.raises(Denied) as refused:
        POLICY.check_network_definition(NetworkSpec.model_validate(fields))
    assert refused.value.code is ErrorCode.OPERATION_DENIED and why in refused.value.detail


# -- the ops --------------------------------------------------------------------------------


async def test_a_network_is_defined_then_started_with_libvirts_events(rig: Rig) -> None:
    define = command(NetworkDefine, xml=XML)
    record = await rig.run(define)
    assert (record.active, record.persistent, record.autostart) == (False, True, False)
    assert rig.host.driver.networks == {}
    listed = await rig.run(command(ListNetworks, flags=["inactive"]))
    assert [n.name for n in listed.networks] == ["lan"]
    started = await rig.run(command(NetworkCreate, "lan"))
    assert (started.active, started.bridge) == (True, "vbr-lan")
    assert list(rig.host.driver.networks) == ["lan"]
    with pytest.raises(VirtError) as again:
        await rig.run(command(NetworkCreate, "lan"))
    assert again.value.code is ErrorCode.OPERATION_INVALID
    undefined = await rig.run(command(NetworkUndefine, "lan"))
    assert (undefined.active, undefined.persistent) == (True, False)
    await rig.run(command(NetworkDestroy, "lan"))
    assert rig.host.driver.networks == {}
    with pytest.raises(VirtError) as gone:
        await rig.run(command(NetworkDestroy, "lan"))
    assert gone.value.code is ErrorCode.NO_NETWORK
    events = [e for e in rig.events() if isinstance(e, NetworkEvent)]
    assert [(e.event, e.event_code, e.routing_key) for e in events] == [
        ("defined", 0, "h1.network.defined.none"),
        ("started", 2, "h1.network.started.none"),
        ("undefined", 1, "h1.network.undefined.none"),
        ("stopped", 3, "h1.network.stopped.none"),
    ]
    assert events[0].cause == define.id


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"name": "lan", "uuid": "6f1c2d3e-0000-4000-8000-000000000003"},
            "network 'lan' already exists with uuid {uuid}",
        ),
        ({"name": "lan2", "uuid": "{uuid}"}, "network 'lan' is already defined with uuid {uuid}"),
    ],
)
async def test_a_name_or_uuid_another_network_holds_is_refused_as_libvirt_refuses_it(
    rig: Rig, spec: dict[str, str], message: str
) -> None:
    subnet = {"ipv4": {"subnet": "10.9.1.0/24"}}
    first = await rig.run(command(NetworkDefine, spec={"name": "lan", **subnet}))
    clash = {key: value.format(uuid=first.uuid) for key, value in spec.items()} | subnet
    with pytest.raises(VirtError) as refused:
        await rig.run(command(NetworkDefine, spec=clash))
    assert refused.value.code is ErrorCode.OPERATION_FAILED
    assert refused.value.detail == message.format(uuid=first.uuid)
    listed = await rig.run(command(ListNetworks, flags=["inactive"]))
    assert [n.name for n in listed.networks] == ["lan"]


async def test_a_refused_network_never_reaches_docker(rig: Rig) -> None:
    with pytest.raises(Denied):
        await rig.run(command(NetworkDefine, spec={"name": "wan"}))
    with pytest.raises(Denied):
        await rig.run(command(CreateXml, spec={**SPEC, "network": "wan"}))
    assert rig.host.driver.networks == {} and rig.host.driver.containers == {}
    assert rig.events() == []


async def started(rig: Rig, *networks: str) -> None:
    for index, name in enumerate(networks, 1):
        subnet = {"subnet": f"10.9.{index}.0/24"}
        await rig.run(command(NetworkDefine, spec={"name": name, "ipv4": subnet}))
        await rig.run(command(NetworkCreate, name))


async def test_a_live_attach_joins_the_network_and_says_so_once(rig: Rig) -> None:
    await started(rig, "lan", "lan2")
    record = await rig.run(command(Define, spec={**SPEC, "network": "lan"}))
    await rig.run(command(Create, "web"))
    attach = command(AttachDevice, "web", interface={"network": "lan2"}, live=True)
    change = await rig.run(attach)
    assert (change.alias, change.live, change.config) == ("net1", True, False)
    (handle,) = rig.host.driver.containers
    mac = derived_mac(record.uuid, "lan2")
    assert rig.host.driver.joined[handle] == {"lan2": mac}
    domain = rig.host.domains.by_name("web")
    assert domain is not None
    assert [nic.network for nic in domain.spec.nics()] == ["lan", "lan2"]
    assert domain.pending is not None and domain.pending.interfaces == []
    devices = [e for e in rig.events() if isinstance(e, DeviceEvent)]
    assert [(e.event, e.event_id, e.alias, e.cause) for e in devices] == [
        ("added", 19, "net1", attach.id)
    ]
    addresses = await rig.run(command(InterfaceAddresses, "web"))
    assert [(i.name, i.hwaddr) for i in addresses.interfaces] == [
        ("eth0", derived_mac(record.uuid, "lan")),
        ("eth1", mac),
    ]
    await rig.run(command(DetachDevice, "web", interface={"network": "lan2"}, live=True))
    assert rig.host.driver.joined[handle] == {}
    devices = [e for e in rig.events() if isinstance(e, DeviceEvent)]
    assert [(e.event, e.event_id, e.alias) for e in devices][1:] == [("removed", 15, "net1")]


async def test_what_cannot_be_plugged_live_goes_to_the_definition(rig: Rig) -> None:
    await started(rig, "lan")
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    with pytest.raises(VirtError) as on_none:
        await rig.run(command(AttachDevice, "web", interface={"network": "lan"}, live=True))
    assert on_none.value.code is ErrorCode.OPERATION_UNSUPPORTED
    change = await rig.run(command(AttachDevice, "web", interface={"network": "lan"}, config=True))
    assert (change.live, change.config) == (False, True)
    domain = rig.host.domains.by_name("web")
    assert domain is not None and domain.spec.network == "none"
    assert isinstance(domain.pending, DomainSpec) and domain.pending.network == "lan"
    mount = {"source": "/srv", "target": "/srv", "readonly": True}
    with pytest.raises(VirtError) as live_mount:
        await rig.run(command(AttachDevice, "web", filesystem=mount, live=True))
    assert live_mount.value.code is ErrorCode.OPERATION_UNSUPPORTED
    assert not [e for e in rig.events() if isinstance(e, DeviceEvent)]
    assert "connect" not in rig.host.driver.calls


async def test_a_config_attach_to_a_shut_off_domain_reaches_its_container_at_start(
    rig: Rig,
) -> None:
    await started(rig, "lan")
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(AttachDevice, "web", interface={"network": "lan"}, config=True))
    domain = rig.host.domains.by_name("web")
    assert domain is not None and domain.definition.network == "lan"
    await rig.run(command(Create, "web"))
    assert domain.handle is not None
    assert rig.host.driver.containers[domain.handle].spec.network == "lan"
