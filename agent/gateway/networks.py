"""libvirt's network procedures, and a domain's interfaces, as calls on the bus.

Networks (``remote_nonnull_network``: name and UUID) are looked up by UUID on the
agent for every call, so a network the client holds answers NO_NETWORK once it is gone.
Network lifecycle events reach a callback registered with
CONNECT_NETWORK_EVENT_REGISTER_ANY as NETWORK_EVENT_LIFECYCLE messages.
"""

from __future__ import annotations

import uuid
from typing import Any

from agent.client import VirtbusError
from agent.gateway.procedures import (
    AFFECT_ALL,
    REPLIED,
    Session,
    affect,
    check_flags,
    expect,
    flags_of,
    handles,
    ints,
    on_domain,
    read_domain,
    session_procedure,
    string,
)
from agent.gateway.protocol import (
    LIST_MAX,
    REMOTE_PROGRAM,
    STRING_MAX,
    UUID_BYTES,
    Proc,
    WireNetwork,
    message,
)
from agent.gateway.xdr import Packer, Unpacker
from schemas.codes import ErrorCode
from schemas.commands import (
    AttachDevice,
    CommandBase,
    DetachDevice,
    InterfaceAddresses,
    ListNetworks,
    NetworkCreate,
    NetworkDefine,
    NetworkDestroy,
    NetworkGetDhcpLeases,
    NetworkGetXmlDesc,
    NetworkListFlag,
    NetworkLookup,
    NetworkSetAutostart,
    NetworkUndefine,
)
from schemas.events import Event, NetworkEvent
from schemas.network import NetworkRecord
from schemas.replies import DeviceChange, DhcpLeases, NetworkList, NetworkXml
from schemas.replies import DomainInterfaces as Addresses

# virConnectListAllNetworksFlags
NETWORK_LIST_FLAGS: dict[int, NetworkListFlag] = {
    1: "inactive",
    2: "active",
    4: "persistent",
    8: "transient",
    16: "autostart",
    32: "no_autostart",
}
NETWORK_XML_INACTIVE = 1
ADDRESS_SOURCES = {0: "lease", 1: "agent", 2: "arp"}
NETWORK_EVENT_LIFECYCLE = 0


def read_network(args: Unpacker) -> WireNetwork:
    return WireNetwork.unpack(args)


def pack_network(record: NetworkRecord) -> bytes:
    packer = Packer()
    WireNetwork(record.name, record.uuid).pack(packer)
    return packer.data()


async def on_network(
    session: Session,
    network: WireNetwork,
    op: type[CommandBase],
    args: dict[str, Any] | None = None,
) -> Any:
    return await session.conn.call(session.target, op, args, {"uuid": str(network.uuid)})


async def network_record(session: Session, network: WireNetwork) -> NetworkRecord:
    return expect(await on_network(session, network, NetworkLookup), NetworkRecord)


async def network_records(session: Session, flags: int) -> list[NetworkRecord]:
    asked = [name for bit, name in NETWORK_LIST_FLAGS.items() if flags & bit]
    listed = await session.conn.call(session.target, ListNetworks, {"flags": asked})
    return expect(listed, NetworkList).networks


# ------------------------------------------------------------------ listing --


@handles(Proc.CONNECT_LIST_ALL_NETWORKS)
async def list_all_networks(session: Session, args: Unpacker) -> bytes:
    need_results = args.int32()
    flags = args.uint32()
    check_flags(flags, sum(NETWORK_LIST_FLAGS), "virConnectListAllNetworks")
    found = await network_records(session, flags)
    packer = Packer()
    wire = [WireNetwork(r.name, r.uuid) for r in found] if need_results else []
    packer.array(wire, lambda n: n.pack(packer))
    packer.uint32(len(found))
    return packer.data()


@handles(Proc.CONNECT_NUM_OF_NETWORKS)
async def num_of_networks(session: Session, args: Unpacker) -> bytes:
    return ints(len(await network_records(session, 2)))


@handles(Proc.CONNECT_NUM_OF_DEFINED_NETWORKS)
async def num_of_defined_networks(session: Session, args: Unpacker) -> bytes:
    return ints(len(await network_records(session, 1)))


@handles(Proc.CONNECT_LIST_NETWORKS, Proc.CONNECT_LIST_DEFINED_NETWORKS)
async def list_network_names(session: Session, args: Unpacker) -> bytes:
    most = args.int32()
    if not 0 <= most <= LIST_MAX:
        raise VirtbusError.of(ErrorCode.RPC, f"too many network names requested: {most}")
    active = session_procedure() == Proc.CONNECT_LIST_NETWORKS
    found = await network_records(session, 2 if active else 1)
    packer = Packer()
    packer.array([r.name for r in found][:most], packer.string)
    return packer.data()


# ------------------------------------------------------------------ lookups --


@handles(Proc.NETWORK_LOOKUP_BY_NAME)
async def lookup_by_name(session: Session, args: Unpacker) -> bytes:
    name = args.string(STRING_MAX)
    record = await session.conn.call(session.target, NetworkLookup, target={"name": name})
    return pack_network(expect(record, NetworkRecord))


@handles(Proc.NETWORK_LOOKUP_BY_UUID)
async def lookup_by_uuid(session: Session, args: Unpacker) -> bytes:
    target = {"uuid": str(uuid.UUID(bytes=args.fixed_opaque(UUID_BYTES)))}
    record = await session.conn.call(session.target, NetworkLookup, target=target)
    return pack_network(expect(record, NetworkRecord))


@handles(Proc.NETWORK_IS_ACTIVE)
async def is_active(session: Session, args: Unpacker) -> bytes:
    return ints((await network_record(session, read_network(args))).active)


@handles(Proc.NETWORK_IS_PERSISTENT)
async def is_persistent(session: Session, args: Unpacker) -> bytes:
    return ints((await network_record(session, read_network(args))).persistent)


@handles(Proc.NETWORK_GET_AUTOSTART)
async def get_autostart(session: Session, args: Unpacker) -> bytes:
    return ints((await network_record(session, read_network(args))).autostart)


@handles(Proc.NETWORK_GET_BRIDGE_NAME)
async def get_bridge_name(session: Session, args: Unpacker) -> bytes:
    record = await network_record(session, read_network(args))
    if record.bridge is None:
        raise VirtbusError.of(
            ErrorCode.INTERNAL_ERROR, f"network '{record.name}' does not have a bridge name."
        )
    return string(record.bridge)


@handles(Proc.NETWORK_GET_XML_DESC)
async def get_xml_desc(session: Session, args: Unpacker) -> bytes:
    network = read_network(args)
    check_flags(args.uint32(), NETWORK_XML_INACTIVE, "virNetworkGetXMLDesc")
    described = expect(await on_network(session, network, NetworkGetXmlDesc), NetworkXml)
    return string(described.network_xml)


# ---------------------------------------------------------------- lifecycle --


@handles(Proc.NETWORK_DEFINE_XML)
async def define_xml(session: Session, args: Unpacker) -> bytes:
    xml = args.string(STRING_MAX)
    record = await session.conn.call(session.target, NetworkDefine, {"xml": xml})
    return pack_network(expect(record, NetworkRecord))


async def change(session: Session, args: Unpacker, op: type[CommandBase], **more: Any) -> bytes:
    network = read_network(args)
    values = {key: read(args) for key, read in more.items()}
    expect(await on_network(session, network, op, values or None), NetworkRecord)
    return b""


@handles(Proc.NETWORK_CREATE)
async def create(session: Session, args: Unpacker) -> bytes:
    return await change(session, args, NetworkCreate)


@handles(Proc.NETWORK_DESTROY)
async def destroy(session: Session, args: Unpacker) -> bytes:
    return await change(session, args, NetworkDestroy)


@handles(Proc.NETWORK_UNDEFINE)
async def undefine(session: Session, args: Unpacker) -> bytes:
    return await change(session, args, NetworkUndefine)


@handles(Proc.NETWORK_SET_AUTOSTART)
async def set_autostart(session: Session, args: Unpacker) -> bytes:
    return await change(session, args, NetworkSetAutostart, autostart=lambda a: a.int32() != 0)


@handles(Proc.NETWORK_GET_DHCP_LEASES)
async def get_dhcp_leases(session: Session, args: Unpacker) -> bytes:
    network = read_network(args)
    mac = args.optional(lambda: args.string(STRING_MAX))
    need_results = args.int32()
    check_flags(args.uint32(), 0, "virNetworkGetDHCPLeases")
    found = await on_network(session, network, NetworkGetDhcpLeases, {"mac": mac} if mac else None)
    leases = expect(found, DhcpLeases).leases
    packer = Packer()

    def pack(lease: Any) -> None:
        packer.string(lease.iface)
        packer.int64(lease.expiry_time)
        packer.int32(lease.type)
        packer.optional(lease.mac, packer.string)
        packer.optional(None, packer.string)  # iaid
        packer.string(lease.ipaddr)
        packer.uint32(lease.prefix)
        packer.optional(lease.hostname, packer.string)
        packer.optional(lease.client_id, packer.string)

    packer.array(leases if need_results else [], pack)
    packer.uint32(len(leases))
    return packer.data()


# ---------------------------------------------------------------- interfaces --


@handles(Proc.DOMAIN_INTERFACE_ADDRESSES)
async def interface_addresses(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    source = args.uint32()
    check_flags(args.uint32(), 0, "virDomainInterfaceAddresses")
    if source not in ADDRESS_SOURCES:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"Unknown IP address data source {source}")
    found = await on_domain(
        session, domain, InterfaceAddresses, Addresses, {"source": ADDRESS_SOURCES[source]}
    )
    packer = Packer()

    def pack(interface: Any) -> None:
        packer.string(interface.name)
        packer.optional(interface.hwaddr, packer.string)
        packer.array(interface.addrs, pack_address)

    def pack_address(address: Any) -> None:
        packer.int32(address.type)
        packer.string(address.addr)
        packer.uint32(address.prefix)

    packer.array(found.interfaces, pack)
    return packer.data()


@handles(
    Proc.DOMAIN_ATTACH_DEVICE,
    Proc.DOMAIN_ATTACH_DEVICE_FLAGS,
    Proc.DOMAIN_DETACH_DEVICE,
    Proc.DOMAIN_DETACH_DEVICE_FLAGS,
)
async def device(session: Session, args: Unpacker) -> bytes:
    """A device XML to plug in or out: with no flags (or AFFECT_CURRENT), the running
    domain if it runs, else its definition, as libvirt."""
    procedure = session_procedure()
    attach = procedure in (Proc.DOMAIN_ATTACH_DEVICE, Proc.DOMAIN_ATTACH_DEVICE_FLAGS)
    domain = read_domain(args)
    xml = args.string(STRING_MAX)
    flagged = Proc.DOMAIN_ATTACH_DEVICE_FLAGS if attach else Proc.DOMAIN_DETACH_DEVICE_FLAGS
    flags = flags_of(args, flagged)
    api = "virDomainAttachDeviceFlags" if attach else "virDomainDetachDeviceFlags"
    check_flags(flags, AFFECT_ALL, api)
    values = {"xml": xml, **affect(flags)}
    op = AttachDevice if attach else DetachDevice
    await on_domain(session, domain, op, DeviceChange, values)
    return b""


# ------------------------------------------------------------------- events --


def network_event_message(callback_id: int, event: NetworkEvent) -> bytes:
    packer = Packer()
    packer.int32(callback_id)
    WireNetwork(event.network.name, event.network.uuid).pack(packer)
    packer.int32(event.event_code)
    packer.int32(event.detail_code)
    return message(REMOTE_PROGRAM, Proc.NETWORK_EVENT_LIFECYCLE, packer.data())


@handles(Proc.CONNECT_NETWORK_EVENT_REGISTER_ANY)
async def network_register_any(session: Session, args: Unpacker) -> bytes:
    """Lifecycle callbacks, one network's (by UUID) or every network's. Other network
    event IDs (metadata change) are accepted and never fire, as libvirtd does for a
    driver that has none."""
    event_id = args.int32()
    network = args.optional(lambda: read_network(args))
    if len(session.callbacks) >= session.max_callbacks:
        raise VirtbusError.of(
            ErrorCode.RESOURCE_BUSY,
            f"this connection has {len(session.callbacks)} event callbacks, the most allowed",
        )
    callback_id = 0
    replied = REPLIED.get()

    async def deliver(event: Event) -> None:
        if replied is not None:
            await replied.wait()
        if not isinstance(event, NetworkEvent) or event_id != NETWORK_EVENT_LIFECYCLE:
            return
        if network is not None and event.network.uuid != network.uuid:
            return
        await session.send(network_event_message(callback_id, event))

    callback_id = await session.conn.network_event_register_any(session.target, deliver)
    session.callbacks.add(callback_id)
    session.changed()
    return ints(callback_id)


@handles(Proc.CONNECT_NETWORK_EVENT_DEREGISTER_ANY)
async def network_deregister_any(session: Session, args: Unpacker) -> bytes:
    callback_id = args.int32()
    if callback_id not in session.callbacks:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"callback {callback_id} is not registered")
    session.callbacks.discard(callback_id)
    await session.conn.domain_event_deregister_any(callback_id)
    session.changed()
    return b""
