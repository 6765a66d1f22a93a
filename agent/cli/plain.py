"""What the one-command verbs print, loadable without the models: where output goes
(text for people, JSON for scripts, errors as ``error: <message>`` on stderr), virsh's
tables and state names, and the renderers of results decoded from JSON
(``agent.client.wire``). ``output`` has the renderers of typed results and re-exports
these."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, TextIO

STATE_NAMES = {
    0: "no state",
    1: "running",
    2: "idle",
    3: "paused",
    4: "in shutdown",
    5: "shut off",
    6: "crashed",
    7: "pmsuspended",
}
"""virsh's words for libvirt's virDomainState numbers (``schemas.codes.DomainState``,
not loaded here: a test checks they agree)."""
REASON_NAMES: dict[tuple[int, int], str] = {
    (1, 0): "unknown",
    (1, 1): "booted",
    (1, 4): "from snapshot",
    (1, 5): "unpaused",
    (3, 0): "unknown",
    (3, 1): "user",
    (5, 0): "unknown",
    (5, 1): "shutdown",
    (5, 2): "destroyed",
    (5, 3): "crashed",
    (5, 6): "failed",
    (5, 7): "from snapshot",
    (6, 0): "unknown",
}
JsonRender = Callable[[Any], str]
"""A verb's result, decoded from JSON, as text."""


def state_name(state: int) -> str:
    return STATE_NAMES.get(state, "unknown")


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
    """``value`` as JSON types: a model as the wire has it (no None fields)."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    return value


def record_line(message: str) -> JsonRender:
    """A domain record as one line, ``{name}`` filled in."""

    def render(result: Any) -> str:
        name = result.get("name", "?") if isinstance(result, dict) else "?"
        return message.format(name=name)

    return render


def render_list(result: Any) -> str:
    rows = [
        (d["id"] if d.get("id", -1) > 0 else "-", d["name"], state_name(d["state"]))
        for d in result["domains"]
    ]
    return table(["Id", "Name", "State"], rows)


def render_state(with_reason: bool) -> JsonRender:
    def render(result: Any) -> str:
        state, reason = result["state"], result["reason"]
        name = state_name(state)
        if with_reason:
            name += f" ({REASON_NAMES.get((state, reason), 'unknown')})"
        return name

    return render


def render_xml(result: Any) -> str:
    return str(result["xml"]).rstrip("\n")


def render_field(field: str) -> JsonRender:
    def render(result: Any) -> str:
        value = result[field]
        return "-" if field == "id" and value < 0 else str(value)

    return render


def host_answer(host: str, reply: dict[str, Any], render: JsonRender) -> str:
    """One host's answer to a broadcast, under ``== HOST``."""
    error = reply.get("error")
    if isinstance(error, dict):
        return f"== {host}\nerror: {error.get('message', '')}"
    result = reply.get("result")
    return f"== {host}" + (f"\n{render(result)}" if result is not None else "")


def broadcast_summary(
    answered: Collection[str], expected: Collection[str] | None, elapsed_s: float
) -> str:
    """How many hosts answered a broadcast, of those expected, and how fast."""
    if expected is None:
        summary = f"{len(answered)} hosts answered"
    else:
        of_them = len(set(expected) & set(answered))
        others = len(answered) - of_them
        summary = f"{of_them}/{len(expected)} expected hosts answered"
        summary += f" (+{others} others)" if others else ""
    return summary + f" in {elapsed_s:.2f} s"
