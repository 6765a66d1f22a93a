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

from bench.b8_fleet import CPU_RATIO_GOAL, GATHER_GOAL_S
from bench.report import TIMES, goals_table, misses, run_lines

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
            "the benchmark's profiled re-run in the same run and, for B1 and B3, a "
            "timestamped trace of the agent's steps, committed with the results:",
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
    """CPU per unit of work (broker, agent side, client side), from the published run;
    B8's broadcast reply by both gather paths, and the library's share of the old one."""
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
    fleet = f"B8, {hosts:,} hosts" if isinstance(hosts, int) else "B8"
    rows.append(
        (
            "one broadcast reply, client library's gather (direct reply-to; classic)",
            _cpu(b8, "cpu_us_per_reply"),
            fleet,
        )
    )
    rows.append(
        (
            "one broadcast reply, old gather path (reply queue, plain aio-pika; classic)",
            _cpu(b8, "baseline_cpu_us_per_reply"),
            f"{fleet}, alternating rounds with the library's",
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
    ratios = _get(b8, "cpu_per_reply_ratio")
    lines += [
        "",
        "The library's gather against the old path, CPU per reply (B8's goal: at most "
        f"0.5): broker {_num(_get(ratios, 'broker'), digits=2)}, gatherer "
        f"{_num(_get(ratios, 'client'), digits=2)}. The broker is shared with other "
        "clients: its figure has its rate in the second before each gather taken off "
        f"(without that: {_us(_cpu(b8, 'cpu_us_per_reply'), 'broker (raw)')} against "
        f"{_us(_cpu(b8, 'baseline_cpu_us_per_reply'), 'broker (raw)')}).",
    ]
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


CLUSTER_HOSTS = 10_000
CLUSTER_NODES = 3
NODE_CORES = 4
HEARTBEAT_S = 10
BURST_EVENTS = 200_000
"""The fleet SCALING.md's arithmetic is for: hosts, broker nodes, cores per node, the
heartbeat period, and the domain events after a fleet-wide restart (20 per host)."""


def _n(value: Any, digits: int = 0) -> str:
    return _num(value, digits=digits)


def _ok(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not math.isnan(v) for v in values)


def _heading(document: Document) -> str:
    return f"Generated from `bench/published/results.json` (run `{document['run']['timestamp']}`)"


def fleet_arithmetic(document: Document | None) -> str:
    """A broadcast's CPU on the test box, from B8's CPU per reply (library path)."""
    if document is None:
        return NOT_YET
    b8 = _by_id(document).get("B8")
    cores = _get(document, "run", "machine", "cores")
    hosts = _get(b8, "hosts")
    broker = _get(b8, "cpu_us_per_reply", "broker")
    agents = _get(b8, "cpu_us_per_reply", "agents")
    client = _get(b8, "cpu_us_per_reply", "client")
    p50_ms = _get(b8, "gather_ms", "p50")
    if not _ok(cores, hosts, broker, agents, client, p50_ms):
        return f"{_heading(document)}: B8's CPU per reply is not in this run."
    per_reply = broker + agents + client
    cpu_s = hosts * per_reply / 1e6
    return (
        f"{_heading(document)}: on the test box ({cores} cores) a broadcast to "
        f"{hosts:,} simulated hosts costs {hosts:,} {TIMES} ({broker:,.0f} + {agents:,.0f} + "
        f"{client:,.0f}) µs (broker + agents + gatherer, the library's gather) = "
        f"{cpu_s:,.2f} CPU seconds, {cpu_s / cores:,.2f} s on {cores} cores if nothing "
        f"else runs; the measured gather p50 was {p50_ms / 1000:,.2f} s. "
        f"{agents / per_reply:.0%} of that CPU is the simulated agents'. In a real fleet "
        f"each agent has its own host and spends its {agents:,.0f} µs in parallel with "
        f"all the others; what stays shared is the broker's {broker:,.0f} µs and the "
        f"gatherer's {client:,.0f} µs per reply."
    )


def cluster_fanout(document: Document | None) -> str:
    """The broker's and the gatherer's share of a broadcast to the cluster's fleet."""
    if document is None:
        return NOT_YET
    b8 = _by_id(document).get("B8")
    broker = _get(b8, "cpu_us_per_reply", "broker")
    client = _get(b8, "cpu_us_per_reply", "client")
    if not _ok(broker, client):
        return f"{_heading(document)}: B8's CPU per reply is not in this run."
    broker_s = CLUSTER_HOSTS * broker / 1e6
    gatherer_s = CLUSTER_HOSTS * client / 1e6
    per_node = broker_s / CLUSTER_NODES
    return "\n".join(
        [
            f"{_heading(document)}, B8's CPU per reply of the library's gather:",
            "",
            f"- *Broker*: {CLUSTER_HOSTS:,} {TIMES} {broker:,.0f} µs = {broker_s:,.2f} CPU "
            f"seconds per broadcast, {per_node:,.2f} s per node; on {NODE_CORES}-core "
            f"nodes about {per_node / NODE_CORES:,.2f} s of wall time if the work spreads.",
            f"- *One gatherer*: {client:,.0f} µs per reply, {gatherer_s:,.2f} s of one "
            f"core for {CLUSTER_HOSTS:,} replies (plus the `Reply` models, if the caller "
            "reads them all).",
            "",
            f"So expect about {max(gatherer_s, per_node / NODE_CORES):,.1f} s to gather "
            f"{CLUSTER_HOSTS:,} replies with one Python gatherer that only needs to know "
            "who answered and who failed.",
        ]
    )


def cluster_memory(document: Document | None) -> str:
    """Broker memory per node for the cluster's fleet, from B5's per-agent figures."""
    if document is None:
        return NOT_YET
    b5 = _by_id(document).get("B5")
    per_node = -(-CLUSTER_HOSTS // CLUSTER_NODES)
    classic = _get(b5, "classic", "broker_bytes_per_agent", "total")
    connection = _get(b5, "quorum", "broker_bytes_per_agent", "connections")
    channel = _get(b5, "quorum", "broker_bytes_per_agent", "channels")
    member = _get(b5, "quorum", "broker_bytes_per_queue", "quorum")
    if not _ok(classic, connection, channel, member):
        return f"{_heading(document)}: B5's memory per agent is not in this run."
    kib = 1024
    quorum = per_node * (connection + channel) + CLUSTER_HOSTS * member
    return (
        f"{_heading(document)}, B5's memory per agent: with classic host queues "
        f"{per_node:,} {TIMES} {classic / kib:,.0f} KiB ≈ {per_node * classic / kib**3:,.2f} GiB "
        "per node. With quorum queues every host queue has a member on each of the "
        f"{CLUSTER_NODES} nodes ({CLUSTER_HOSTS:,} members per node, a third of them "
        f"leaders): {per_node:,} {TIMES} ({connection / kib:,.0f} + {channel / kib:,.0f}) KiB "
        f"of connections and channels plus {CLUSTER_HOSTS:,} {TIMES} {member / kib:,.0f} KiB of "
        f"queue members ≈ {quorum / kib**3:,.2f} GiB per node, before any message or "
        "Raft log (the WAL and its memory tables come on top)."
    )


def event_rates(document: Document | None) -> str:
    """Presence and domain-event load, from B8's CPU per fanned-in event."""
    if document is None:
        return NOT_YET
    b8 = _by_id(document).get("B8")
    broker = _get(b8, "cpu_us_per_event", "broker")
    client = _get(b8, "cpu_us_per_event", "client")
    rate = _get(b8, "fan_in_rate")
    hosts = _get(b8, "hosts")
    if not _ok(broker, client, rate, hosts):
        return f"{_heading(document)}: B8's CPU per event is not in this run."
    beats = CLUSTER_HOSTS / HEARTBEAT_S
    return "\n".join(
        [
            f"{_heading(document)}, B8's CPU per fanned-in event ({broker:,.0f} µs of "
            f"broker, {client:,.0f} µs of the subscriber):",
            "",
            f"- *Presence*: {CLUSTER_HOSTS:,} hosts at `heartbeat_s = {HEARTBEAT_S}` make "
            f"{beats:,.0f} heartbeat events/s, {beats * broker / 1e6:.0%} of a broker "
            "core, and every subscriber bound to `*.agent.*` receives them all. One "
            f"Python subscriber takes at most about {1e6 / client:,.0f} events/s.",
            f"- *A burst*: after a fleet-wide restart, {BURST_EVENTS:,} started events "
            f"arrive within a minute: {BURST_EVENTS * broker / 1e6:,.0f} broker "
            f"core-seconds (about {1e6 / broker:,.0f} events/s per core), spread over the "
            f"{CLUSTER_NODES} nodes, and {BURST_EVENTS * client / 1e6:,.0f} s or more for "
            f"one subscriber to drain. B8 measured {rate:,.0f} events/s into one "
            f"subscriber, with its {hosts:,} simulated agents publishing on the same cores.",
        ]
    )


def startup(document: Document | None) -> str:
    """Agents coming online, from B8's fleet start."""
    if document is None:
        return NOT_YET
    b8 = _by_id(document).get("B8")
    seconds = _get(b8, "fleet_startup_s")
    hosts = _get(b8, "hosts")
    cores = _get(document, "run", "machine", "cores")
    if not _ok(seconds, hosts, cores):
        return f"{_heading(document)}: B8's fleet start is not in this run."
    per_agent_ms = 1000 * seconds * cores / hosts
    return (
        f"{_heading(document)}: B8 brought {hosts:,} agents online in {seconds:,.1f} s on "
        f"{cores} shared cores, at most {per_agent_ms:,.1f} ms of CPU per agent, agent and "
        f"broker together. If the broker's share is half, {CLUSTER_HOSTS:,} agents "
        f"reconnecting after a node restart cost about "
        f"{CLUSTER_HOSTS * per_agent_ms / 2000:,.0f} broker core-seconds."
    )


def agent_cost(document: Document | None) -> str:
    """The agent's CPU per message against the bare echo's, from B2 and B8."""
    if document is None:
        return NOT_YET
    by_id = _by_id(document)
    command = _get(by_id.get("B2"), "classic", "cpu_us_per_call", "server")
    echo = _get(by_id.get("B2"), "classic", "echo_cpu_us_per_call", "server")
    event = _get(by_id.get("B8"), "cpu_us_per_event", "agents")
    if not _ok(command, echo, event):
        return f"{_heading(document)}: B2's or B8's agent CPU is not in this run."
    return (
        f"{_heading(document)}: the agent spends {command:,.0f} µs of CPU per command "
        f"(B2, classic) and {event:,.0f} µs per event (B8); the bare aio-pika echo server "
        f"spends {echo:,.0f} µs per call."
    )


def fleet_floor(document: Document | None) -> str:
    """B8's agents against as many bare hosts (the AMQP client stack alone), gathered in
    the same rotation; and the gatherer's CPU against one that only counts replies."""
    if document is None:
        return NOT_YET
    b8 = _by_id(document).get("B8")
    hosts = _get(b8, "hosts")
    cores = _get(document, "run", "machine", "cores")
    agents_ms = _get(b8, "gather_ms", "p50")
    bare_ms = _get(b8, "bare_gather_ms", "p50")
    agents = _get(b8, "cpu_us_per_reply", "agents")
    bare = _get(b8, "bare_cpu_us_per_reply", "agents")
    broker = _get(b8, "bare_cpu_us_per_reply", "broker")
    if not _ok(hosts, cores, agents_ms, bare_ms, agents, bare):
        return f"{_heading(document)}: B8 gathered from no bare hosts in this run."
    shared = broker if _ok(broker) else 0.0
    floor_s = hosts * (bare + shared) / cores / 1e6
    verdict = (
        f"the bare hosts alone miss the {GATHER_GOAL_S:g} s goal"
        if bare_ms / 1000 > GATHER_GOAL_S
        else f"the bare hosts meet the {GATHER_GOAL_S:g} s goal; the agents' own work misses it"
    )
    counted = _get(b8, "counted_cpu_us_per_reply", "client")
    library = _get(b8, "cpu_us_per_reply", "client")
    old = _get(b8, "baseline_cpu_us_per_reply", "client")
    gatherer = (
        f" The gatherer's side: one that only counts the replies on aiormq, reading "
        f"nothing of them, spent {counted:,.0f} µs of CPU per reply ({counted / old:.2f} "
        f"{TIMES} the old path's {old:,.0f} µs), the client library {library:,.0f} µs: "
        + (
            f"the goal of {CPU_RATIO_GOAL:g} {TIMES} the old path is below what aiormq "
            "spends receiving a reply."
            if counted / old > CPU_RATIO_GOAL
            else f"aiormq's own receiving leaves room under {CPU_RATIO_GOAL:g} {TIMES}."
        )
        if _ok(counted, library, old) and old
        else ""
    )
    return (
        f"{_heading(document)}: {hosts:,} bare hosts (`bench.echo.BareHost`: the agent's "
        f"queue, bindings, prefetch and confirmed reply, nothing else), packed as the agents "
        f"are and gathered by the client library in the same rotation, gathered in "
        f"{bare_ms / 1000:,.2f} s (p50) against the agents' {agents_ms / 1000:,.2f} s: "
        f"{verdict}. A bare host spent {bare:,.0f} µs of CPU per reply, an agent "
        f"{agents:,.0f} µs ({agents / bare:.2f} {TIMES}); the broker's and the bare hosts' "
        f"own CPU alone needs {floor_s:,.2f} s of the machine's {cores} cores per gather."
        f"{gatherer}"
    )


TARGETS: dict[str, dict[str, Render]] = {
    "docs/benchmarks.md": {"results": results_section, "fleet-floor": fleet_floor},
    "bench/SCALING.md": {
        "memory": memory,
        "unit-costs": unit_costs,
        "fleet": fleet_arithmetic,
        "fan-out": cluster_fanout,
        "cluster-memory": cluster_memory,
        "event-rates": event_rates,
        "startup": startup,
        "queue-types": queue_types,
        "agent-cost": agent_cost,
    },
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
