"""The bench framework without services: interleaved rounds, goal records, the report's
goal table, and the docs' tables generated from the published results file."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from bench import publish
from bench.b8_fleet import broker_detail, cpu_floor
from bench.core import ABSOLUTE, DIFFERENCE, RATIO, BenchResult, amqp_port, broker_pid, interleave
from bench.fleetrun import PathCost
from bench.report import TIMES, goals_table, misses

# ------------------------------------------------------------------ interleave --


async def test_interleave_alternates_who_goes_first() -> None:
    calls: list[tuple[str, int]] = []

    def side(name: str, value: float) -> Any:
        async def one(round_: int) -> float:
            calls.append((name, round_))
            return value

        return one

    measured = await interleave(
        {"subject": side("subject", 2.0), "baseline": side("baseline", 1.0)}, 4, warmup=1
    )

    assert calls == [
        ("baseline", -1),
        ("subject", -1),
        ("subject", 0),
        ("baseline", 0),
        ("baseline", 1),
        ("subject", 1),
        ("subject", 2),
        ("baseline", 2),
        ("baseline", 3),
        ("subject", 3),
    ]
    assert measured.samples == {"subject": [2.0] * 4, "baseline": [1.0] * 4}
    assert measured.orders[0] == ["subject", "baseline"]
    assert measured.orders[1] == ["baseline", "subject"]
    assert len(measured.load) == 4
    assert measured.summary()["rounds"] == 4


async def test_interleave_rotates_three_sides() -> None:
    async def nothing(round_: int) -> None:
        return None

    measured = await interleave({"a": nothing, "b": nothing, "c": nothing}, 3)

    assert measured.orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]


async def test_interleave_times_a_side_that_returns_nothing_and_keeps_lists() -> None:
    async def timed(round_: int) -> None:
        return None

    async def many(round_: int) -> list[float]:
        return [0.001 * round_, 0.002]

    measured = await interleave({"timed": timed, "many": many}, 2)

    assert len(measured.samples["timed"]) == 2
    assert all(0 <= value < 1 for value in measured.samples["timed"])
    assert measured.samples["many"] == [0.0, 0.002, 0.001, 0.002]
    assert measured.dist("many").n == 4
    assert measured.dist("many").max == pytest.approx(2.0)  # milliseconds


async def test_interleave_needs_a_side_and_a_round() -> None:
    async def side(round_: int) -> None:
        return None

    with pytest.raises(ValueError, match="at least one side"):
        await interleave({}, 3)
    with pytest.raises(ValueError, match="one round"):
        await interleave({"a": side}, 0)


# --------------------------------------------------------------------- records --


def test_ratio_record() -> None:
    result = BenchResult("B9", "stats")
    goal = result.ratio(
        "bulk", 6.0, 4.0, unit="ms", baseline_what="direct reads", at_most=1.5, rounds=4
    )

    assert (goal.kind, goal.value, goal.met, goal.op, goal.bound) == (RATIO, 1.5, True, "<=", 1.5)
    assert goal.goal == f"≤ 1.5 {TIMES} direct reads"
    record = result.to_json()["goals"][0]
    for key in ("bench", "what", "subject", "baseline", "value", "goal", "met", "unit", "kind"):
        assert key in record
    assert record["bench"] == "B9"
    assert record["subject"] == 6.0 and record["baseline"] == 4.0
    assert record["interleaved"] is True and record["rounds"] == 4

    missed = result.ratio("bulk", 6.1, 4.0, unit="ms", baseline_what="x", at_most=1.5)
    assert not missed.met
    assert result.missed


def test_at_least_and_invalid_measurements() -> None:
    result = BenchResult("B2", "throughput")
    goal = result.ratio("rate", 700, 1000, unit="/s", baseline_what="echo", at_least=0.7)
    assert goal.met and goal.goal == f"≥ 0.7 {TIMES} echo"

    failed = result.ratio(
        "rate", 900, 1000, unit="/s", baseline_what="echo", at_least=0.7, valid=False
    )
    assert not failed.met and not failed.valid

    nothing = result.ratio("rate", 900, 0, unit="/s", baseline_what="echo", at_least=0.7)
    assert math.isnan(nothing.value) and not nothing.met

    with pytest.raises(ValueError, match="exactly one"):
        result.ratio("rate", 1, 1, unit="", baseline_what="", at_most=1, at_least=1)
    with pytest.raises(ValueError, match="exactly one"):
        result.ratio("rate", 1, 1, unit="", baseline_what="")


def test_difference_and_absolute_records() -> None:
    result = BenchResult("B3", "events")
    goal = result.difference(
        "p50", 1.2, 0.9, unit="ms", baseline_what="Docker + bus", at_most=0.5, interleaved=False
    )
    assert goal.kind == DIFFERENCE
    assert goal.value == pytest.approx(0.3) and goal.met
    assert goal.goal == "≤ Docker + bus + 0.5 ms"
    assert not goal.interleaved

    lost = result.absolute("lost", 1, unit="", reason="a count of lost messages", at_most=0)
    assert lost.kind == ABSOLUTE and lost.baseline is None and not lost.met
    assert lost.baseline_what == "a count of lost messages"


# ---------------------------------------------------------------------- report --


def _document() -> list[dict[str, Any]]:
    b2 = BenchResult("B2", "throughput")
    b2.ratio("rate", 800, 1000, unit="/s", baseline_what="echo @64", at_least=0.7, rounds=6)
    b2.metrics["machine_load"] = {"cpu_busy_pct": 97.4, "load_start": 1.53, "load_end": 2.0}
    b1 = BenchResult("B1", "latency")
    missed = b1.ratio(
        "suspend: agent p50 - raw p50",
        3.4,
        1.7,
        unit="ms",
        baseline_what="bare RPC p50",
        at_most=1.5,
        interleaved=False,
    )
    missed.profiles = [
        "bench/published/profiles/20261206T070000Z/B1-x-1-0.txt",
        "bench/published/profiles/20261206T070000Z/B1-trace-ops.txt",
    ]
    b1.profiles = [
        {
            "call_tree": missed.profiles[0],
            "window": "w",
            "busy_s": 1.5,
            "wall_s": 3.0,
            "by_package": [{"frame": "asyncio", "pct": 40.0}, {"frame": "agent", "pct": 20.0}],
        }
    ]
    b3 = BenchResult("B3", "events")
    b3.difference("p50", 2.0, 0.7, unit="ms", baseline_what="Docker + bus", at_most=0.5)
    broken = BenchResult("B8", "fleet", error="BenchError: no reply")
    return [result.to_json() for result in (b1, b2, b3, broken)]


def test_goal_table_flags_baselines_and_misses() -> None:
    text = "\n".join(goals_table(_document()))

    assert (
        f"| B2 | rate | 800/s | echo @64: 1,000/s (interleaved, 6 rounds) | 0.800{TIMES} |" in text
    )
    assert "**not interleaved**: measured earlier in the run" in text
    assert "| +1.30 ms | ≤ Docker + bus + 0.5 ms | ✗ **missed** |" in text
    assert "| B8 | fleet | error |" in text

    where = "\n".join(misses(_document()))
    assert "- B1 suspend: agent p50 - raw p50:\n    - `bench/published/profiles/2026" in where
    assert "(w: busy 1.50 s of 3.00 s; asyncio 40 %, agent 20 %)" in where
    assert "B1-trace-ops.txt` (timestamped trace of the agent's steps" in where
    assert "B3 p50: no profile was taken" in where
    assert "B8 could not run: `BenchError: no reply`" in where


# --------------------------------------------------------------------- publish --


def test_fill_replaces_only_between_the_markers() -> None:
    page = "intro\n<!-- bench:results -->\nold\nlines\n<!-- /bench:results -->\noutro\n"

    filled = publish.fill(page, "results", "new table\n")

    assert filled == "intro\n<!-- bench:results -->\nnew table\n<!-- /bench:results -->\noutro\n"
    assert publish.fill(filled, "results", "new table") == filled
    with pytest.raises(ValueError, match="no <!-- bench:results -->"):
        publish.fill("no markers here\n", "results", "x")


def _run(timestamp: str) -> dict[str, Any]:
    return {
        "id": "abc123",
        "timestamp": timestamp,
        "quick": False,
        "command": "bench/run.sh --publish",
        "cwd": "/repo",
        "duration_s": 600.0,
        "waited_s": 0.0,
        "machine": {
            "cpu": "Test CPU",
            "cores": 2,
            "memory_gib": 8.0,
            "kernel": "Linux 6",
            "docker": "20.10",
            "rabbitmq": "3.10.8",
            "python": "CPython 3.11.7",
            "packages": {"aio-pika": "9"},
            "virtbus": "0.1",
            "commit": "abcdef0",
        },
        "load_average": {"start": [1.0, 1.0, 1.0], "end": [2.0, 2.0, 2.0]},
    }


def _tree(root: Path) -> None:
    for relative in publish.TARGETS:
        page = root / relative
        page.parent.mkdir(parents=True, exist_ok=True)
        parts = "".join(
            f"<!-- bench:{name} -->\n<!-- /bench:{name} -->\n" for name in publish.TARGETS[relative]
        )
        page.write_text(f"# page\n\n{parts}\nend\n")


def test_pages_are_generated_from_the_results_file(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert publish.stale(tmp_path) == [tmp_path / relative for relative in publish.TARGETS]

    publish.write(tmp_path)
    assert publish.stale(tmp_path) == []
    assert publish.NOT_YET in (tmp_path / "docs/benchmarks.md").read_text()

    results = tmp_path / "bench/published/results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    b8 = BenchResult("B8", "fleet")
    b8.metrics = {
        "hosts": 5000,
        "gather_ms": {"p50": 1800.0},
        "fleet_startup_s": 30.0,
        "fan_in_rate": 2857.0,
        "cpu_us_per_reply": {"broker": 150.0, "agents": 705.0, "client": 80.0},
        "baseline_cpu_us_per_reply": {"broker": 300.0, "agents": 700.0, "client": 160.0},
        "cpu_per_reply_ratio": {"broker": 0.5, "client": 0.5},
        "cpu_us_per_event": {"broker": 157.0, "agents": 371.0, "client": 110.0},
    }
    b2 = BenchResult("B2", "throughput")
    b2.metrics = {
        "classic": {
            "echo_p50_ms": 1.29,
            "cpu_us_per_call": {"server": 650.0},
            "echo_cpu_us_per_call": {"server": 400.0},
        }
    }
    b5 = BenchResult("B5", "broadcast")
    b5.metrics = {
        "classic": {"broker_bytes_per_agent": {"connections": 87 * 1024, "total": 190 * 1024}},
        "quorum": {
            "broker_bytes_per_agent": {"connections": 89 * 1024, "channels": 21 * 1024},
            "broker_bytes_per_queue": {"quorum": 90 * 1024},
        },
    }
    extra = [b8.to_json(), b2.to_json(), b5.to_json()]
    document = {"run": _run("20261206T070000Z"), "results": [*_document(), *extra]}
    results.write_text(json.dumps(document))

    assert publish.stale(tmp_path) != []
    publish.write(tmp_path)
    assert publish.stale(tmp_path) == []
    page = (tmp_path / "docs/benchmarks.md").read_text()
    assert "Run `20261206T070000Z` (full)" in page
    assert "`bench/run.sh --publish`" in page and "Test CPU, 2 cores" in page
    assert "| B2 | rate | 800/s |" in page
    assert "bench/published/profiles/20261206T070000Z/B1-x-1-0.txt" in page
    scaling = (tmp_path / "bench/SCALING.md").read_text()
    assert "client library's gather (direct reply-to; classic) | 150 µs | 705 µs | 80 µs" in scaling
    assert "old gather path (reply queue, plain aio-pika; classic) | 300 µs | 700 µs" in scaling
    assert "broker 0.50, gatherer 0.50" in scaling
    # the arithmetic is made from the same records: 5,000 x (150 + 705 + 80) µs
    assert f"5,000 {TIMES} (150 + 705 + 80) µs" in scaling and "= 4.67 CPU seconds" in scaling
    assert "2.34 s on 2 cores" in scaling and "p50 was 1.80 s" in scaling
    assert f"10,000 {TIMES} 150 µs = 1.50 CPU seconds per broadcast, 0.50 s per node" in scaling
    assert "80 µs per reply, 0.80 s of one core" in scaling
    assert f"3,334 {TIMES} 190 KiB ≈ 0.60 GiB per node" in scaling
    assert "1,000 heartbeat events/s, 16% of a broker core" in scaling
    assert "B8 measured 2,857 events/s" in scaling
    assert "at most 12.0 ms of CPU per agent" in scaling
    assert "650 µs of CPU per command" in scaling
    assert "| bare RPC p50 (1 in flight) | 1.29 ms | n/a |" in scaling
    assert "| connection processes | 87 KiB | 89 KiB |" in scaling


def test_scaling_holds_no_figure_outside_its_generated_parts() -> None:
    page = (publish.REPO / "bench/SCALING.md").read_text(encoding="utf-8")
    outside = re.sub(r"<!-- bench:(\S+) -->\n.*?<!-- /bench:\1 -->", "", page, flags=re.S)
    units = r"µs|ms|KiB|MiB|GiB|events/s|core-seconds|CPU seconds"
    assert re.findall(rf"\d[\d,.]*\s*(?:{units})", outside) == []
    assert set(re.findall(r"<!-- bench:([\w-]+) -->", page)) == set(
        publish.TARGETS["bench/SCALING.md"]
    )


def test_adopt_keeps_the_profiles_of_missed_goals(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    profiles = scratch / "20261206T070000Z-profiles"
    profiles.mkdir(parents=True)
    tree = profiles / "B1-host-1-0.txt"
    tree.write_text("call tree")
    (profiles / "B1-host-1-0.json").write_text("{}")
    b1 = BenchResult("B1", "latency")
    b1.ratio("suspend", 3.4, 1.7, unit="ms", baseline_what="RPC", at_most=1.5).profiles = [
        str(tree)
    ]
    b1.profiles = [{"process": "agent", "window": "w", "call_tree": str(tree)}]
    run = scratch / "20261206T070000Z.json"
    run.write_text(json.dumps({"run": _run("20261206T070000Z"), "results": [b1.to_json()]}))
    stale = tmp_path / "bench/published/profiles/20261205T000000Z"
    stale.mkdir(parents=True)

    path = publish.adopt(run, tmp_path)

    kept = "bench/published/profiles/20261206T070000Z/B1-host-1-0.txt"
    assert (tmp_path / kept).read_text() == "call tree"
    assert (tmp_path / kept).with_suffix(".json").exists()
    assert not stale.exists()
    document = json.loads(path.read_text())
    assert document["results"][0]["goals"][0]["profiles"] == [kept]
    assert document["goals"][0]["profiles"] == [kept]
    assert document["results"][0]["profiles"][0]["call_tree"] == kept


def test_committed_pages_match_the_committed_results() -> None:
    behind = publish.stale()
    assert behind == [], (
        f"{[str(p) for p in behind]} differ from bench/published/results.json: "
        "run `.venv/bin/python -m bench.publish`"
    )


def test_publish_is_a_full_profiled_run() -> None:
    from bench.main import parse

    assert parse(["--publish"]).profile
    for narrower in (["--quick"], ["--only", "B1"]):
        with pytest.raises(SystemExit):
            parse(["--publish", *narrower])


def test_benchmarks_are_reported_in_numeric_order() -> None:
    from bench.main import bench_order

    ids = ["B10", "B2", "GW", "B1", "B9"]
    ordered = sorted((BenchResult(i, "") for i in ids), key=bench_order)
    assert [r.id for r in ordered] == ["B1", "B2", "B9", "B10", "GW"]


# ---------------------------------------------------------------------- broker --

TCP_HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
)


def _process(proc: Path, pid: int, comm: str, sockets: list[str]) -> None:
    (proc / str(pid) / "fd").mkdir(parents=True)
    (proc / str(pid) / "comm").write_text(f"{comm}\n")
    for number, inode in enumerate(sockets):
        (proc / str(pid) / "fd" / str(number)).symlink_to(f"socket:[{inode}]")


def test_broker_pid_is_the_vm_listening_on_the_amqp_port(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    # another node (a test harness's cluster) listens on 5711 (0x164F); ours on 5672 (0x1628)
    (proc / "net" / "tcp").write_text(
        TCP_HEADER
        + "   0: 0100007F:164F 00000000:0000 0A 00000000:00000000 00:00000000 00000000   0 0 111\n"
        + "   1: 0100007F:1628 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   0 0 333\n"
    )
    (proc / "net" / "tcp6").write_text(
        TCP_HEADER
        + "   0: 00000000000000000000000000000000:1628 00000000000000000000000000000000:0000 0A"
        " 00000000:00000000 00:00000000 00000000   0 0 222\n"
    )
    _process(proc, 100, "beam.smp", ["111"])  # the other node, found first
    _process(proc, 200, "python3", ["333"])
    _process(proc, 300, "beam.smp", ["999", "222"])

    assert broker_pid(5672, proc) == 300
    assert broker_pid(5711, proc) == 100
    assert broker_pid(5673, proc) is None


def test_amqp_port_of_the_first_url() -> None:
    assert amqp_port("amqp://guest:guest@127.0.0.1:5673/,amqp://h:5674/") == 5673
    assert amqp_port("amqp://guest:guest@127.0.0.1/") == 5672
    assert amqp_port("amqps://broker/") == 5671


def test_a_broker_share_hidden_by_its_background_is_not_separable_never_zero() -> None:
    def cost(broker_s: float, background_s: float) -> dict[str, float]:
        path = PathCost(cpu_s={"broker": broker_s, "agents": 2.0}, replies=1000)
        path.background_s = background_s
        return path.per_reply()

    kept = cost(1.0, 0.25)
    assert kept["broker"] == pytest.approx(750.0)
    assert (kept["broker (raw)"], kept["broker (background)"]) == (1000.0, 250.0)
    hidden = cost(1.0, 1.5)
    assert math.isnan(hidden["broker"]) and hidden["agents"] == 2000.0
    assert "not separable" in broker_detail(hidden, kept)
    assert "taken off" in broker_detail(kept, kept)
    assert "(2000 µs per reply)" in cpu_floor(hidden, 10)


async def test_the_cold_path_times_every_event_it_applies(tmp_path: Path) -> None:
    from agent.host.store import Store
    from bench.coldpath import apply_times, in_memory

    spun: list[int] = []
    times = await apply_times(6, 0.0, lambda: spun.append(1))
    with in_memory():
        in_memory_times = await apply_times(4, 0.001, lambda: None)
        with Store(tmp_path) as store, store.transaction() as tx:
            tx.set_counter("probe", 1)
    assert not (tmp_path / "state.db").exists()
    assert len(times) == 6 and len(spun) == 6 and len(in_memory_times) == 4
    assert all(time_us > 0 for time_us in times + in_memory_times)


def test_the_fleet_floor_says_whether_bare_hosts_alone_miss_the_gather_goal() -> None:
    def document(bare_p50_ms: float) -> dict[str, Any]:
        b8 = BenchResult("B8", "fleet")
        b8.metrics = {
            "hosts": 5000,
            "gather_ms": {"p50": 4500.0},
            "bare_gather_ms": {"p50": bare_p50_ms},
            "cpu_us_per_reply": {"agents": 1200.0, "client": 90.0},
            "bare_cpu_us_per_reply": {"agents": 600.0, "broker": 150.0},
            "baseline_cpu_us_per_reply": {"client": 130.0},
            "counted_cpu_us_per_reply": {"client": 84.0},
        }
        return {"run": _run("20261207T000000Z"), "results": [b8.to_json()]}

    slow = publish.fleet_floor(document(2600.0))
    assert "in 2.60 s (p50) against the agents' 4.50 s: the bare hosts alone miss the 2 s" in slow
    assert f"a bare host spent 600 µs of CPU per reply, an agent 1,200 µs (2.00 {TIMES})" in (
        slow.replace("A bare", "a bare")
    )
    # 5,000 x (600 + 150) µs on 2 cores
    assert "alone needs 1.88 s of the machine's 2 cores" in slow
    assert (
        f"only counts the replies on aiormq, reading nothing of them, spent 84 µs of CPU "
        f"per reply (0.65 {TIMES} the old path's 130 µs), the client library 90 µs: the "
        f"goal of 0.5 {TIMES} the old path is below what aiormq spends receiving a reply"
    ) in slow
    fast = publish.fleet_floor(document(1500.0))
    assert "the bare hosts meet the 2 s goal; the agents' own work misses it" in fast
    without = {"run": _run("20261207T000000Z"), "results": []}
    assert "gathered from no bare hosts in this run" in publish.fleet_floor(without)
