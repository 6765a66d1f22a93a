"""The published run: its results file, its profiles, and the docs' tables made from it.

``bench/run.sh --publish`` runs the full suite (every benchmark that misses a goal is
run once more under the profiler), then calls ``adopt``: the run's results go to
``bench/published/results.json`` and the profiles of its missed goals to
``bench/published/profiles/<timestamp>/``, replacing the previous run's; then the
tables of the docs are generated from that file (``write``). Commit the three together.

``python -m bench.publish`` regenerates the tables from the committed results file;
``python -m bench.publish --check`` fails if a page does not show what the file holds
(tests/unit/test_bench.py runs the check). A page marks a generated part with
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` on lines of their own; what lies
between is overwritten.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import goals_table, misses, run_lines

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "bench" / "published"
RESULTS_FILE = PUBLISHED / "results.json"
PROFILES = PUBLISHED / "profiles"

Document = dict[str, Any]
Render = Callable[[Document | None], str]


def load(path: Path = RESULTS_FILE) -> Document | None:
    """The published results, or None if no run has been published."""
    try:
        document: Document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return document


NOT_YET = (
    "No run has been published yet. `bench/run.sh --publish` runs the full suite and "
    "writes `bench/published/results.json`, from which this part is generated."
)


def results_section(document: Document | None) -> str:
    """The run (command, machine, commit, load), its goals, and for each missed goal the
    profile that says where the time goes."""
    if document is None:
        return NOT_YET
    run, results = document["run"], document["results"]
    lines = [
        f"Run `{run['timestamp']}` ({'quick' if run['quick'] else 'full'}), "
        "generated from `bench/published/results.json`:",
        "",
        *run_lines(run),
        "",
        *goals_table(results),
    ]
    missed = misses(results)
    if missed:
        lines += [
            "Where the time goes, for each goal missed: the call trees (pyinstrument) of "
            "the benchmark's profiled re-run in the same run, committed with the results:",
            "",
            *missed,
        ]
    return "\n".join(lines).rstrip()


def _cpu(metrics: Any, *keys: str) -> dict[str, float] | None:
    for key in keys:
        if not isinstance(metrics, dict):
            return None
        metrics = metrics.get(key)
    return metrics if isinstance(metrics, dict) and metrics else None


def _us(cpu: dict[str, float] | None, *names: str) -> str:
    if cpu is None:
        return "n/a"
    for name in names:
        value = cpu.get(name)
        if isinstance(value, int | float) and not math.isnan(value):
            return f"{value:,.0f} µs"
    return "n/a"


def unit_costs(document: Document | None) -> str:
    """CPU per unit of work (broker, agent side, client side), from the published run."""
    if document is None:
        return NOT_YET
    by_id = {result["id"]: result.get("metrics", {}) for result in document["results"]}
    rows: list[tuple[str, dict[str, float] | None, str]] = []
    for queue_type in ("classic", "quorum"):
        rows.append(
            (
                f"one bare RPC, echo server in place of the agent ({queue_type})",
                _cpu(by_id.get("B2"), queue_type, "echo_cpu_us_per_call"),
                "B2, the echo beside the agent, 64 in flight",
            )
        )
        rows.append(
            (
                f"one `domain.get_state` ({queue_type})",
                _cpu(by_id.get("B2"), queue_type, "cpu_us_per_call"),
                "B2, 64 in flight",
            )
        )
        rows.append(
            (
                f"one broadcast reply, typed client ({queue_type})",
                _cpu(by_id.get("B5"), queue_type, "cpu_us_per_reply"),
                "B5",
            )
        )
    b8 = by_id.get("B8", {})
    hosts = b8.get("hosts", "?") if isinstance(b8, dict) else "?"
    rows.append(
        (
            "one broadcast reply, plain client (classic)",
            _cpu(b8, "cpu_us_per_reply"),
            f"B8, {hosts:,} hosts" if isinstance(hosts, int) else "B8",
        )
    )
    rows.append(
        ("one domain event fanned in to one subscriber", _cpu(b8, "cpu_us_per_event"), "B8")
    )
    lines = [
        f"Generated from `bench/published/results.json` (run `{document['run']['timestamp']}`):",
        "",
        "| unit | broker | agent (or echo) | client | source |",
        "|---|---|---|---|---|",
    ]
    for unit, cpu, source in rows:
        lines.append(
            f"| {unit} | {_us(cpu, 'broker')} | {_us(cpu, 'server', 'agents')} | "
            f"{_us(cpu, 'client')} | {source} |"
        )
    return "\n".join(lines)


def _get(metrics: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(metrics, dict):
            return None
        metrics = metrics.get(key)
    return metrics


def _num(value: Any, unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "n/a"
    return f"{value / scale:,.{digits}f}{unit}"


def _by_id(document: Document) -> dict[str, Any]:
    return {result["id"]: result.get("metrics", {}) for result in document["results"]}


def memory(document: Document | None) -> str:
    """Broker memory per agent, from B5 (one connection per agent) and B8 (shared)."""
    if document is None:
        return NOT_YET
    b5, b8 = _by_id(document).get("B5"), _by_id(document).get("B8")

    def kib(*keys: str) -> str:
        return _num(_get(b5, *keys), " KiB", 1024)

    rows = [
        ("connection processes", "connections", "B5, one connection per agent"),
        ("channel", "channels", "B5"),
        ("host queue process", "queues", "B5"),
        ("everything the fleet added, per agent", "total", "B5"),
    ]
    lines = [
        f"Generated from `bench/published/results.json` (run `{document['run']['timestamp']}`):",
        "",
        "| per agent | classic host queue | quorum host queue | source |",
        "|---|---|---|---|",
    ]
    for label, key, source in rows:
        classic = kib("classic", "broker_bytes_per_agent", key)
        quorum = kib("quorum", "broker_bytes_per_agent", key)
        if key == "queues":
            classic += f" (`list_queues`: {kib('classic', 'broker_bytes_per_queue', 'classic')})"
            quorum += f" (`list_queues`: {kib('quorum', 'broker_bytes_per_queue', 'quorum')})"
        lines.append(f"| {label} | {classic} | {quorum} | {source} |")
    hosts = _get(b8, "hosts")
    lines.append(
        "| channel + queue + bindings, no own connection | "
        f"{_num(_get(b8, 'broker_bytes_per_agent', 'total'), ' KiB', 1024)} | | "
        f"B8, {_num(hosts)} agents over shared connections |"
    )
    return "\n".join(lines)


def queue_types(document: Document | None) -> str:
    """Classic against quorum host queues, from B2 (echo and agent side by side) and B5."""
    if document is None:
        return NOT_YET
    b2, b5 = _by_id(document).get("B2"), _by_id(document).get("B5")

    def both(make: Callable[[str], str]) -> str:
        return f"{make('classic')} | {make('quorum')}"

    lines = [
        f"Generated from `bench/published/results.json` (run `{document['run']['timestamp']}`):",
        "",
        "| | classic | quorum | measured |",
        "|---|---|---|---|",
        "| bare RPC p50 (1 in flight) | "
        + both(lambda q: _num(_get(b2, q, "echo_p50_ms"), " ms", digits=2))
        + " | B2, the echo beside the agent; on a cluster add a round trip to a follower |",
        "| throughput at 64 in flight (echo / get_state) | "
        + both(
            lambda q: (
                _num(_get(b2, q, "echo_rate_64"), "/s") + " / " + _num(_get(b2, q, "rate_64"), "/s")
            )
        )
        + " | B2 |",
        "| broadcast gather, 50 agents, p50 | "
        + both(lambda q: _num(_get(b5, q, "gather_ms", "p50"), " ms", digits=1))
        + " | B5 |",
        "| broker CPU per broadcast reply | "
        + both(lambda q: _num(_get(b5, q, "cpu_us_per_reply", "broker"), " µs"))
        + " | B5 |",
        "| memory per host queue (`list_queues`) | "
        + both(lambda q: _num(_get(b5, q, "broker_bytes_per_queue", q), " KiB", 1024))
        + " | B5; quorum has it on every node |",
        "| a node is lost | its host queues are gone until it returns: a third of the fleet "
        "cannot be commanded, and its agents cannot redeclare the queue elsewhere | the queue "
        "elects a new leader; commands keep flowing | by design |",
    ]
    return "\n".join(lines)


TARGETS: dict[str, dict[str, Render]] = {
    "docs/benchmarks.md": {"results": results_section},
    "bench/SCALING.md": {"memory": memory, "unit-costs": unit_costs, "queue-types": queue_types},
}
"""Each page (relative to the repository) and the generated parts it marks."""


def marker(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(^<!-- bench:{re.escape(name)} -->\n)(.*?)(^<!-- /bench:{re.escape(name)} -->$)",
        re.MULTILINE | re.DOTALL,
    )


def fill(text: str, name: str, content: str) -> str:
    """``text`` with the part marked ``name`` replaced by ``content``."""
    pattern = marker(name)
    if not pattern.search(text):
        raise ValueError(f"no <!-- bench:{name} --> … <!-- /bench:{name} --> in the page")
    return pattern.sub(lambda m: m.group(1) + content.rstrip() + "\n" + m.group(3), text, 1)


def render(root: Path = REPO, document: Document | None = None) -> dict[Path, str]:
    """Every target page as it should read for ``document`` (default: the committed
    results file)."""
    if document is None:
        document = load(root / RESULTS_FILE.relative_to(REPO))
    pages = {}
    for relative, parts in TARGETS.items():
        path = root / relative
        text = path.read_text(encoding="utf-8")
        for name, make in parts.items():
            text = fill(text, name, make(document))
        pages[path] = text
    return pages


def stale(root: Path = REPO) -> list[Path]:
    """The pages that do not show what the committed results file holds."""
    return [path for path, text in render(root).items() if path.read_text("utf-8") != text]


def write(root: Path = REPO) -> list[Path]:
    """Regenerate the pages; the ones that changed."""
    changed = []
    for path, text in render(root).items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def adopt(results: Path, root: Path = REPO) -> Path:
    """Make the run in ``results`` (a ``<timestamp>.json`` of ``python -m bench``) the
    published one: copy it to ``bench/published/results.json`` and the profiles its
    missed goals point to under ``bench/published/profiles/<timestamp>/``, with the
    paths in the file rewritten to those copies."""
    document: Document = json.loads(results.read_text(encoding="utf-8"))
    stamp = document["run"]["timestamp"]
    published = root / PUBLISHED.relative_to(REPO)
    profiles = root / PROFILES.relative_to(REPO)
    shutil.rmtree(profiles, ignore_errors=True)
    target = profiles / stamp
    copied: dict[str, str] = {}

    def keep(path: str) -> str:
        if path not in copied:
            source = Path(path)
            target.mkdir(parents=True, exist_ok=True)
            for companion in (source, source.with_suffix(".json")):
                if companion.exists():
                    shutil.copy2(companion, target / companion.name)
            copied[path] = str((target / source.name).relative_to(root))
        return copied[path]

    for result in document["results"]:
        missed = any(not goal["met"] for goal in result["goals"])
        for goal in result["goals"]:
            goal["profiles"] = [keep(path) for path in goal.get("profiles") or []]
        for profile in result.get("profiles") or []:
            if missed and profile.get("call_tree"):
                profile["call_tree"] = keep(profile["call_tree"])
    document["goals"] = [goal for result in document["results"] for goal in result["goals"]]
    published.mkdir(parents=True, exist_ok=True)
    path = published / "results.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if a page differs from the results file"
    )
    args = parser.parse_args(argv)
    if args.check:
        behind = stale()
        for path in behind:
            print(f"{path.relative_to(REPO)} does not match {RESULTS_FILE.relative_to(REPO)}")
        return 1 if behind else 0
    for path in write():
        print(f"rewrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
