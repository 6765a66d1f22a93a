"""Everything the CLI prints: virsh's tables and lines for people, JSON for scripts,
errors as ``error: <message>`` on stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from agent.cli.plain import Output as Output
from agent.cli.plain import broadcast_summary, state_name, table
from agent.cli.plain import jsonable as jsonable
from schemas.domain import DomainRecord
from schemas.events import (
    AgentEvent,
    DeviceEvent,
    Event,
    HealthEvent,
    ImagePullEvent,
    LifecycleEvent,
    MetadataChangeEvent,
    NetworkEvent,
    RebootEvent,
    TunableEvent,
)
from schemas.network import NetworkRecord
from schemas.replies import (
    ConsoleOutput,
    DeviceChange,
    DhcpLeases,
    DomainInfo,
    DomainInterfaces,
    DomainStats,
    DomainStatsList,
    DomainXml,
    HostCapabilities,
    HostInfo,
    Metadata,
    NetworkList,
    NetworkXml,
    NodeStats,
    Result,
)
from schemas.storage import (
    PoolList,
    PoolRecord,
    SnapshotList,
    SnapshotRecord,
    VolumeList,
    VolumeRecord,
)

if TYPE_CHECKING:
    from agent.client import BroadcastResult, HostStatus

Render = Callable[[Result], str]
"""A verb's result as text."""


def record_line(message: str) -> Render:
    """A domain record as one line, ``{name}`` filled in."""

    def render(result: Result) -> str:
        name = result.name if isinstance(result, DomainRecord) else "?"
        return message.format(name=name)

    return render


def render_xml(result: Result) -> str:
    assert isinstance(result, DomainXml)
    return result.xml.rstrip("\n")


def render_metadata(result: Result) -> str:
    assert isinstance(result, Metadata)
    return result.metadata


def render_console_output(result: Result) -> str:
    assert isinstance(result, ConsoleOutput)
    return result.output.rstrip("\n")


def dominfo_text(record: DomainRecord, info: DomainInfo) -> str:
    rows = [
        ("Id", record.id if record.id > 0 else "-"),
        ("Name", record.name),
        ("UUID", record.uuid),
        ("OS Type", "exe"),
        ("State", state_name(record.state)),
        ("CPU(s)", info.nr_virt_cpu),
        ("CPU time", f"{info.cpu_time_ns / 1e9:.1f}s"),
        ("Max memory", f"{info.max_mem_kib} KiB"),
        ("Used memory", f"{info.memory_kib} KiB"),
        ("Persistent", "yes" if record.persistent else "no"),
        ("Autostart", "enable" if record.autostart else "disable"),
    ]
    return "\n".join(f"{label + ':':<15} {value}" for label, value in rows)


def event_text(event: Event) -> str:
    if isinstance(event, LifecycleEvent):
        return (
            f"event 'lifecycle' for domain '{event.domain.name}' on host '{event.host}': "
            f"{event.event.capitalize()} {event.detail.capitalize()}"
        )
    if isinstance(event, RebootEvent):
        return f"event 'reboot' for domain '{event.domain.name}' on host '{event.host}'"
    if isinstance(event, TunableEvent):
        params = "".join(f"\n\t{key}: {value}" for key, value in event.params.items())
        return f"event 'tunable' for domain '{event.domain.name}' on host '{event.host}':{params}"
    if isinstance(event, HealthEvent):
        where = f"domain '{event.domain.name}' on host '{event.host}'"
        return f"event 'health' for {where}: {event.status}"
    if isinstance(event, MetadataChangeEvent):
        return (
            f"event 'metadata-change' for domain '{event.domain.name}' on host '{event.host}': "
            f"type {event.type}, uri {event.nsuri or '<null>'}"
        )
    if isinstance(event, DeviceEvent):
        return (
            f"event 'device-{event.event}' for domain '{event.domain.name}' "
            f"on host '{event.host}': {event.alias}"
        )
    if isinstance(event, NetworkEvent):
        detail = "" if event.detail == "none" else f" {event.detail.capitalize()}"
        return (
            f"event 'lifecycle' for network '{event.network.name}' on host '{event.host}': "
            f"{event.event.capitalize()}{detail}"
        )
    if isinstance(event, ImagePullEvent):
        return (
            f"event 'image' for host '{event.host}': pull of '{event.image}' {event.status}, "
            f"{event.layers_done}/{event.layers} layers, "
            f"{event.bytes_done}/{event.bytes_total} bytes"
        )
    assert isinstance(event, AgentEvent)
    return f"event 'agent' for host '{event.host}': {event.state}"


def hosts_table(statuses: Iterable[HostStatus]) -> str:
    rows = [
        (
            s.host,
            s.state,
            s.last_seen.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            s.agent_version or "-",
            s.domains,
            ",".join(s.groups) or "-",
        )
        for s in statuses
    ]
    return table(["Host", "State", "Last seen (UTC)", "Version", "Domains", "Groups"], rows)


def broadcast_text(result: BroadcastResult, render: Render, timeout_s: float) -> str:
    """Each host's answer under ``== HOST``, then the hosts that did not answer."""
    lines: list[str] = []
    for host in sorted(result.replies):
        reply = result.replies[host]
        lines.append(f"== {host}")
        if reply.error is not None:
            lines.append(f"error: {reply.error.message}")
        elif reply.result is not None:
            lines.append(render(reply.result))
    for host in sorted(result.missing):
        lines.append(f"== {host}\nerror: no reply within {timeout_s:g} s")
    return "\n".join(lines)


class Progress:
    """Hosts answered / expected, redrawn on one stderr line while replies come in."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._live = stream.isatty()

    def __call__(self, host: str, answered: int, expected: int | None) -> None:
        total = "?" if expected is None else str(expected)
        if self._live:
            self._stream.write(f"\r{answered}/{total} hosts answered (last: {host})\x1b[K")
            self._stream.flush()

    def done(self, result: BroadcastResult) -> None:
        summary = broadcast_summary(result.replies, result.expected, result.elapsed_s)
        self._stream.write(f"\r{summary}\x1b[K\n" if self._live else f"{summary}\n")


def _stats_lines(stats: DomainStats) -> str:
    lines = [f"Domain: '{stats.domain.name}'"]
    lines += [f"  {key}={value}" for key, value in stats.stats.items()]
    return "\n".join(lines) + "\n"


def render_domstats(result: Result) -> str:
    """``virsh domstats``: a ``Domain: 'name'`` line, then ``  key=value`` lines."""
    if isinstance(result, DomainStats):
        return _stats_lines(result).rstrip("\n")
    assert isinstance(result, DomainStatsList)
    return "\n".join(_stats_lines(record) for record in result.records).rstrip("\n")


def render_document(field: str) -> Render:
    """One of the host's XML documents: capabilities, domain_capabilities, sysinfo."""

    def render(result: Result) -> str:
        assert isinstance(result, HostCapabilities)
        return str(getattr(result, field)).rstrip("\n")

    return render


def render_nodeinfo(result: Result) -> str:
    assert isinstance(result, HostInfo)
    rows = [
        ("CPU model", result.arch),
        ("CPU(s)", result.cpus),
        ("CPU frequency", f"{result.mhz} MHz"),
        ("CPU socket(s)", max(1, result.sockets // max(1, result.nodes))),
        ("Core(s) per socket", result.cores),
        ("Thread(s) per core", result.threads),
        ("NUMA cell(s)", result.nodes),
        ("Memory size", f"{result.memory_kib} KiB"),
    ]
    return "\n".join(f"{f'{name}:':<21}{value}" for name, value in rows)


def render_nodememstats(result: Result) -> str:
    assert isinstance(result, NodeStats)
    return "\n".join(f"{name:<7}: {value:>20} KiB" for name, value in result.memory.items())


def render_nodecpustats(cpu: int | None) -> Render:
    """``virsh nodecpustats [CPU]``: libvirt's kernel time is virsh's ``system``."""

    def render(result: Result) -> str:
        assert isinstance(result, NodeStats)
        times = result.cpu if cpu is None else result.cpus[cpu]
        names = {"user": "user", "kernel": "system", "idle": "idle", "iowait": "iowait"}
        return "\n".join(f"{names[key] + ':':<15}{times[key]:>20}" for key in names)

    return render


def network_line(message: str) -> Render:
    """A network record as one line, ``{name}`` filled in."""

    def render(result: Result) -> str:
        name = result.name if isinstance(result, NetworkRecord) else "?"
        return message.format(name=name)

    return render


def render_networks(result: Result) -> str:
    """``net-list``'s table."""
    assert isinstance(result, NetworkList)
    rows = [
        (
            n.name,
            "active" if n.active else "inactive",
            "yes" if n.autostart else "no",
            "yes" if n.persistent else "no",
        )
        for n in result.networks
    ]
    return table(["Name", "State", "Autostart", "Persistent"], rows)


def render_network_xml(result: Result) -> str:
    assert isinstance(result, NetworkXml)
    return result.network_xml.rstrip("\n")


def render_leases(result: Result) -> str:
    """``net-dhcp-leases``' table; a lease lasts while its domain stays joined."""
    assert isinstance(result, DhcpLeases)
    rows = [
        (
            "-" if lease.expiry_time == 0 else str(lease.expiry_time),
            lease.mac or "-",
            "ipv4" if lease.type == 0 else "ipv6",
            f"{lease.ipaddr}/{lease.prefix}",
            lease.hostname or "-",
            lease.client_id or "-",
        )
        for lease in result.leases
    ]
    headers = ["Expiry Time", "MAC address", "Protocol", "IP address", "Hostname", "Client ID"]
    return table(headers, rows)


def render_addresses(result: Result) -> str:
    """``domifaddr``'s table."""
    assert isinstance(result, DomainInterfaces)
    rows = [
        (
            nic.name,
            nic.hwaddr or "-",
            "ipv4" if address.type == 0 else "ipv6",
            f"{address.addr}/{address.prefix}",
        )
        for nic in result.interfaces
        for address in nic.addrs
    ]
    return table(["Name", "MAC address", "Protocol", "Address"], rows)


def render_device(message: str) -> Render:
    """A device change, saying where it took effect."""

    def render(result: Result) -> str:
        assert isinstance(result, DeviceChange)
        if result.live:
            return message
        return f"{message} (to the persistent definition: it takes effect at the next start)"

    return render


# ------------------------------------------------------------- storage, snapshots --


def _size(size: int) -> str:
    """A size as virsh prints one: ``10.00 MiB``."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.2f} {units[unit]}"


def render_pools(result: Result) -> str:
    assert isinstance(result, PoolList)
    rows = [
        (p.name, "active" if p.active else "inactive", "yes" if p.autostart else "no")
        for p in result.pools
    ]
    return table(["Name", "State", "Autostart"], rows)


def render_pool_info(result: Result) -> str:
    assert isinstance(result, PoolRecord)
    lines = [
        ("Name:", result.name),
        ("UUID:", str(result.uuid)),
        ("State:", "running" if result.active else "inactive"),
        ("Persistent:", "yes" if result.persistent else "no"),
        ("Autostart:", "yes" if result.autostart else "no"),
        ("Capacity:", _size(result.capacity)),
        ("Allocation:", _size(result.allocation)),
        ("Available:", _size(result.available)),
    ]
    return "\n".join(f"{key:<16}{value}" for key, value in lines)


def render_volumes(result: Result) -> str:
    assert isinstance(result, VolumeList)
    return table(["Name", "Path"], [(v.name, v.path) for v in result.volumes])


def render_volume_info(result: Result) -> str:
    assert isinstance(result, VolumeRecord)
    lines = [
        ("Name:", result.name),
        ("Type:", "dir"),
        ("Capacity:", _size(result.capacity)),
        ("Allocation:", _size(result.allocation)),
    ]
    return "\n".join(f"{key:<16}{value}" for key, value in lines)


def render_snapshots(result: Result) -> str:
    assert isinstance(result, SnapshotList)
    rows = [
        (
            s.name,
            datetime.fromtimestamp(s.creation_time, UTC).strftime("%Y-%m-%d %H:%M:%S +0000"),
            s.state,
        )
        for s in result.snapshots
    ]
    return table(["Name", "Creation Time", "State"], rows)


def snapshot_line(message: str) -> Render:
    """A snapshot record as one line, ``{name}`` filled in."""

    def render(result: Result) -> str:
        assert isinstance(result, SnapshotRecord)
        return message.format(name=result.name)

    return render
