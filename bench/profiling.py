"""Profiling windows with pyinstrument, and a summary a report can quote.

A window is opened and closed while a process runs (by a signal for agent processes, by
a command for fleet workers), so a profile shows only the measured part of a benchmark,
not start-up. pyinstrument samples the main thread every 0.2 ms (a fleet worker's, every
millisecond; async mode off: every task the event loop runs is in it). Time spent
waiting in the event loop (asyncio's ``select``, or uvloop's loop in C) is idle;
percentages are of busy (non-idle) time, and the call tree shows the busy time only.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyinstrument import Profiler
    from pyinstrument.session import Session

TOP = 15
REPO_ROOT = str(Path(__file__).resolve().parent.parent) + "/"
INTERVAL_S = 0.0002
"""An agent's work on one command or event comes in bursts under a millisecond; sampled
every millisecond, a burst that follows a wait would be counted as waiting."""
BUSY_INTERVAL_S = 0.001
"""For processes busy most of the time (fleet workers): a sample every 0.2 ms of hundreds
of busy seconds would hold millions of stacks."""


@dataclass(frozen=True)
class Frame:
    function: str
    path: str
    line: str

    @property
    def builtin(self) -> bool:
        return self.path == "<built-in>"

    def label(self) -> str:
        return f"{self.function} ({short_path(self.path)}:{self.line})"


def parse_frame(identifier: str) -> Frame:
    bare = identifier.split("\x01", 1)[0]
    parts = bare.split("\x00")
    while len(parts) < 3:
        parts.append("")
    return Frame(parts[0], parts[1], parts[2])


def short_path(path: str) -> str:
    if path == "<built-in>":
        return path
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.removeprefix(REPO_ROOT)


def package_of(frame: Frame) -> str:
    path = short_path(frame.path)
    if path.startswith(("agent/", "schemas/", "bench/", "tests/")):
        return path.split("/", 1)[0]
    head = path.split("/", 1)[0].removesuffix(".py")
    return {"aio_pika": "aio-pika", "aiormq": "aiormq", "pamqp": "pamqp"}.get(head, head)


def _idle(frames: list[Frame]) -> bool:
    """Waiting in the event loop: asyncio's ``select``, or uvloop's loop, whose wait is C
    code that pyinstrument sees as the asyncio runner's own frame."""
    innermost = [f for f in frames if not f.builtin][-1:]
    return any(f.function == "select" and f.path.endswith("selectors.py") for f in frames) or (
        bool(innermost) and innermost[0].path.endswith("asyncio/runners.py")
    )


def _leaf_label(frames: list[Frame]) -> tuple[str, str]:
    """The leaf's label and package; a C function is named with its Python caller."""
    leaf = frames[-1]
    if leaf.builtin and len(frames) > 1:
        caller = frames[-2]
        return f"{leaf.function} [C] ← {caller.label()}", package_of(caller)
    return leaf.label(), package_of(leaf)


def busy_samples(
    records: Iterable[tuple[list[str], float]],
) -> Iterator[tuple[list[str], list[Frame], float]]:
    """The samples taken while the event loop was not waiting: stack, frames, seconds."""
    for stack, seconds in records:
        frames = [f for f in map(parse_frame, stack) if f.path != "<thread>"]
        if frames and not _idle(frames):
            yield stack, frames, seconds


def summarize(session: Session) -> dict[str, Any]:
    records: list[tuple[list[str], float]] = list(session.frame_records)
    total = sum(seconds for _, seconds in records)
    self_time: defaultdict[str, float] = defaultdict(float)
    inclusive: defaultdict[str, float] = defaultdict(float)
    packages: defaultdict[str, float] = defaultdict(float)
    busy = 0.0
    for _, frames, seconds in busy_samples(records):
        busy += seconds
        label, package = _leaf_label(frames)
        self_time[label] += seconds
        packages[package] += seconds
        for name in {f.label() for f in frames}:
            inclusive[name] += seconds

    def top(times: dict[str, float], skip_above: float = 1.01) -> list[dict[str, Any]]:
        rows = []
        for name, seconds in sorted(times.items(), key=lambda item: -item[1]):
            share = seconds / busy if busy else 0.0
            if share >= skip_above:
                continue
            rows.append({"frame": name, "pct": round(100 * share, 1), "s": round(seconds, 3)})
            if len(rows) == TOP:
                break
        return rows

    return {
        "wall_s": round(total, 3),
        "busy_s": round(busy, 3),
        "busy_pct": round(100 * busy / total, 1) if total else 0.0,
        "top_self": top(self_time),
        # frames on (nearly) every busy stack, such as the event loop's own, say nothing
        "top_inclusive": top(inclusive, skip_above=0.9),
        "by_package": top(packages),
    }


def busy_call_tree(session: Session) -> str:
    """pyinstrument's call tree of the busy samples only: the time waited in the event
    loop is left out, so that a frame is shown when it took 1 % of the busy time (of
    the wall time, most of a latency benchmark's work would fall under that)."""
    from pyinstrument import session as sessions
    from pyinstrument.renderers import ConsoleRenderer

    records = [(stack, seconds) for stack, _, seconds in busy_samples(session.frame_records)]
    duration = sum(seconds for _, seconds in records)
    busy = sessions.Session(
        frame_records=records,
        start_time=session.start_time,
        duration=duration,
        min_interval=session.min_interval,
        max_interval=session.max_interval,
        sample_count=len(records),
        start_call_stack=session.start_call_stack,
        target_description=(
            f"{session.target_description}; busy {duration:.2f} s "
            f"of {session.duration:.2f} s (the event loop's waits left out)"
        ),
        cpu_time=session.cpu_time,
        sys_path=session.sys_path,
        sys_prefixes=session.sys_prefixes,
    )
    return ConsoleRenderer(unicode=True, color=False, show_all=False).render(busy)


class Window:
    """Profiles between ``start`` and ``stop``; each ``stop`` writes ``<prefix>-<n>.json``
    (the summary) and ``<prefix>-<n>.txt`` (pyinstrument's call tree)."""

    def __init__(self, prefix: str, interval_s: float = INTERVAL_S) -> None:
        self.prefix = prefix
        self.interval_s = interval_s
        self.count = 0
        self._profiler: Profiler | None = None

    def start(self) -> None:
        from pyinstrument import Profiler

        if self._profiler is not None:
            return
        self._profiler = Profiler(interval=self.interval_s, async_mode="disabled")
        self._profiler.start()

    def stop(self) -> Path | None:
        profiler, self._profiler = self._profiler, None
        if profiler is None:
            return None
        session = profiler.stop()
        path = Path(f"{self.prefix}-{self.count}.json")
        self.count += 1
        path.with_suffix(".txt").write_text(busy_call_tree(session))
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(summarize(session)))
        os.replace(partial, path)
        return path
