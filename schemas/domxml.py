"""libvirt domain XML ⇄ DomainSpec, in the spirit of libvirt's LXC driver. No I/O.

    domain_fields(xml)            the spec's fields, read from domain XML (not yet validated)
    parse_domain_xml(xml)         the DomainSpec that domain XML describes
    domain_xml(spec, domain_id)   the domain XML of a spec, laid out as libvirt writes it

The mapping (libvirt's elements on the left, the spec's fields on the right):

    <domain type='docker'>  (or 'lxc')     id='N' written while running, ignored when read
    <name>, <uuid>                         name, uuid
    <title>, <description>                 title, description
    <metadata>                             metadata_xml: its elements, kept verbatim
    <memory>, <currentMemory>              memory_kib; every libvirt unit, KiB by default
    <memtune>                              <hard_limit>: memory_kib (equal to <memory>, or
                                           without it); <soft_limit>: soft_limit_kib;
                                           <swap_hard_limit>: swap_hard_limit_kib
    <vcpu>                                 vcpus
    <cputune><shares>                      cpu_shares
    <os><type>exe</type>                   the only OS type a container has
        <init>, <initarg>…                 command
        <initenv name='K'>V</initenv>…     env
        <initdir>                          workdir
        <inituser>, <initgroup>            user ('user' or 'user:group')
    <features><privnet/></features>        written for network 'none'; a domain always has
                                           its own network namespace
    <clock offset='utc'/>                  accepted: what a container has anyway
    <on_poweroff>destroy, <on_reboot>restart   the only behaviour there is
    <on_crash>destroy|restart              on_crash
    <devices>
      <filesystem type='template'>         image: <source name='IMAGE'/> <target dir='/'/>
                                           (accessmode mapped or squash: ignored, as
                                           libvirt's LXC driver does)
      <filesystem type='mount'>…           mounts: <source dir/> <target dir/> [<readonly/>]
      <interface type='network'>           the first: network (<source network='NAME'/>) and
                                           mac (<mac address='…'/>); none without; further
                                           ones: interfaces
      <filesystem type='volume'>…          volumes: <source pool volume/> <target dir/> [<readonly>]
      <console type='pty'>                 console: an interactive console (a terminal)
      <emulator>docker-engine-…            accepted and not kept: the host's engine runs
                                           every domain (the capabilities name it so)
    <virtbus:config xmlns:virtbus='urn:virtbus:domain'>   what libvirt has no element for:
      <virtbus:autostart>yes|no, <virtbus:init>yes|no, <virtbus:pids_limit>N,
      <virtbus:metadata name='K'>V</virtbus:metadata>…    (the spec's metadata)
      <virtbus:healthcheck interval='S' timeout='S' retries='N'>
        <virtbus:arg>…</virtbus:arg>…</virtbus:healthcheck>  (the spec's healthcheck)

Errors are XmlError. XML_ERROR: text that is not XML, a root that is not ``<domain>``,
something required missing or repeated, a value that cannot be read (a number, a unit, a
UUID, an action libvirt does not know). CONFIG_UNSUPPORTED: anything that asks for what
virtbus cannot do, every such element, attribute and value named in one message. A value
the spec refuses (a name, a path, a memory size too small) is INVALID_ARG.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from lxml import etree
from pydantic import ValidationError

from schemas.codes import ErrorCode
from schemas.domain import DomainSpec, derived_mac
from schemas.xmldoc import (
    XmlError,
    escape_attribute,
    escape_text,
    fragment_of,
    parse_xml,
    read_fragment,
    unwritable,
)

NAMESPACE = "urn:virtbus:domain"
PREFIX = "virtbus"
DOMAIN_TYPES = ("docker", "lxc")
EMULATOR_PREFIX = "docker-engine-"
"""How a virtbus host's capabilities begin the ``<emulator>`` of its guests."""
OS_TYPE = "exe"

_TEMPLATE_ACCESS = ("mapped", "squash")
"""Modes of QEMU's file sharing that libvirt's LXC driver ignores; virt-install asks for
``mapped``. Accepted for the image's filesystem only: on a host mount they would promise
an ownership mapping no container mount makes."""
_KNOWN_ACTIONS = {"destroy", "restart", "preserve", "rename-restart"}
_ACTIONS: dict[str, tuple[set[str], set[str]]] = {
    # element: (what virtbus does, what libvirt knows)
    "on_poweroff": ({"destroy"}, _KNOWN_ACTIONS),
    "on_reboot": ({"restart"}, _KNOWN_ACTIONS),
    "on_crash": ({"destroy", "restart"}, _KNOWN_ACTIONS | {"coredump-destroy", "coredump-restart"}),
}
_UNIT_POWERS = "kmgtpe"
_MAX_DIGITS = 24
_YES_NO = {"yes": True, "no": False}

Element = etree._Element


def parse_domain_xml(xml: str) -> DomainSpec:
    """The spec that ``xml`` describes. Raises XmlError (values the spec refuses as
    INVALID_ARG)."""
    try:
        return DomainSpec.model_validate(domain_fields(xml))
    except ValidationError as error:
        problems = (
            f"{'.'.join(str(part) for part in item['loc']) or 'domain'}: {item['msg']}"
            for item in error.errors(include_url=False, include_input=False)
        )
        raise XmlError(ErrorCode.INVALID_ARG, "; ".join(problems)) from None


def domain_fields(xml: str) -> dict[str, Any]:
    """The spec's fields as ``xml`` gives them, for DomainSpec to validate. Raises XmlError."""
    root = parse_xml(xml)
    if root.tag != "domain":
        raise XmlError(
            ErrorCode.XML_ERROR, f"expecting root element of 'domain', not '{_shown(root)}'"
        )
    kind = root.get("type")
    if kind is None:
        raise XmlError(ErrorCode.XML_ERROR, "missing domain type attribute")
    return _Reader().domain(root, kind)


def _shown(element: Element) -> str:
    """An element's name as its document spells it: with its prefix, if any."""
    qname = etree.QName(element)
    if qname.namespace is None:
        return qname.localname
    return f"{element.prefix}:{qname.localname}" if element.prefix else qname.text


def _key(element: Element) -> str:
    """An element's name as the reader knows it: ``virtbus:…`` whatever the prefix."""
    qname = etree.QName(element)
    if qname.namespace == NAMESPACE:
        return f"{PREFIX}:{qname.localname}"
    return qname.localname if qname.namespace is None else qname.text


def _text(element: Element, where: str) -> str:
    if len(element):
        raise XmlError(ErrorCode.XML_ERROR, f"{where} must hold text only")
    return element.text or ""


def _quoted(text: str) -> str:
    """``text`` quoted for a message, cut short if long."""
    return f"'{text}'" if len(text) <= 64 else f"'{text[:64]}…'"


def _number(text: str, where: str) -> int:
    digits = text.strip()
    if not re.fullmatch(r"[0-9]+", digits):
        raise XmlError(ErrorCode.XML_ERROR, f"invalid value {_quoted(text)} of {where}")
    if len(digits) > _MAX_DIGITS:
        raise XmlError(ErrorCode.XML_ERROR, f"value of {where} too large: {_quoted(digits)}")
    return int(digits)


def unit_scale(unit: str) -> int | None:
    """Bytes per ``unit`` as libvirt reads it (case aside): b, byte(s); k, KiB… = 1024ⁿ;
    KB, MB… = 1000ⁿ, through E; None for what libvirt does not know."""
    unit = unit.lower()
    if unit in ("b", "byte", "bytes"):
        return 1
    if not unit or unit[0] not in _UNIT_POWERS:
        return None
    if unit[1:] in ("", "ib"):
        base = 1024
    elif unit[1:] == "b":
        base = 1000
    else:
        return None
    return int(base ** (_UNIT_POWERS.index(unit[0]) + 1))


def _kib(element: Element, where: str) -> int:
    """A memory size in KiB, rounded up as libvirt does."""
    unit = element.get("unit") or "KiB"
    scale = unit_scale(unit)
    if scale is None:
        raise XmlError(ErrorCode.XML_ERROR, f"unknown unit '{unit}' of {where}")
    return -(-_number(_text(element, where), where) * scale // 1024)


class _Reader:
    """One document's fields, and everything in it that virtbus cannot do."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.refused: dict[str, int] = {}
        self.memory_kib: int | None = None
        self.current: tuple[int, Element] | None = None
        self.hard_limit: tuple[int, Element] | None = None

    def refuse(self, what: str, at: Element) -> None:
        """Note what virtbus cannot do; ``at`` places it in the document's order."""
        self.refused.setdefault(what, at.sourceline or 0)

    def only(self, element: Element, where: str, allowed: Iterable[str] = ()) -> None:
        """Refuse the attributes of ``element`` not in ``allowed``."""
        for name, value in element.attrib.items():
            if name not in allowed:
                self.refuse(f"{where[:-1]} {name}={_quoted(value)}>", element)

    def children(
        self,
        element: Element,
        where: str,
        allowed: Iterable[str],
        repeatable: Iterable[str] = (),
    ) -> dict[str, list[Element]]:
        """The children of ``element`` by name. Refuses the unknown; a repeated one
        that may appear once only, or text beside the children, is an XML_ERROR."""
        if (element.text or "").strip() or any((child.tail or "").strip() for child in element):
            raise XmlError(ErrorCode.XML_ERROR, f"{where or '<domain>'} holds stray text")
        found: dict[str, list[Element]] = {}
        for child in element:
            key = _key(child)
            if key in allowed:
                found.setdefault(key, []).append(child)
            else:
                self.refuse(f"{where}<{_shown(child)}>", child)
        for key, group in found.items():
            if len(group) > 1 and key not in repeatable:
                raise XmlError(ErrorCode.XML_ERROR, f"more than one {where}<{key}>")
        return found

    def domain(self, root: Element, kind: str) -> dict[str, Any]:
        if kind not in DOMAIN_TYPES:
            self.refuse(f"<domain type='{kind}'>", root)
        self.only(root, f"<domain type='{kind}'>", ("type", "id"))
        readers: dict[str, Callable[[Element], None]] = {
            "name": self.name,
            "uuid": self.uuid,
            "title": self.title,
            "description": self.description,
            "metadata": self.metadata,
            "memory": self.memory,
            "currentMemory": self.current_memory,
            "memtune": self.memtune,
            "vcpu": self.vcpu,
            "cputune": self.cputune,
            "os": self.os,
            "features": self.features,
            "clock": self.clock,
            "on_poweroff": self.action,
            "on_reboot": self.action,
            "on_crash": self.action,
            "devices": self.devices,
            f"{PREFIX}:config": self.config,
        }
        for group in self.children(root, "", readers).values():
            readers[_key(group[0])](group[0])
        self.settle_memory()
        if self.refused:
            raise XmlError(
                ErrorCode.CONFIG_UNSUPPORTED,
                "not supported by virtbus: "
                + ", ".join(sorted(self.refused, key=self.refused.__getitem__)),
            )
        if not self.fields.get("name"):
            raise XmlError(ErrorCode.XML_ERROR, "missing <name>")
        self.drop_derived_macs()
        if "image" not in self.fields:
            raise XmlError(
                ErrorCode.CONFIG_UNSUPPORTED,
                "no <devices><filesystem type='template'> names the image: "
                "a domain cannot have the host's root filesystem",
            )
        return self.fields

    def drop_derived_macs(self) -> None:
        """A MAC address equal to the one derived from the UUID is not kept: dumpxml
        writes it, and the definition read back stays the same."""
        uuid = self.fields.get("uuid")
        if uuid is None:
            return
        if self.fields.get("mac") == derived_mac(uuid, self.fields.get("network", "")):
            del self.fields["mac"]
        for nic in self.fields.get("interfaces", []):
            if nic.get("mac") == derived_mac(uuid, nic["network"]):
                del nic["mac"]

    def name(self, element: Element) -> None:
        self.only(element, "<name>")
        self.fields["name"] = _text(element, "<name>").strip()

    def uuid(self, element: Element) -> None:
        self.only(element, "<uuid>")
        text = _text(element, "<uuid>").strip()
        try:
            self.fields["uuid"] = str(UUID(text))
        except ValueError:
            raise XmlError(ErrorCode.XML_ERROR, f"malformed <uuid> {_quoted(text)}") from None

    def title(self, element: Element) -> None:
        self.only(element, "<title>")
        self.fields["title"] = _text(element, "<title>")

    def description(self, element: Element) -> None:
        self.only(element, "<description>")
        self.fields["description"] = _text(element, "<description>")

    def metadata(self, element: Element) -> None:
        self.only(element, "<metadata>")
        if (element.text or "").strip() or any((child.tail or "").strip() for child in element):
            raise XmlError(ErrorCode.XML_ERROR, "<metadata> holds text outside its elements")
        if len(element):
            self.fields["metadata_xml"] = fragment_of(list(element))

    def memory(self, element: Element) -> None:
        self.only(element, "<memory>", ("unit",))
        self.memory_kib = _kib(element, "<memory>")

    def current_memory(self, element: Element) -> None:
        self.only(element, "<currentMemory>", ("unit",))
        self.current = (_kib(element, "<currentMemory>"), element)

    def settle_memory(self) -> None:
        """One limit: a <currentMemory> above <memory> is lowered to it, as libvirt does;
        one below it would be a balloon, which a container does not have."""
        memory, current = self.memory_kib, self.current
        if memory is not None and current is not None and current[0] < memory:
            self.refuse("<currentMemory> below <memory> (memory ballooning)", current[1])
        limit = memory if memory is not None or current is None else current[0]
        hard = self.hard_limit
        if hard is not None and limit is not None and hard[0] != limit:
            self.refuse("<memtune><hard_limit> other than <memory> (a second limit)", hard[1])
        elif hard is not None:
            limit = hard[0]
        if limit is not None:
            self.fields["memory_kib"] = limit

    def memtune(self, element: Element) -> None:
        self.only(element, "<memtune>")
        names = ("hard_limit", "soft_limit", "swap_hard_limit")
        for name, (limit,) in self.children(element, "<memtune>", names).items():
            where = f"<memtune><{name}>"
            self.only(limit, where, ("unit",))
            kib = _kib(limit, where)
            if name == "hard_limit":
                self.hard_limit = (kib, limit)
            else:
                self.fields[f"{name}_kib"] = kib

    def cputune(self, element: Element) -> None:
        self.only(element, "<cputune>")
        for shares in self.children(element, "<cputune>", ("shares",)).get("shares", []):
            self.only(shares, "<cputune><shares>")
            self.fields["cpu_shares"] = _number(
                _text(shares, "<cputune><shares>"), "<cputune><shares>"
            )

    def vcpu(self, element: Element) -> None:
        placement = element.get("placement", "static")
        self.only(element, "<vcpu>", ("placement", "current"))
        if placement != "static":
            self.refuse(f"<vcpu placement='{placement}'>", element)
        count = _number(_text(element, "<vcpu>"), "<vcpu>")
        current = element.get("current")
        if current is not None and _number(current, "<vcpu current>") != count:
            self.refuse(f"<vcpu current='{current}'> (vCPU hot-plug)", element)
        self.fields["vcpus"] = count

    def os(self, element: Element) -> None:
        self.only(element, "<os>")
        allowed = ("type", "init", "initarg", "initenv", "initdir", "inituser", "initgroup")
        found = self.children(element, "<os>", allowed, repeatable=("initarg", "initenv"))
        for kind in found.get("type", []):
            self.only(kind, "<os><type>", ("arch",))
            value = _text(kind, "<os><type>").strip()
            if value != OS_TYPE:
                self.refuse(f"<os><type>{value}", kind)
        args = [_text(arg, "<os><initarg>") for arg in found.get("initarg", [])]
        for init in found.get("init", []):
            self.only(init, "<os><init>")
            self.fields["command"] = [_text(init, "<os><init>"), *args]
        if args and "init" not in found:
            raise XmlError(ErrorCode.XML_ERROR, "<os><initarg> without <os><init>")
        env: dict[str, str] = {}
        for variable in found.get("initenv", []):
            self.only(variable, "<os><initenv>", ("name",))
            name = variable.get("name")
            if name is None:
                raise XmlError(ErrorCode.XML_ERROR, "missing name of <os><initenv>")
            if name in env:
                raise XmlError(ErrorCode.XML_ERROR, f"more than one <os><initenv name='{name}'>")
            env[name] = _text(variable, f"<os><initenv name='{name}'>")
        if env:
            self.fields["env"] = env
        for workdir in found.get("initdir", []):
            self.only(workdir, "<os><initdir>")
            self.fields["workdir"] = _text(workdir, "<os><initdir>")
        self.user(found.get("inituser", []), found.get("initgroup", []))

    def user(self, users: list[Element], groups: list[Element]) -> None:
        for element in (*users, *groups):
            self.only(element, f"<os><{_shown(element)}>")
        if groups and not users:
            self.refuse("<os><initgroup> without <os><inituser>", groups[0])
        if users:
            user = _text(users[0], "<os><inituser>").strip()
            if groups:
                user += ":" + _text(groups[0], "<os><initgroup>").strip()
            self.fields["user"] = user

    def features(self, element: Element) -> None:
        self.only(element, "<features>")
        for privnet in self.children(element, "<features>", ("privnet",)).get("privnet", []):
            self.only(privnet, "<features><privnet>")
            _text(privnet, "<features><privnet>")

    def clock(self, element: Element) -> None:
        offset = element.get("offset", "utc")
        where = f"<clock offset='{offset}'>"
        self.only(element, where, ("offset",))
        self.children(element, where, ())
        if offset != "utc":
            self.refuse(where, element)

    def action(self, element: Element) -> None:
        tag = str(element.tag)
        self.only(element, f"<{tag}>")
        value = _text(element, f"<{tag}>").strip()
        supported, known = _ACTIONS[tag]
        if value not in known:
            raise XmlError(ErrorCode.XML_ERROR, f"invalid <{tag}> value {_quoted(value)}")
        if value not in supported:
            self.refuse(f"<{tag}>{value}", element)
        elif tag == "on_crash":
            self.fields["on_crash"] = value

    def devices(self, element: Element) -> None:
        self.only(element, "<devices>")
        kinds = ("filesystem", "interface", "console")
        found = self.children(element, "<devices>", (*kinds, "emulator"), repeatable=kinds)
        for emulator in found.get("emulator", []):
            self.emulator(emulator)
        for filesystem in found.get("filesystem", []):
            self.filesystem(filesystem)
        for interface in found.get("interface", []):
            self.interface(interface)
        for console in found.get("console", []):
            self.console(console)

    def emulator(self, element: Element) -> None:
        """The host's engine, as a virtbus host's capabilities name it (virt-install
        copies it into the domains it writes), in any version: a domain moves between
        hosts and engines. Another program, such as libvirt_lxc, cannot run it."""
        self.only(element, "<devices><emulator>")
        named = _text(element, "<devices><emulator>").strip()
        if not named.startswith(EMULATOR_PREFIX):
            self.refuse(f"<devices><emulator>{named}", element)

    def console(self, element: Element) -> None:
        """``<console type='pty'>``, with whatever target libvirt writes inside it (a
        container has one console: its terminal)."""
        kind = element.get("type", "")
        where = f"<devices><console type='{kind}'>"
        self.only(element, where, ("type", "tty"))
        if kind != "pty":
            self.refuse(where, element)
            return
        if self.fields.get("console"):
            self.refuse("<devices><console> (a second console)", element)
        self.children(element, where, ("target", "source", "alias"))
        self.fields["console"] = True

    def filesystem(self, element: Element) -> None:
        kind = element.get("type", "mount")
        where = f"<devices><filesystem type='{kind}'>"
        self.only(element, where, ("type", "accessmode"))
        access = element.get("accessmode", "passthrough")
        ignored = _TEMPLATE_ACCESS if kind == "template" else ()
        if access != "passthrough" and access not in ignored:
            self.refuse(f"<devices><filesystem accessmode='{access}'>", element)
        if kind not in ("template", "mount", "volume"):
            self.refuse(where, element)
            return
        if kind == "volume":
            self.volume(element, where)
            return
        found = self.children(element, where, ("source", "target", "readonly"))
        source_key = "name" if kind == "template" else "dir"
        source = self.place(found, "source", source_key, where)
        target = self.place(found, "target", "dir", where)
        readonly = found.get("readonly", [])
        for flag in readonly:
            self.only(flag, f"{where}<readonly>")
            _text(flag, f"{where}<readonly>")
        if kind == "template":
            if target != "/":
                self.refuse(f"{where}<target dir='{target}'>", element)
            if readonly:
                self.refuse(f"{where}<readonly>", element)
            if "image" in self.fields:
                self.refuse(f"{where} (a second image)", element)
            self.fields["image"] = source
        elif target == "/":
            self.refuse(
                f"{where}<target dir='/'> (a host directory as the root filesystem)", element
            )
        else:
            mount = {"source": source, "target": target, "readonly": bool(readonly)}
            self.fields.setdefault("mounts", []).append(mount)

    def volume(self, element: Element, where: str) -> None:
        """``<filesystem type='volume'>``: ``<source pool='…' volume='…'/>``."""
        found = self.children(element, where, ("source", "target", "readonly"))
        sources = found.get("source")
        if not sources:
            raise XmlError(ErrorCode.XML_ERROR, f"missing {where}<source>")
        source = sources[0]
        self.only(source, f"{where}<source>", ("pool", "volume"))
        _text(source, f"{where}<source>")
        pool, volume = source.get("pool"), source.get("volume")
        if pool is None or volume is None:
            raise XmlError(ErrorCode.XML_ERROR, f"missing pool or volume of {where}<source>")
        target = self.place(found, "target", "dir", where)
        if target == "/":
            self.refuse(f"{where}<target dir='/'> (a volume as the root filesystem)", element)
        readonly = found.get("readonly", [])
        for flag in readonly:
            self.only(flag, f"{where}<readonly>")
            _text(flag, f"{where}<readonly>")
        mount = {"pool": pool, "volume": volume, "target": target, "readonly": bool(readonly)}
        self.fields.setdefault("volumes", []).append(mount)

    def place(self, found: dict[str, list[Element]], tag: str, key: str, where: str) -> str:
        """The one attribute of a filesystem's or interface's <source> or <target>."""
        elements = found.get(tag)
        if not elements:
            raise XmlError(ErrorCode.XML_ERROR, f"missing {where}<{tag}>")
        self.only(elements[0], f"{where}<{tag}>", (key,))
        _text(elements[0], f"{where}<{tag}>")
        value = elements[0].get(key)
        if value is None:
            raise XmlError(ErrorCode.XML_ERROR, f"missing {key} of {where}<{tag}>")
        return value

    def interface(self, element: Element) -> None:
        nic = interface_fields(element, self)
        if nic is None:
            return
        if "network" not in self.fields:
            self.fields["network"] = nic["network"]
            if "mac" in nic:
                self.fields["mac"] = nic["mac"]
        else:
            self.fields.setdefault("interfaces", []).append(nic)

    def config(self, element: Element) -> None:
        where = f"<{_shown(element)}>"
        self.only(element, where)
        tags = {
            name: f"{PREFIX}:{name}"
            for name in ("autostart", "init", "pids_limit", "metadata", "healthcheck")
        }
        found = self.children(element, where, tags.values(), repeatable=(tags["metadata"],))
        for name in ("autostart", "init"):
            for flag in found.get(tags[name], []):
                self.only(flag, f"<{_shown(flag)}>")
                value = _text(flag, f"<{_shown(flag)}>").strip()
                if value not in _YES_NO:
                    raise XmlError(
                        ErrorCode.XML_ERROR,
                        f"<{_shown(flag)}> must be yes or no, not {_quoted(value)}",
                    )
                self.fields[name] = _YES_NO[value]
        for limit in found.get(tags["pids_limit"], []):
            shown = f"<{_shown(limit)}>"
            self.only(limit, shown)
            text = _text(limit, shown).strip()
            if not text.isdigit():
                raise XmlError(
                    ErrorCode.XML_ERROR, f"{shown} must be a number, not {_quoted(text)}"
                )
            self.fields["pids_limit"] = int(text)
        metadata: dict[str, str] = {}
        for entry in found.get(tags["metadata"], []):
            shown = f"<{_shown(entry)}>"
            self.only(entry, shown, ("name",))
            key = entry.get("name")
            if key is None:
                raise XmlError(ErrorCode.XML_ERROR, f"missing name of {shown}")
            if key in metadata:
                raise XmlError(ErrorCode.XML_ERROR, f"more than one {shown[:-1]} name='{key}'>")
            metadata[key] = _text(entry, shown)
        if metadata:
            self.fields["metadata"] = metadata
        for check in found.get(tags["healthcheck"], []):
            self.healthcheck(check)

    def healthcheck(self, element: Element) -> None:
        shown = f"<{_shown(element)}>"
        self.only(element, shown, ("interval", "timeout", "retries"))
        arg = f"{PREFIX}:arg"
        args = self.children(element, shown, (arg,), repeatable=(arg,)).get(arg, [])
        check: dict[str, Any] = {"command": [_text(a, f"<{_shown(a)}>") for a in args]}
        for attribute, field in (
            ("interval", "interval_s"),
            ("timeout", "timeout_s"),
            ("retries", "retries"),
        ):
            value = element.get(attribute)
            if value is not None:
                check[field] = _number(value, f"{shown[:-1]} {attribute}>")
        self.fields["healthcheck"] = check


def domain_xml(spec: DomainSpec, domain_id: int | None = None) -> str:
    """The domain XML of ``spec`` (with ``id`` while the domain runs), laid out as libvirt
    writes it; parse_domain_xml reads it back as an equal spec. Raises XmlError
    (CONFIG_UNSUPPORTED) for a value holding characters XML cannot carry."""
    lines = [f"<domain type='docker'{_id(domain_id)}>"]
    add = lines.append
    add(_element(1, "name", spec.name))
    if spec.uuid is not None:
        add(_element(1, "uuid", str(spec.uuid)))
    if spec.title is not None:
        add(_element(1, "title", spec.title))
    if spec.description is not None:
        add(_element(1, "description", spec.description))
    if spec.metadata_xml is not None:
        add("  <metadata>")
        lines.extend(
            f"    {fragment_of([e])}" for e in read_fragment(spec.metadata_xml, "metadata")
        )
        add("  </metadata>")
    if spec.memory_kib is not None:
        add(_element(1, "memory", str(spec.memory_kib), unit="KiB"))
        add(_element(1, "currentMemory", str(spec.memory_kib), unit="KiB"))
    memtune = (
        ("soft_limit", spec.soft_limit_kib),
        ("swap_hard_limit", spec.swap_hard_limit_kib),
    )
    if any(kib is not None for _, kib in memtune):
        add("  <memtune>")
        lines.extend(
            _element(2, name, str(kib), unit="KiB") for name, kib in memtune if kib is not None
        )
        add("  </memtune>")
    if spec.vcpus is not None:
        add(_element(1, "vcpu", str(spec.vcpus), placement="static"))
    if spec.cpu_shares is not None:
        lines += ["  <cputune>", _element(2, "shares", str(spec.cpu_shares)), "  </cputune>"]
    add("  <os>")
    add(_element(2, "type", OS_TYPE))
    if spec.command is not None:
        add(_element(2, "init", spec.command[0]))
        lines.extend(_element(2, "initarg", arg) for arg in spec.command[1:])
    lines.extend(_element(2, "initenv", value, name=name) for name, value in spec.env.items())
    if spec.workdir is not None:
        add(_element(2, "initdir", spec.workdir))
    if spec.user is not None:
        user, _, group = spec.user.partition(":")
        add(_element(2, "inituser", user))
        if group:
            add(_element(2, "initgroup", group))
    add("  </os>")
    if spec.network == "none":
        lines += ["  <features>", "    <privnet/>", "  </features>"]
    add(_element(1, "on_poweroff", "destroy"))
    add(_element(1, "on_reboot", "restart"))
    add(_element(1, "on_crash", spec.on_crash))
    add("  <devices>")
    add(_open(2, "filesystem", type="template", accessmode="passthrough"))
    add(_element(3, "source", None, name=spec.image))
    add(_element(3, "target", None, dir="/"))
    add("    </filesystem>")
    for mount in spec.mounts:
        add(_open(2, "filesystem", type="mount", accessmode="passthrough"))
        add(_element(3, "source", None, dir=mount.source))
        add(_element(3, "target", None, dir=mount.target))
        if mount.readonly:
            add(_element(3, "readonly", None))
        add("    </filesystem>")
    for volume in spec.volumes:
        add(_open(2, "filesystem", type="volume", accessmode="passthrough"))
        add(_element(3, "source", None, pool=volume.pool, volume=volume.volume))
        add(_element(3, "target", None, dir=volume.target))
        if volume.readonly:
            add(_element(3, "readonly", None))
        add("    </filesystem>")
    for index, nic in enumerate(spec.nics()):
        lines += interface_lines(nic.network, nic.mac, f"net{index}", depth=2)
    if spec.console:
        add(_open(2, "console", type="pty"))
        add(_element(3, "target", None, type="lxc", port="0"))
        add("    </console>")
    add("  </devices>")
    lines += _config(spec)
    add("</domain>")
    return "\n".join(lines) + "\n"


def interface_fields(element: Element, reader: _Reader | None = None) -> dict[str, Any] | None:
    """The fields of one ``<interface type='network'>``: network and, if given, mac. An
    interface of another type is refused through ``reader`` (None: CONFIG_UNSUPPORTED
    at once, as for a device on its own)."""
    reader = reader or _Reader()
    kind = element.get("type", "")
    where = f"<devices><interface type='{kind}'>"
    reader.only(element, where, ("type",))
    if kind != "network":
        reader.refuse(where, element)
    else:
        found = reader.children(element, where, ("source", "mac", "alias", "model"))
        nic: dict[str, Any] = {"network": reader.place(found, "source", "network", where)}
        if "mac" in found:
            nic["mac"] = reader.place(found, "mac", "address", where)
        for model in found.get("model", []):
            if model.get("type") not in (None, "virtio"):
                reader.refuse(f"{where}<model type='{model.get('type')}'>", model)
    return None if kind != "network" else nic


def device_fields(xml: str) -> dict[str, Any]:
    """One device, as virDomainAttachDevice takes it: ``{"interface": {network, mac}}``
    for an ``<interface type='network'>``, ``{"filesystem": {source, target, readonly}}``
    for a ``<filesystem type='mount'>``. Raises XmlError as for a domain."""
    root = parse_xml(xml)
    reader = _Reader()
    result: dict[str, Any] = {}
    if root.tag == "interface":
        nic = interface_fields(root, reader)
        if nic is not None:
            result["interface"] = nic
    elif root.tag == "filesystem":
        if root.get("type", "mount") != "mount":
            reader.refuse(f"<filesystem type='{root.get('type')}'> (as a device)", root)
        else:
            reader.filesystem(root)
            mounts = reader.fields.get("mounts", [])
            if mounts:
                result["filesystem"] = mounts[0]
    else:
        reader.refuse(f"<{_shown(root)}> (as a device)", root)
    if reader.refused:
        raise XmlError(
            ErrorCode.CONFIG_UNSUPPORTED, "not supported by virtbus: " + ", ".join(reader.refused)
        )
    return result


def interface_lines(network: str, mac: str | None, alias: str | None, depth: int) -> list[str]:
    """An ``<interface type='network'>`` as libvirt writes it."""
    lines = [_open(depth, "interface", type="network")]
    if mac is not None:
        lines.append(_element(depth + 1, "mac", None, address=mac))
    lines.append(_element(depth + 1, "source", None, network=network))
    if alias is not None:
        lines.append(_element(depth + 1, "alias", None, name=alias))
    lines.append(f"{'  ' * depth}</interface>")
    return lines


def _id(domain_id: int | None) -> str:
    return f" id='{domain_id}'" if domain_id is not None and domain_id > 0 else ""


def _config(spec: DomainSpec) -> list[str]:
    """<virtbus:config>, with only what differs from the defaults; nothing if nothing does."""
    lines = []
    if spec.autostart:
        lines.append(_element(2, f"{PREFIX}:autostart", "yes"))
    if not spec.init:
        lines.append(_element(2, f"{PREFIX}:init", "no"))
    if spec.pids_limit is not None:
        lines.append(_element(2, f"{PREFIX}:pids_limit", str(spec.pids_limit)))
    lines += (
        _element(2, f"{PREFIX}:metadata", value, name=key) for key, value in spec.metadata.items()
    )
    check = spec.healthcheck
    if check is not None:
        lines.append(
            _open(
                2,
                f"{PREFIX}:healthcheck",
                interval=str(check.interval_s),
                timeout=str(check.timeout_s),
                retries=str(check.retries),
            )
        )
        lines += (_element(3, f"{PREFIX}:arg", arg) for arg in check.command)
        lines.append(f"    </{PREFIX}:healthcheck>")
    if not lines:
        return []
    opening = _open(1, f"{PREFIX}:config", **{f"xmlns:{PREFIX}": NAMESPACE})
    return [opening, *lines, f"  </{PREFIX}:config>"]


def _open(depth: int, tag: str, **attributes: str) -> str:
    written = []
    for name, value in attributes.items():
        _check(value, f"<{tag} {name}>")
        written.append(f" {name}='{escape_attribute(value)}'")
    return f"{'  ' * depth}<{tag}{''.join(written)}>"


def _element(depth: int, tag: str, text: str | None, **attributes: str) -> str:
    """One element on one line: ``<tag a='…'>text</tag>``, or ``<tag a='…'/>`` without text."""
    opening = _open(depth, tag, **attributes)
    if text is None:
        return opening[:-1] + "/>"
    _check(text, f"<{tag}>")
    return f"{opening}{escape_text(text)}</{tag}>"


def _check(value: str, where: str) -> None:
    if unwritable(value):
        raise XmlError(
            ErrorCode.CONFIG_UNSUPPORTED, f"{where} holds characters that XML cannot carry"
        )
