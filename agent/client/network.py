"""The handle on one virtual network, as libvirt-python's ``virNetwork``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from schemas.commands import (
    NetworkCommand,
    NetworkCreate,
    NetworkDestroy,
    NetworkGetDhcpLeases,
    NetworkGetXmlDesc,
    NetworkLookup,
    NetworkSetAutostart,
    NetworkUndefine,
)
from schemas.network import NetworkRecord, NetworkSpec
from schemas.replies import DhcpLease, DhcpLeases, NetworkXml

if TYPE_CHECKING:
    from agent.client.connection import Connection


def network_args(spec: NetworkSpec | dict[str, Any] | str) -> dict[str, Any]:
    """A definition as ``network.define``'s args: a spec, its fields, or network XML."""
    if isinstance(spec, str):
        return {"xml": spec}
    if isinstance(spec, NetworkSpec):
        return {"spec": spec.model_dump(mode="json", exclude_none=True)}
    return {"spec": spec}


class Network:
    """A network on one host, as virNetworkPtr: its methods send commands by UUID.
    ``record`` is the network as the last reply described it."""

    def __init__(self, conn: Connection, host: str, record: NetworkRecord) -> None:
        self._conn = conn
        self.host = host
        self.record = record

    def __repr__(self) -> str:
        return f"Network(host={self.host!r}, name={self.name!r}, uuid='{self.uuid}')"

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def uuid(self) -> uuid.UUID:
        return self.record.uuid

    async def _record(
        self, op: type[NetworkCommand], args: dict[str, Any] | None = None
    ) -> NetworkRecord:
        target = {"uuid": str(self.uuid)}
        self.record = await self._conn._call(NetworkRecord, self.host, op, args, target)
        return self.record

    async def refresh(self) -> NetworkRecord:
        return await self._record(NetworkLookup)

    async def create(self) -> NetworkRecord:
        """virNetworkCreate: start it (its Docker network is created)."""
        return await self._record(NetworkCreate)

    async def destroy(self) -> NetworkRecord:
        """virNetworkDestroy: stop it (its Docker network is removed)."""
        return await self._record(NetworkDestroy)

    async def undefine(self) -> NetworkRecord:
        return await self._record(NetworkUndefine)

    async def set_autostart(self, autostart: bool) -> NetworkRecord:
        return await self._record(NetworkSetAutostart, {"autostart": autostart})

    async def xml_desc(self) -> str:
        target = {"uuid": str(self.uuid)}
        described = await self._conn._call(NetworkXml, self.host, NetworkGetXmlDesc, target=target)
        return described.network_xml

    async def dhcp_leases(self, mac: str | None = None) -> list[DhcpLease]:
        """virNetworkGetDHCPLeases: the addresses Docker gave the domains on it."""
        args = {"mac": mac} if mac else {}
        target = {"uuid": str(self.uuid)}
        leases = await self._conn._call(DhcpLeases, self.host, NetworkGetDhcpLeases, args, target)
        return leases.leases
