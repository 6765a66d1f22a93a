"""A virtual network's definition (libvirt's virNetwork) and the record that describes one.

A network is defined on a host (kept in its agent's store) and becomes a Docker network
of the same host when it is started. Its name cannot be one Docker keeps for itself
(``none``, ``host``, ``bridge``), so a domain's ``network`` always names one thing.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from schemas.base import Uuid, WireModel
from schemas.domain import NetworkName

RESERVED_NETWORKS = ("none", "host", "bridge", "default")
"""Docker's own networks, and libvirt's ``default`` (a NAT network to the outside)."""

BridgeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")]
"""A Linux interface name: at most 15 characters."""


class Ipv4(WireModel):
    """An IPv4 subnet: ``gateway`` is the host's address on it (libvirt's ``<ip
    address>``), ``dhcp_range`` the part of it domains take their addresses from."""

    subnet: Annotated[IPv4Network, Field(strict=False)]
    gateway: Annotated[IPv4Address, Field(strict=False)] | None = None
    dhcp_range: Annotated[IPv4Network, Field(strict=False)] | None = None

    @model_validator(mode="after")
    def _inside(self) -> Ipv4:
        _check_inside(self.subnet, self.gateway, self.dhcp_range)
        return self


class Ipv6(WireModel):
    """An IPv6 subnet, as ``Ipv4``."""

    subnet: Annotated[IPv6Network, Field(strict=False)]
    gateway: Annotated[IPv6Address, Field(strict=False)] | None = None
    dhcp_range: Annotated[IPv6Network, Field(strict=False)] | None = None

    @model_validator(mode="after")
    def _inside(self) -> Ipv6:
        _check_inside(self.subnet, self.gateway, self.dhcp_range)
        return self


def _check_inside(
    subnet: IPv4Network | IPv6Network,
    gateway: IPv4Address | IPv6Address | None,
    dhcp_range: IPv4Network | IPv6Network | None,
) -> None:
    if gateway is not None and gateway not in subnet:
        raise ValueError(f"gateway {gateway} is outside subnet {subnet}")
    if dhcp_range is not None and not dhcp_range.subnet_of(subnet):  # type: ignore[arg-type]
        raise ValueError(f"dhcp_range {dhcp_range} is outside subnet {subnet}")


class NetworkSpec(WireModel):
    """A network's definition (docs/networks.md). ``internal`` (libvirt's isolated
    network, no ``<forward>``) is the default: its domains reach each other only."""

    name: NetworkName
    uuid: Uuid | None = None
    internal: bool = True
    bridge: BridgeName | None = None
    """The Linux bridge's name; Docker chooses one if None."""
    ipv4: Ipv4 | None = None
    ipv6: Ipv6 | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_NETWORKS:
            raise ValueError(f"network name '{name}' is reserved")
        return name

    def subnets(self) -> list[IPv4Network | IPv6Network]:
        return [ip.subnet for ip in (self.ipv4, self.ipv6) if ip is not None]


class NetworkRecord(WireModel):
    """A network as it stands: virNetworkIsActive, IsPersistent, GetAutostart."""

    name: NetworkName
    uuid: Uuid
    active: bool
    persistent: bool
    autostart: bool
    bridge: str | None = None
    """The Linux bridge while the network is active, if Docker says."""


def network_of(text: str) -> IPv4Network | IPv6Network:
    """A subnet written ``10.0.0.0/24``; host bits must be zero."""
    return ip_network(text, strict=True)
