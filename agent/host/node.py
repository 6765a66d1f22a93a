"""The agent's host as libvirt describes a node: architecture, CPU topology, NUMA cells,
memory and CPU counters (``/proc``, ``/sys``), and the capability, domain capability
and sysinfo documents built from them."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from lxml import etree

from agent import __version__
from agent.host.cgroups import NS_PER_TICK, cpu_list
from schemas.domxml import DOMAIN_TYPES, EMULATOR_PREFIX
from schemas.replies import NodeStats

PROC = Path("/proc")
SYS = Path("/sys")
ETC = Path("/etc")
OS_TYPE = "exe"
WORDSIZE = {"x86_64": 64, "aarch64": 64, "ppc64le": 64, "s390x": 64, "riscv64": 64}
MEMINFO_KEYS = {"total": "MemTotal", "free": "MemFree", "buffers": "Buffers", "cached": "Cached"}
"""libvirt's node memory stat fields (KiB) and the /proc/meminfo lines they come from."""


@dataclass(frozen=True)
class Topology:
    sockets: int
    cores: int
    """per socket"""
    threads: int
    """per core"""


@dataclass(frozen=True)
class NodeFacts:
    """What libvirt's virNodeGetInfo and capabilities say about the host."""

    arch: str
    cpus: int
    cpu_model: str
    cpu_vendor: str
    mhz: int
    topology: Topology
    cells: dict[int, list[int]]
    """NUMA cell → its CPUs."""
    memory_kib: int
    host_uuid: uuid.UUID


def _cpuinfo(proc: Path) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    for block in (proc / "cpuinfo").read_text().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        if "processor" in entry:
            blocks.append(entry)
    return blocks


def _meminfo(proc: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        found[key] = int(value.split()[0])
    return found


def _cells(sys: Path, cpus: int) -> dict[int, list[int]]:
    nodes = sys / "devices" / "system" / "node"
    cells: dict[int, list[int]] = {}
    for node in sorted(nodes.glob("node[0-9]*")) if nodes.is_dir() else []:
        try:
            cells[int(node.name[4:])] = cpu_list((node / "cpulist").read_text())
        except (OSError, ValueError):
            continue
    return cells or {0: list(range(cpus))}


def _host_uuid(etc: Path, sys: Path) -> uuid.UUID:
    for source in (sys / "class" / "dmi" / "id" / "product_uuid", etc / "machine-id"):
        try:
            return uuid.UUID(source.read_text().strip())
        except (OSError, ValueError):
            continue
    return uuid.uuid5(uuid.NAMESPACE_DNS, os.uname().nodename)


def node_facts(proc: Path = PROC, sys: Path = SYS, etc: Path = ETC) -> NodeFacts:
    """The host's facts, read now (a second read gives the same but for ``mhz``)."""
    processors = _cpuinfo(proc)
    first = processors[0] if processors else {}
    cpus = len(processors) or os.cpu_count() or 1
    sockets = len({p.get("physical id", "0") for p in processors}) or 1
    cores = int(first.get("cpu cores", 0)) or max(1, cpus // sockets)
    siblings = int(first.get("siblings", 0)) or cores
    return NodeFacts(
        arch=os.uname().machine,
        cpus=cpus,
        cpu_model=first.get("model name", first.get("cpu model", "")),
        cpu_vendor=first.get("vendor_id", ""),
        mhz=int(float(first.get("cpu MHz", "0") or 0)),
        topology=Topology(sockets=sockets, cores=cores, threads=max(1, siblings // cores)),
        cells=_cells(sys, cpus),
        memory_kib=_meminfo(proc)["MemTotal"],
        host_uuid=_host_uuid(etc, sys),
    )


@cache
def host_facts() -> NodeFacts:
    """This host's facts, read once: they do not change while the agent runs."""
    return node_facts()


def node_stats(proc: Path = PROC) -> NodeStats:
    """libvirt's node memory stats (KiB) and CPU stats (ns), for all CPUs and each:
    ``kernel`` is system + irq + softirq time, ``user`` user + nice, as libvirt counts."""
    now = datetime.now(UTC)
    meminfo = _meminfo(proc)
    memory = {field: meminfo.get(line, 0) for field, line in MEMINFO_KEYS.items()}
    total: dict[str, int] = {}
    per_cpu: list[dict[str, int]] = []
    for line in (proc / "stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu"):
            continue
        ticks = [int(value) for value in fields] + [0] * 8
        times = {
            "kernel": (ticks[2] + ticks[5] + ticks[6]) * NS_PER_TICK,
            "user": (ticks[0] + ticks[1]) * NS_PER_TICK,
            "idle": ticks[3] * NS_PER_TICK,
            "iowait": ticks[4] * NS_PER_TICK,
        }
        if name == "cpu":
            total = times
        else:
            per_cpu.append(times)
    return NodeStats(time=now, memory=memory, cpu=total, cpus=per_cpu)


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _xml(root: etree._Element) -> str:
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def capabilities_xml(facts: NodeFacts, engine_version: str) -> str:
    """libvirt's capabilities document: the host (architecture, CPU topology, NUMA
    cells, no security model) and one guest, os type ``exe``, for every domain type
    the domain XML takes. The emulator names the engine and virtbus versions."""
    root = etree.Element("capabilities")
    host = _sub(root, "host")
    _sub(host, "uuid", str(facts.host_uuid))
    cpu = _sub(host, "cpu")
    _sub(cpu, "arch", facts.arch)
    if facts.cpu_vendor:
        _sub(cpu, "vendor", facts.cpu_vendor)
    _sub(
        cpu,
        "topology",
        sockets=str(facts.topology.sockets),
        dies="1",
        cores=str(facts.topology.cores),
        threads=str(facts.topology.threads),
    )
    _sub(host, "power_management")
    _sub(host, "iommu", support="no")
    topology = _sub(host, "topology")
    cells = _sub(topology, "cells", num=str(len(facts.cells)))
    for cell_id, cell_cpus in facts.cells.items():
        cell = _sub(cells, "cell", id=str(cell_id))
        share = facts.memory_kib // len(facts.cells)
        _sub(cell, "memory", str(share), unit="KiB")
        listed = _sub(cell, "cpus", num=str(len(cell_cpus)))
        per_socket = facts.topology.cores * facts.topology.threads
        for cpu_id in cell_cpus:
            _sub(
                listed,
                "cpu",
                id=str(cpu_id),
                socket_id=str(cpu_id // per_socket),
                die_id="0",
                core_id=str(cpu_id % per_socket // facts.topology.threads),
                siblings=str(cpu_id),
            )
    secmodel = _sub(host, "secmodel")
    _sub(secmodel, "model", "none")
    _sub(secmodel, "doi", "0")
    guest = _sub(root, "guest")
    _sub(guest, "os_type", OS_TYPE)
    arch = _sub(guest, "arch", name=facts.arch)
    _sub(arch, "wordsize", str(WORDSIZE.get(facts.arch, 64)))
    _sub(arch, "emulator", f"{EMULATOR_PREFIX}{engine_version} virtbus-agent-{__version__}")
    for kind in DOMAIN_TYPES:
        _sub(arch, "domain", type=kind)
    return _xml(root)


def domain_capabilities_xml(facts: NodeFacts, virttype: str, max_vcpus: int) -> str:
    """libvirt's domain capabilities for ``virttype``: no firmware, disks, graphics or
    host devices; filesystems (the image and the mounts) and a console."""
    root = etree.Element("domainCapabilities")
    _sub(root, "path", "/usr/bin/dockerd")
    _sub(root, "domain", virttype)
    _sub(root, "arch", facts.arch)
    _sub(root, "vcpu", max=str(max_vcpus))
    _sub(root, "iothreads", supported="no")
    os_element = _sub(root, "os", supported="yes")
    _sub(os_element, "enum", name="firmware")
    cpu = _sub(root, "cpu")
    for mode in ("host-passthrough", "maximum", "host-model", "custom"):
        _sub(cpu, "mode", name=mode, supported="no")
    devices = _sub(root, "devices")
    for device in ("disk", "graphics", "video", "hostdev", "rng", "tpm", "redirdev"):
        _sub(devices, device, supported="no")
    filesystem = _sub(devices, "filesystem", supported="yes")
    driver = _sub(filesystem, "enum", name="driverType")
    _sub(driver, "value", "default")
    features = _sub(root, "features")
    for feature in ("gic", "vmcoreinfo", "genid", "sev", "sgx"):
        _sub(features, feature, supported="no")
    return _xml(root)


def sysinfo_xml(facts: NodeFacts, sys: Path = SYS) -> str:
    """libvirt's SMBIOS sysinfo: the firmware's tables where ``/sys/class/dmi`` has
    them, and one processor entry per socket from ``/proc/cpuinfo``."""
    dmi = sys / "class" / "dmi" / "id"
    root = etree.Element("sysinfo", type="smbios")
    for section, entries in (
        ("bios", {"vendor": "bios_vendor", "version": "bios_version", "date": "bios_date"}),
        (
            "system",
            {
                "manufacturer": "sys_vendor",
                "product": "product_name",
                "version": "product_version",
                "uuid": "product_uuid",
                "family": "product_family",
            },
        ),
    ):
        values = {}
        for name, source in entries.items():
            try:
                values[name] = (dmi / source).read_text().strip()
            except OSError:
                continue
        if section == "system":
            values.setdefault("uuid", str(facts.host_uuid))
        if values:
            element = _sub(root, section)
            for name, value in values.items():
                _sub(element, "entry", value, name=name)
    for socket in range(facts.topology.sockets):
        processor = _sub(root, "processor")
        _sub(processor, "entry", f"CPU {socket}", name="socket_destination")
        _sub(processor, "entry", "Central Processor", name="type")
        _sub(processor, "entry", facts.cpu_vendor, name="manufacturer")
        _sub(processor, "entry", facts.cpu_model, name="version")
        _sub(processor, "entry", f"{facts.mhz} MHz", name="max_speed")
        _sub(processor, "entry", f"{facts.mhz} MHz", name="current_speed")
    return _xml(root)
