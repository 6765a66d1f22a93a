"""The run's results as JSON (everything) and as a Markdown report (the table)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.core import BenchResult, Table, fmt
from bench.machine import one_line


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _table(table: Table) -> list[str]:
    lines = [f"**{table.title}**", "", _row(table.headers)]
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    lines += [_row(row) for row in table.rows]
    return [*lines, ""]


def _measured(value: float, unit: str) -> str:
    text = fmt(value) if isinstance(value, float) else str(value)
    if unit in ("", "x"):
        return f"{text}{unit}"
    return f"{text} {unit}"


def markdown(run: dict[str, Any], results: list[BenchResult]) -> str:
    machine = run["machine"]
    lines = [
        f"# virtbus benchmarks — {run['timestamp']} ({'quick' if run['quick'] else 'full'} run)",
        "",
        f"- **Command**: `{run['command']}` (in `{run['cwd']}`), {run['duration_s']:.0f} s"
        + (
            f" (of which {run['waited_s']:.0f} s waiting for a quiet machine)"
            if run.get("waited_s")
            else ""
        ),
        f"- **Machine**: {one_line(machine)}",
        f"- **Load average** (1/5/15 min) at start {_load(run, 'start')}, "
        f"at end {_load(run, 'end')}",
        "- Every figure is set against a baseline measured in the same run: raw aiodocker "
        "calls (Docker side), a bare aio-pika RPC echo between two processes (bus side), "
        "the `docker` CLI (operator side).",
        "",
        "## Goals",
        "",
        _row(["id", "measure", "measured", "goal", "met", "context"]),
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        if result.error:
            lines.append(_row([result.id, result.title, "error", "", "✗", result.error[:200]]))
        for goal in result.goals:
            lines.append(
                _row(
                    [
                        goal.bench,
                        goal.what,
                        _measured(goal.measured, goal.unit),
                        goal.goal,
                        "✓" if goal.met else "✗ **missed**",
                        goal.detail,
                    ]
                )
            )
    lines.append("")
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
