"""libvirt network XML ⇄ NetworkSpec. No I/O.

    network_fields(xml)        the spec's fields, read from network XML (not yet validated)
    network_xml(spec, record)  the network XML of a spec, laid out as libvirt writes it

The mapping:

    <network>
      <name>, <uuid>                  name, uuid
      <forward mode='nat'/>           internal false; no <forward>: internal (isolated)
      <bridge name='virbr1'/>         bridge
      <ip address='A' prefix='P'>     ipv4 (or family='ipv6': ipv6): subnet A/P, gateway A;
                                      netmask='255.255.255.0' instead of prefix
        <dhcp><range start='S' end='E'/></dhcp>   dhcp_range: S..E must be one CIDR block,
                                                  as Docker's IP range is

Errors are XmlError: XML_ERROR for what cannot be read, CONFIG_UNSUPPORTED for what
virtbus cannot do (a forward mode but nat, DNS, static hosts, a second subnet of one
family…), every such element named in one message.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network, summarize_address_range
from typing import Any
from uuid import UUID

from lxml import etree

from schemas.codes import ErrorCode
from schemas.network import NetworkRecord, NetworkSpec
from schemas.xmldoc import XmlError, escape_attribute, escape_text, parse_xml, unwritable

Element = etree._Element
_FORWARD_MODES = ("nat",)


def network_fields(xml: str) -> dict[str, Any]:
    root = parse_xml(xml)
    if root.tag != "network":
        raise XmlError(ErrorCode.XML_ERROR, f"the root element is <{root.tag!s}>, not <network>")
    refused: list[str] = []
    fields: dict[str, Any] = {"internal": True}
    _only(root, "<network>", ("connections", "ipv6"), refused)
    seen: set[str] = set()
    for child in root:
        tag = str(child.tag)
        if tag in seen and tag != "ip":
            raise XmlError(ErrorCode.XML_ERROR, f"more than one <network><{tag}>")
        seen.add(tag)
        if tag == "name":
            fields["name"] = (child.text or "").strip()
        elif tag == "uuid":
            try:
                fields["uuid"] = str(UUID((child.text or "").strip()))
            except ValueError:
                raise XmlError(ErrorCode.XML_ERROR, "malformed <uuid>") from None
        elif tag == "forward":
            mode = child.get("mode", "nat")
            if mode not in _FORWARD_MODES:
                refused.append(f"<forward mode='{mode}'>")
            _only(child, "<forward>", ("mode",), refused)
            fields["internal"] = False
        elif tag == "bridge":
            _only(child, "<bridge>", ("name", "stp", "delay"), refused)
            if child.get("name"):
                fields["bridge"] = child.get("name")
        elif tag == "ip":
            family, config = _ip(child, refused)
            if family in fields:
                refused.append(f"<ip family='{family}'> (a second subnet)")
            fields[family] = config
        elif tag in ("mac", "domain"):
            continue  # libvirt writes them; Docker chooses the bridge's MAC and no DNS domain
        else:
            refused.append(f"<{tag}>")
    if refused:
        raise XmlError(
            ErrorCode.CONFIG_UNSUPPORTED, "not supported by virtbus: " + ", ".join(refused)
        )
    if not fields.get("name"):
        raise XmlError(ErrorCode.XML_ERROR, "missing <name>")
    return fields


def _only(element: Element, where: str, allowed: tuple[str, ...], refused: list[str]) -> None:
    for name, value in element.attrib.items():
        if name not in allowed:
            refused.append(f"{where[:-1]} {name}='{value}'>")


def _ip(element: Element, refused: list[str]) -> tuple[str, dict[str, Any]]:
    family = element.get("family", "ipv4")
    if family not in ("ipv4", "ipv6"):
        raise XmlError(ErrorCode.XML_ERROR, f"unknown <ip family='{family}'>")
    _only(element, "<ip>", ("family", "address", "prefix", "netmask"), refused)
    address = element.get("address")
    if address is None:
        raise XmlError(ErrorCode.XML_ERROR, "missing address of <ip>")
    prefix = element.get("prefix") or element.get("netmask")
    if prefix is None:
        prefix = "24" if family == "ipv4" else "64"
    try:
        gateway = ip_address(address)
        subnet = ip_network(f"{address}/{prefix}", strict=False)
    except ValueError as error:
        raise XmlError(ErrorCode.XML_ERROR, f"<ip>: {error}") from None
    config: dict[str, Any] = {"subnet": str(subnet), "gateway": str(gateway)}
    for child in element:
        if child.tag != "dhcp":
            refused.append(f"<ip><{child.tag!s}>")
            continue
        for entry in child:
            if entry.tag != "range":
                refused.append(f"<ip><dhcp><{entry.tag!s}>")
                continue
            if "dhcp_range" in config:
                refused.append("<ip><dhcp><range> (a second range)")
                continue
            config["dhcp_range"] = _range(entry, refused)
    return family, config


def _range(element: Element, refused: list[str]) -> str | None:
    try:
        start, end = ip_address(element.get("start", "")), ip_address(element.get("end", ""))
        blocks = list(summarize_address_range(start, end))
    except (ValueError, TypeError) as error:
        raise XmlError(ErrorCode.XML_ERROR, f"<ip><dhcp><range>: {error}") from None
    if len(blocks) != 1:
        refused.append(
            f"<ip><dhcp><range start='{start}' end='{end}'> (not one CIDR block, "
            f"as Docker's IP range must be)"
        )
        return None
    return str(blocks[0])


def network_xml(spec: NetworkSpec, record: NetworkRecord | None = None) -> str:
    """The network XML of ``spec``; network_fields reads it back as an equal spec.
    ``record`` adds what the running network has (its bridge)."""
    lines = ["<network>", _element(1, "name", spec.name)]
    if spec.uuid is not None:
        lines.append(_element(1, "uuid", str(spec.uuid)))
    if not spec.internal:
        lines.append(_element(1, "forward", None, mode="nat"))
    bridge = spec.bridge or (record.bridge if record is not None else None)
    if bridge is not None:
        lines.append(_element(1, "bridge", None, name=bridge))
    for family, ip in (("ipv4", spec.ipv4), ("ipv6", spec.ipv6)):
        if ip is None:
            continue
        gateway = ip.gateway or next(ip.subnet.hosts())
        attributes = {"address": str(gateway), "prefix": str(ip.subnet.prefixlen)}
        if family == "ipv6":
            attributes = {"family": "ipv6", **attributes}
        if ip.dhcp_range is None:
            lines.append(_element(1, "ip", None, **attributes))
            continue
        lines.append(_open(1, "ip", **attributes))
        lines.append("    <dhcp>")
        lines.append(_element(3, "range", None, **_ends(ip.dhcp_range)))
        lines.append("    </dhcp>")
        lines.append("  </ip>")
    lines.append("</network>")
    return "\n".join(lines) + "\n"


def _ends(block: IPv4Network | IPv6Network) -> dict[str, str]:
    return {"start": str(block.network_address), "end": str(block.broadcast_address)}


def _open(depth: int, tag: str, **attributes: str) -> str:
    written = "".join(f" {name}='{escape_attribute(value)}'" for name, value in attributes.items())
    return f"{'  ' * depth}<{tag}{written}>"


def _element(depth: int, tag: str, text: str | None, **attributes: str) -> str:
    opening = _open(depth, tag, **attributes)
    if text is None:
        return opening[:-1] + "/>"
    if unwritable(text):
        raise XmlError(ErrorCode.CONFIG_UNSUPPORTED, f"<{tag}> holds characters XML cannot carry")
    return f"{opening}{escape_text(text)}</{tag}>"
