"""libvirt's virtual networks and network interfaces, over Docker networks.

A network is defined into the agent's store (libvirt's persistent definition) and becomes
a Docker network of this host when it is started; destroying it removes the Docker
network, and undefining it forgets the definition (an active network undefined stays
until it is destroyed, as a transient one). Every change and its network event
(``<host>.network.<event>.none``) are committed together, like a domain's.

Interfaces are plugged into a running domain with Docker's network connect and
disconnect (libvirt's DEVICE_ADDED and DEVICE_REMOVED follow), and into its definition
for its next start. The host policy is asked before Docker is: every refusal is
OPERATION_DENIED with nothing done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID, uuid4
from weakref import WeakKeyDictionary

from agent.errors import VirtError, invalid
from agent.host.domains import DomainObj, affected
from agent.host.operations import Operations, handles
from agent.host.store import StoredNetwork, Transaction
from schemas.codes import ErrorCode, NetworkLifecycle
from schemas.commands import (
    AttachDevice,
    DetachDevice,
    InterfaceAddresses,
    ListNetworks,
    NetworkCreate,
    NetworkDefine,
    NetworkDestroy,
    NetworkGetDhcpLeases,
    NetworkGetXmlDesc,
    NetworkLookup,
    NetworkSetAutostart,
    NetworkTarget,
    NetworkUndefine,
)
from schemas.domain import DomainSpec, Interface, Mount, derived_mac
from schemas.events import NetworkEvent, NetworkRef
from schemas.network import NetworkRecord
from schemas.netxml import network_xml
from schemas.replies import (
    DeviceChange,
    DhcpLease,
    DhcpLeases,
    DomainInterface,
    IpAddress,
    NetworkList,
    NetworkXml,
)
from schemas.replies import DomainInterfaces as Addresses
from schemas.xmldoc import XmlError

log = logging.getLogger(__name__)

IPV4, IPV6 = 0, 1
"""``virIPAddrType``."""


class Networks:
    """This host's virtual networks: libvirt's virNetworkObjList. One change at a time."""

    def __init__(self, ops: Operations, stored: list[StoredNetwork]) -> None:
        self._ops = ops
        self._by_uuid = {network.uuid: network for network in stored}
        self.lock = asyncio.Lock()

    def all(self) -> list[StoredNetwork]:
        return sorted(self._by_uuid.values(), key=lambda network: network.spec.name)

    def by_uuid(self, uuid: UUID) -> StoredNetwork | None:
        return self._by_uuid.get(uuid)

    def by_name(self, name: str) -> StoredNetwork | None:
        return next((n for n in self._by_uuid.values() if n.spec.name == name), None)

    def get(self, target: NetworkTarget) -> StoredNetwork:
        """The targeted network, or NO_NETWORK."""
        found = self._by_uuid.get(target.uuid) if target.uuid else self.by_name(str(target.name))
        if found is None:
            what = f"'{target.name}'" if target.name else f"with matching uuid '{target.uuid}'"
            raise VirtError(ErrorCode.NO_NETWORK, f"no network {what}")
        return found

    def record(self, network: StoredNetwork) -> NetworkRecord:
        return NetworkRecord(
            name=network.spec.name,
            uuid=network.uuid,
            active=network.active,
            persistent=network.persistent,
            autostart=network.autostart,
            bridge=network.bridge if network.active else None,
        )

    def commit(
        self, network: StoredNetwork, event: NetworkLifecycle | None, cause: str, keep: bool = True
    ) -> NetworkRecord:
        """Save (or, ``keep`` false, forget) the network and queue its event, together."""
        with self._ops.monitor.transaction() as tx:
            if keep:
                tx.save_network(network)
                self._by_uuid[network.uuid] = network
            else:
                tx.forget_network(network.uuid)
                self._by_uuid.pop(network.uuid, None)
            if event is not None:
                self._enqueue(tx, network, event, cause)
        return self.record(network)

    def _enqueue(
        self, tx: Transaction, network: StoredNetwork, event: NetworkLifecycle, cause: str
    ) -> None:
        ref = NetworkRef(name=network.spec.name, uuid=network.uuid)
        tx.enqueue(
            lambda seq: NetworkEvent(
                seq=seq,
                host=self._ops.host,
                time=datetime.now(UTC),
                network=ref,
                event=event.event,
                event_code=event.event_code,
                cause=cause,
            )
        )

    async def start(self, network: StoredNetwork, cause: str) -> NetworkRecord:
        """Create the Docker network (adopting one an earlier agent created and did not
        record); the policy is asked again, as the definition may be older than it."""
        self._ops.policy.check_network_definition(network.spec)
        driver = self._ops.driver
        facts = await driver.network_facts(network.spec.name)
        if facts is None:
            facts = await driver.create_network(network.uuid, network.spec)
        network.active, network.bridge = True, facts.bridge
        return self.commit(network, NetworkLifecycle.STARTED, cause)

    async def restore(self) -> None:
        """At the agent's start: learn the bridges of active networks, create again those
        Docker lost, and start those marked autostart, as libvirtd does."""
        for network in self.all():
            facts = await self._ops.driver.network_facts(network.spec.name)
            if facts is not None:
                network.bridge = facts.bridge
                continue
            if network.active or network.autostart:
                network.active = False
                try:
                    await self.start(network, f"autostart-{network.uuid}")
                except VirtError as error:
                    log.warning("network %s not started: %s", network.spec.name, error.message)


_TABLES: WeakKeyDictionary[Operations, Networks] = WeakKeyDictionary()


def attach_networks(ops: Operations, stored: list[StoredNetwork]) -> Networks:
    """Give ``ops`` its networks, as the store holds them."""
    _TABLES[ops] = Networks(ops, stored)
    return _TABLES[ops]


def networks_of(ops: Operations) -> Networks:
    if ops not in _TABLES:
        _TABLES[ops] = Networks(ops, [])
    return _TABLES[ops]


# ---------------------------------------------------------------- networks --


@handles(NetworkDefine)
async def define(ops: Operations, command: NetworkDefine) -> NetworkRecord:
    """A new definition, or a new one for an existing network (the running Docker
    network keeps the old until the network is started again)."""
    spec = command.args.spec
    ops.policy.check_network_definition(spec)
    networks = networks_of(ops)
    async with networks.lock:
        existing = networks.by_name(spec.name)
        clash = networks.by_uuid(spec.uuid) if spec.uuid else None
        if clash is not None and clash.spec.name != spec.name:
            raise VirtError(
                ErrorCode.OPERATION_FAILED,
                f"network '{clash.spec.name}' is already defined with uuid {spec.uuid}",
            )
        if existing is not None:
            if spec.uuid is not None and spec.uuid != existing.uuid:
                raise VirtError(
                    ErrorCode.OPERATION_FAILED,
                    f"network '{spec.name}' already exists with uuid {existing.uuid}",
                )
            existing.spec = spec.model_copy(update={"uuid": existing.uuid})
            existing.persistent = True
            return networks.commit(existing, NetworkLifecycle.DEFINED, command.id)
        uuid = spec.uuid or uuid4()
        network = StoredNetwork(uuid=uuid, spec=spec.model_copy(update={"uuid": uuid}))
        return networks.commit(network, NetworkLifecycle.DEFINED, command.id)


@handles(NetworkCreate)
async def create(ops: Operations, command: NetworkCreate) -> NetworkRecord:
    networks = networks_of(ops)
    async with networks.lock:
        network = networks.get(command.target)
        if network.active:
            raise invalid("network is already active")
        return await networks.start(network, command.id)


@handles(NetworkDestroy)
async def destroy(ops: Operations, command: NetworkDestroy) -> NetworkRecord:
    """Docker refuses while a running domain is joined: OPERATION_FAILED, with its words."""
    networks = networks_of(ops)
    async with networks.lock:
        network = networks.get(command.target)
        if not network.active:
            raise invalid("network is not active")
        await ops.driver.remove_network(network.spec.name)
        network.active, network.bridge = False, None
        return networks.commit(
            network, NetworkLifecycle.STOPPED, command.id, keep=network.persistent
        )


@handles(NetworkUndefine)
async def undefine(ops: Operations, command: NetworkUndefine) -> NetworkRecord:
    networks = networks_of(ops)
    async with networks.lock:
        network = networks.get(command.target)
        if not network.persistent:
            raise invalid("cannot undefine transient network")
        network.persistent, network.autostart = False, False
        return networks.commit(network, NetworkLifecycle.UNDEFINED, command.id, keep=network.active)


@handles(NetworkSetAutostart)
async def set_autostart(ops: Operations, command: NetworkSetAutostart) -> NetworkRecord:
    networks = networks_of(ops)
    async with networks.lock:
        network = networks.get(command.target)
        if not network.persistent:
            raise invalid("cannot set autostart for transient network")
        network.autostart = command.args.autostart
        return networks.commit(network, None, command.id)


@handles(NetworkLookup)
def lookup(ops: Operations, command: NetworkLookup) -> NetworkRecord:
    networks = networks_of(ops)
    return networks.record(networks.get(command.target))


@handles(NetworkGetXmlDesc)
def xml_desc(ops: Operations, command: NetworkGetXmlDesc) -> NetworkXml:
    networks = networks_of(ops)
    network = networks.get(command.target)
    try:
        return NetworkXml(network_xml=network_xml(network.spec, networks.record(network)))
    except XmlError as error:
        raise VirtError(error.code, error.detail) from None


@handles(ListNetworks)
def list_networks(ops: Operations, command: ListNetworks) -> NetworkList:
    """virConnectListAllNetworks: within a group any flag may match, across groups all."""
    flags = set(command.args.flags)
    networks = networks_of(ops)
    groups: tuple[dict[str, Callable[[StoredNetwork], bool]], ...] = (
        {"active": lambda n: n.active, "inactive": lambda n: not n.active},
        {"persistent": lambda n: n.persistent, "transient": lambda n: not n.persistent},
        {"autostart": lambda n: n.autostart, "no_autostart": lambda n: not n.autostart},
    )
    found = [
        networks.record(network)
        for network in networks.all()
        if all(
            not flags & group.keys() or any(group[f](network) for f in flags & group.keys())
            for group in groups
        )
    ]
    return NetworkList(networks=found)


@handles(NetworkGetDhcpLeases)
async def dhcp_leases(ops: Operations, command: NetworkGetDhcpLeases) -> DhcpLeases:
    """The addresses Docker's IPAM gave the running domains on the network, as leases
    that last while the domain stays joined (expiry 0)."""
    networks = networks_of(ops)
    network = networks.get(command.target)
    if not network.active:
        raise invalid(f"network '{network.spec.name}' is not active")
    wanted = command.args.mac.lower() if command.args.mac else None
    leases = []
    for domain in ops.domains:
        if not domain.active or domain.handle is None:
            continue
        if network.spec.name not in (nic.network for nic in domain.spec.nics()):
            continue
        for endpoint in await ops.driver.endpoints(domain.handle):
            if endpoint.network != network.spec.name or (wanted and endpoint.mac != wanted):
                continue
            for kind, address, prefix in (
                (IPV4, endpoint.ipv4, endpoint.ipv4_prefix),
                (IPV6, endpoint.ipv6, endpoint.ipv6_prefix),
            ):
                if address:
                    leases.append(
                        DhcpLease(
                            iface=network.bridge or "",
                            expiry_time=0,
                            type=kind,
                            mac=endpoint.mac,
                            ipaddr=address,
                            prefix=prefix,
                            hostname=domain.name,
                        )
                    )
    return DhcpLeases(leases=leases)


# -------------------------------------------------------------- interfaces --


@handles(InterfaceAddresses)
async def interface_addresses(ops: Operations, command: InterfaceAddresses) -> Addresses:
    """The running domain's interfaces in definition order (``eth0`` first), with the
    MAC and the addresses Docker reports; the same for every source."""
    domain = ops.domains.get(command.target)
    if not domain.active or domain.handle is None:
        raise invalid("domain is not running")
    endpoints = {e.network: e for e in await ops.driver.endpoints(domain.handle)}
    interfaces = []
    for index, nic in enumerate(domain.spec.nics()):
        endpoint = endpoints.get(nic.network)
        if endpoint is None:
            continue
        addrs = [
            IpAddress(type=kind, addr=address, prefix=prefix)
            for kind, address, prefix in (
                (IPV4, endpoint.ipv4, endpoint.ipv4_prefix),
                (IPV6, endpoint.ipv6, endpoint.ipv6_prefix),
            )
            if address
        ]
        interfaces.append(
            DomainInterface(name=f"eth{index}", hwaddr=endpoint.mac or nic.mac, addrs=addrs)
        )
    return Addresses(interfaces=interfaces)


def _with_nics(spec: DomainSpec, nics: list[Interface]) -> DomainSpec:
    """``spec`` with exactly these interfaces, the first on ``network``."""
    if not nics:
        return spec.model_copy(update={"network": "none", "mac": None, "interfaces": []})
    first, *rest = nics
    return DomainSpec.model_validate(
        {
            **spec.model_dump(mode="json"),
            "network": first.network,
            "mac": first.mac,
            "interfaces": [nic.model_dump(mode="json") for nic in rest],
        }
    )


def _configure(domain: DomainObj, change: DomainSpec) -> None:
    """Make ``change`` the definition of the domain's next start (what an inactive domain
    shows now): ``spec`` stays what its container was built from."""
    domain.pending = change


def _check_nic(ops: Operations, nic: Interface, live: bool) -> None:
    """The policy first; a virtbus network must be active to be joined live (any other
    name is a Docker network, which Docker itself must find)."""
    ops.policy.check_network(nic.network)
    network = networks_of(ops).by_name(nic.network)
    if network is None:
        return
    if live and not network.active:
        raise invalid(f"network '{nic.network}' is not active")


@handles(AttachDevice)
async def attach_device(ops: Operations, command: AttachDevice) -> DeviceChange:
    domain = ops.domains.get(command.target)
    args = command.args
    live, config = affected(domain, args.live, args.config)
    if args.filesystem is not None:
        return _attach_filesystem(ops, domain, args.filesystem, live)
    assert args.interface is not None
    nic = args.interface
    _check_nic(ops, nic, live)
    base = domain.next_definition
    for spec in [domain.spec] * live + [base] * config:
        if any(have.network == nic.network for have in spec.nics()):
            raise invalid(f"domain '{domain.name}' already has an interface on '{nic.network}'")
    if live and domain.spec.network == "none":
        raise VirtError(
            ErrorCode.OPERATION_UNSUPPORTED,
            f"domain '{domain.name}' is on network 'none': an interface can be attached to "
            "its persistent definition only (--config), for its next start",
        )
    if nic.mac is None:
        nic = Interface(network=nic.network, mac=_mac_for(domain, nic.network))
    changed = _with_nics(base, [*base.nics(), nic])
    if config:
        ops.admit(changed, domain.uuid)
    alias = f"net{len(domain.spec.nics())}"
    if live:
        running = _with_nics(domain.spec, [*domain.spec.nics(), nic])
        ops.admit(running, domain.uuid)
        await ops.driver.connect(str(domain.handle), nic.network, nic.mac)
        nic = await _as_connected(ops, domain, nic)
        running = _with_nics(domain.spec, [*domain.spec.nics(), nic])
        if config:
            changed = _with_nics(base, [*base.nics(), nic])
        domain.pending = changed if config else domain.next_definition
        domain.spec = running
        ops.monitor.device_changed(domain, "added", alias, command.id)
    else:
        _configure(domain, changed)
        ops.monitor.save(domain)
    return DeviceChange(domain=domain.record(), alias=alias, live=live, config=config)


async def _as_connected(ops: Operations, domain: DomainObj, nic: Interface) -> Interface:
    """The interface with the MAC address Docker gave it: an engine before API 1.44
    chooses its own for a network joined after the container was created."""
    for endpoint in await ops.driver.endpoints(str(domain.handle)):
        if endpoint.network == nic.network and endpoint.mac and endpoint.mac != nic.mac:
            return Interface(network=nic.network, mac=endpoint.mac)
    return nic


def _mac_for(domain: DomainObj, network: str) -> str:
    return derived_mac(domain.uuid, network)


@handles(DetachDevice)
async def detach_device(ops: Operations, command: DetachDevice) -> DeviceChange:
    domain = ops.domains.get(command.target)
    args = command.args
    live, config = affected(domain, args.live, args.config)
    if args.filesystem is not None:
        return _detach_filesystem(ops, domain, args.filesystem, live)
    assert args.interface is not None
    wanted = args.interface

    def without(spec: DomainSpec) -> tuple[int, list[Interface]]:
        nics = spec.nics()
        for index, nic in enumerate(nics):
            if nic.network == wanted.network and wanted.mac in (None, nic.mac):
                return index, nics[:index] + nics[index + 1 :]
        raise VirtError(
            ErrorCode.OPERATION_FAILED,
            f"no interface on network '{wanted.network}' found in domain '{domain.name}'",
        )

    base = domain.next_definition
    index, changed = 0, base
    if config:
        index, rest = without(base)
        changed = _with_nics(base, rest)
    if live:
        index, remaining = without(domain.spec)
        await ops.driver.disconnect(str(domain.handle), wanted.network)
        domain.pending = changed if config else domain.next_definition
        domain.spec = _with_nics(domain.spec, remaining)
        ops.monitor.device_changed(domain, "removed", f"net{index}", command.id)
    else:
        _configure(domain, changed)
        ops.monitor.save(domain)
    return DeviceChange(domain=domain.record(), alias=f"net{index}", live=live, config=config)


def _attach_filesystem(
    ops: Operations, domain: DomainObj, mount: Mount, live: bool
) -> DeviceChange:
    """A container's mounts are fixed when it is created: the mount joins the persistent
    definition, for the next start, and the reply says so (``live`` false)."""
    if live:
        raise VirtError(
            ErrorCode.OPERATION_UNSUPPORTED,
            "live attach of device 'filesystem' is not supported: attach it to the "
            "persistent definition (--config); it is mounted at the next start",
        )
    base = domain.next_definition
    if any(have.target == mount.target for have in base.mounts):
        raise invalid(f"target '{mount.target}' already mounted")
    changed = base.model_copy(update={"mounts": [*base.mounts, mount]})
    ops.admit(changed, domain.uuid)
    _configure(domain, changed)
    ops.monitor.save(domain)
    alias = f"fs{len(changed.mounts) - 1}"
    return DeviceChange(domain=domain.record(), alias=alias, live=False, config=True)


def _detach_filesystem(
    ops: Operations, domain: DomainObj, mount: Mount, live: bool
) -> DeviceChange:
    if live:
        raise VirtError(
            ErrorCode.OPERATION_UNSUPPORTED,
            "live detach of device 'filesystem' is not supported: detach it from the "
            "persistent definition (--config); it is unmounted at the next start",
        )
    base = domain.next_definition
    kept = [have for have in base.mounts if have.target != mount.target]
    if len(kept) == len(base.mounts):
        raise VirtError(
            ErrorCode.OPERATION_FAILED, f"no filesystem at target '{mount.target}' to detach"
        )
    _configure(domain, base.model_copy(update={"mounts": kept}))
    ops.monitor.save(domain)
    index = next(i for i, have in enumerate(base.mounts) if have.target == mount.target)
    return DeviceChange(domain=domain.record(), alias=f"fs{index}", live=False, config=True)
