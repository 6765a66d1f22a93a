"""The run's results as JSON (everything) and as a Markdown report (the table)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.core import ABSOLUTE, DIFFERENCE, RATIO, TRACE_MARK, BenchResult, Table, fmt
from bench.machine import one_line


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _table(table: Table) -> list[str]:
    lines = [f"**{table.title}**", "", _row(table.headers)]
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    lines += [_row(row) for row in table.rows]
    return [*lines, ""]


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    text = fmt(float(value))
    return f"{text}{unit}" if unit.startswith(("/", "%")) else f"{text} {unit}".rstrip()


TIMES, MINUS = "\u00d7", "\u2212"


def _value(goal: dict[str, Any]) -> str:
    value = goal["value"]
    if goal["kind"] == RATIO:
        return "n/a" if value is None or math.isnan(value) else f"{fmt(value)}{TIMES}"
    if goal["kind"] == DIFFERENCE:
        sign = "+" if value >= 0 else MINUS
        return f"{sign}{_number(abs(value), goal['unit'])}"
    return _number(value, goal["unit"])


def _baseline(goal: dict[str, Any]) -> str:
    if goal["kind"] == ABSOLUTE:
        return f"none: fixed bound ({goal['baseline_what']})"
    when = (
        f"interleaved, {goal['rounds']} round{'s' if goal['rounds'] > 1 else ''}"
        if goal["interleaved"] and goal["rounds"]
        else "at the same moment"
        if goal["interleaved"]
        else "**not interleaved**: measured earlier in the run"
    )
    return f"{goal['baseline_what']}: {_number(goal['baseline'], goal['unit'])} ({when})"


def _met(goal: dict[str, Any]) -> str:
    if goal["met"]:
        return "✓"
    if not goal.get("valid", True):
        return "✗ **missed** (a measurement check failed)"
    return "✗ **missed**"


GOAL_HEADERS = [
    "id",
    "goal",
    "virtbus",
    "baseline (same benchmark)",
    "ratio / Δ",
    "bound",
    "met",
    "machine (CPUs busy, load)",
]


def _machine(result: dict[str, Any]) -> str:
    load = (result.get("metrics") or {}).get("machine_load")
    if not isinstance(load, dict):
        return ""
    return f"{load['cpu_busy_pct']:.0f} %, {load['load_start']:.1f} → {load['load_end']:.1f}"


def goals_table(results: list[dict[str, Any]]) -> list[str]:
    """The goals of every benchmark (results as in the results file), one row each,
    followed by the errors of benchmarks that could not run."""
    lines = [_row(GOAL_HEADERS), "|" + "---|" * len(GOAL_HEADERS)]
    for result in results:
        if result.get("error"):
            lines.append(
                _row([result["id"], result["title"], "error", "", "", "", "✗", _machine(result)])
            )
        for goal in result["goals"]:
            what = goal["what"] + (f" ({goal['detail']})" if goal.get("detail") else "")
            lines.append(
                _row(
                    [
                        goal["bench"],
                        what,
                        _number(goal["subject"], goal["unit"]),
                        _baseline(goal),
                        _value(goal),
                        goal["goal"],
                        _met(goal),
                        _machine(result),
                    ]
                )
            )
    return [*lines, ""]


def _where(path: str, result: dict[str, Any]) -> str:
    """A profile's path, and what its summary says the busy time went to; or a trace's."""
    line = f"`{path}`"
    if TRACE_MARK in Path(path).name:
        return line + " (timestamped trace of the agent's steps, `python -m bench.trace`)"
    for profile in result.get("profiles") or []:
        if profile.get("call_tree") != path:
            continue
        packages = ", ".join(
            f"{row['frame']} {row['pct']:.0f} %" for row in (profile.get("by_package") or [])[:4]
        )
        line += (
            f" ({profile.get('window', '?')}: busy {profile.get('busy_s', 0):.2f} s of "
            f"{profile.get('wall_s', 0):.2f} s; {packages or 'no samples'})"
        )
        break
    return line


def misses(results: list[dict[str, Any]]) -> list[str]:
    """For each missed goal, where its profiles are and what they say (or that there is
    none)."""
    lines: list[str] = []
    for result in results:
        for goal in result["goals"]:
            if goal["met"]:
                continue
            paths = goal.get("profiles") or []
            if not paths:
                lines.append(
                    f"- {goal['bench']} {goal['what']}: no profile was taken (run with `--profile`)"
                )
                continue
            lines.append(f"- {goal['bench']} {goal['what']}:")
            lines += [f"    - {_where(path, result)}" for path in paths]
        if result.get("error"):
            lines.append(f"- {result['id']} could not run: `{result['error'][:300]}`")
    return lines


def markdown(run: dict[str, Any], results: list[BenchResult]) -> str:
    documents = [result.to_json() for result in results]
    lines = [
        f"# virtbus benchmarks — {run['timestamp']} ({'quick' if run['quick'] else 'full'} run)",
        "",
        *run_lines(run),
        "",
        "## Goals",
        "",
        *goals_table(documents),
    ]
    missed = misses(documents)
    if missed:
        lines += [
            "Where the time goes, for each goal missed (pyinstrument call trees, traces):",
            "",
        ]
        lines += [*missed, ""]
    for result in results:
        lines += [f"## {result.id}: {result.title}", ""]
        if result.error:
            lines += [f"Error: `{result.error}`", ""]
        for table in result.tables:
            lines += _table(table)
        lines += [f"- {note}" for note in result.notes]
        if result.notes:
            lines.append("")
        for profile in result.profiles:
            lines += _profile(profile)
    return "\n".join(lines).rstrip() + "\n"


def run_lines(run: dict[str, Any]) -> list[str]:
    """What a run was: command, machine, commit, load."""
    machine = run["machine"]
    waited = run.get("waited_s")
    return [
        f"- **Command**: `{run['command']}`, {run['duration_s']:.0f} s"
        + (f" (of which {waited:.0f} s waiting for a quiet machine)" if waited else ""),
        f"- **Machine**: {one_line(machine)}",
        f"- **Load average** (1/5/15 min) at start {_load(run, 'start')}, "
        f"at end {_load(run, 'end')}",
        "- Every goal is a ratio or a difference against a baseline measured in the same "
        "benchmark, in rounds alternating with the subject, unless its baseline column "
        "says otherwise.",
    ]


def _load(run: dict[str, Any], when: str) -> str:
    values = run.get("load_average", {}).get(when) or ()
    return " / ".join(f"{value:.2f}" for value in values) or "?"


def _profile(profile: dict[str, Any]) -> list[str]:
    lines = [
        f"**Profile** ({profile['process']}, window: {profile['window']}): "
        f"{profile['busy_s']:.2f} s busy of {profile['wall_s']:.2f} s "
        f"({profile['busy_pct']:.0f} %); call tree: `{profile['call_tree']}`",
        "",
        _row(["self time (% of busy)", "frame"]),
        "|---|---|",
    ]
    lines += [_row([f"{row['pct']} %", f"`{row['frame']}`"]) for row in profile["top_self"][:10]]
    lines += ["", _row(["inclusive (% of busy)", "frame"]), "|---|---|"]
    lines += [
        _row([f"{row['pct']} %", f"`{row['frame']}`"]) for row in profile["top_inclusive"][:12]
    ]
    lines += ["", _row(["package (self, % of busy)", ""]), "|---|---|"]
    lines += [_row([f"{row['pct']} %", row["frame"]]) for row in profile["by_package"][:8]]
    return [*lines, ""]


def write(directory: Path, run: dict[str, Any], results: list[BenchResult]) -> tuple[Path, str]:
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "run": run,
        "results": [result.to_json() for result in results],
        "goals": [asdict(goal) for result in results for goal in result.goals],
    }
    path = directory / f"{run['timestamp']}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    text = markdown(run, results)
    (directory / "latest.md").write_text(text)
    (directory / f"{run['timestamp']}.md").write_text(text)
    return path, text
