"""Everything the CLI prints: virsh's tables and lines for people, JSON for scripts,
errors as ``error: <message>`` on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel

from schemas.codes import DomainState
from schemas.domain import DomainRecord
from schemas.events import (
    AgentEvent,
    Event,
    HealthEvent,
    LifecycleEvent,
    MetadataChangeEvent,
    RebootEvent,
    TunableEvent,
)
from schemas.replies import (
    ConsoleOutput,
    DomainInfo,
    DomainList,
    DomainStateInfo,
    DomainXml,
    Metadata,
    Result,
)

if TYPE_CHECKING:
    from agent.client import BroadcastResult, HostStatus

STATE_NAMES = {
    DomainState.NOSTATE: "no state",
    DomainState.RUNNING: "running",
    DomainState.BLOCKED: "idle",
    DomainState.PAUSED: "paused",
    DomainState.SHUTDOWN: "in shutdown",
    DomainState.SHUTOFF: "shut off",
    DomainState.CRASHED: "crashed",
    DomainState.PMSUSPENDED: "pmsuspended",
}
REASON_NAMES: dict[tuple[int, int], str] = {
    (1, 0): "unknown",
    (1, 1): "booted",
    (1, 5): "unpaused",
    (3, 0): "unknown",
    (3, 1): "user",
    (5, 0): "unknown",
    (5, 1): "shutdown",
    (5, 2): "destroyed",
    (5, 3): "crashed",
    (5, 6): "failed",
    (6, 0): "unknown",
}
Render = Callable[[Result], str]
"""A verb's result as text."""


def state_name(state: int) -> str:
    return STATE_NAMES.get(DomainState(state), "unknown")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """virsh's layout: a leading space, aligned columns, a rule under the headers."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return " " + "   ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    rule = "-" * (sum(widths) + 3 * (len(widths) - 1) + 2)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


class Output:
    """Where results go: text for people or JSON for scripts; errors always to stderr."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err

    def result(self, value: Any, text: str) -> None:
        if self.as_json:
            json.dump(jsonable(value), self.out, indent=2, default=str)
            self.out.write("\n")
        elif text:
            print(text, file=self.out)

    def error(self, message: str) -> None:
        print(f"error: {message}", file=self.err)


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    return value


def record_line(message: str) -> Render:
    """A domain record as one line, ``{name}`` filled in."""

    def render(result: Result) -> str:
        name = result.name if isinstance(result, DomainRecord) else "?"
        return message.format(name=name)

    return render


def render_list(result: Result) -> str:
    assert isinstance(result, DomainList)
    rows = [(d.id if d.id > 0 else "-", d.name, state_name(d.state)) for d in result.domains]
    return table(["Id", "Name", "State"], rows)


def render_state(with_reason: bool) -> Render:
    def render(result: Result) -> str:
        assert isinstance(result, DomainStateInfo)
        name = state_name(result.state)
        if with_reason:
            name += f" ({REASON_NAMES.get((result.state, result.reason), 'unknown')})"
        return name

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


def render_field(field: str) -> Render:
    def render(result: Result) -> str:
        assert isinstance(result, DomainRecord)
        value = getattr(result, field)
        return "-" if field == "id" and value < 0 else str(value)

    return render


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
        if result.expected is None:
            summary = f"{len(result.replies)} hosts answered"
        else:
            answered = len(result.expected & result.replies.keys())
            others = len(result.replies) - answered
            summary = f"{answered}/{len(result.expected)} expected hosts answered"
            summary += f" (+{others} others)" if others else ""
        summary += f" in {result.elapsed_s:.2f} s"
        self._stream.write(f"\r{summary}\x1b[K\n" if self._live else f"{summary}\n")
