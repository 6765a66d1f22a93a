"""``python -m bench``: run the benchmarks and write the results.

    bench/run.sh [--quick] [--only B1,B3] [--profile] [--publish]

Writes ``bench/results/<timestamp>.json`` (everything), ``bench/results/<timestamp>.md``
and ``bench/results/latest.md`` (the report), and prints the report on standard output;
progress goes to standard error. With ``--profile``, every benchmark that missed a goal
is run once more under pyinstrument (agents and fleet workers profiled over the measured
part only), the profiles are added to its section and each missed goal points to them;
the figures of the report always come from the run without the profiler. A miss of B1 or
B3 is also traced (``bench.trace``: the agent's steps, timestamped) right after the
benchmark, and each missed goal names the trace too.

``--publish`` is a full run with ``--profile`` whose results become the published ones
(``bench/published/``) and regenerate the docs' tables (``bench.publish``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import aiodocker
import aiohttp

from agent.settings import DEFAULT_AMQP_URL
from bench import (
    b1_latency,
    b2_throughput,
    b3_events,
    b4_bulk,
    b5_broadcast,
    b6_scale,
    b7_cli,
    b8_fleet,
    b9_stats,
    b10_dashboard,
    b11_gateway,
    baseline,
    publish,
    trace,
)
from bench.core import (
    TRACE_MARK,
    BenchResult,
    Cleanup,
    Context,
    Scale,
    sweep_stale,
    write_pidfile,
)
from bench.machine import describe
from bench.report import write
from bench.rpc import RpcClient, wait_for_broker

Bench = Callable[[Context, RpcClient], Awaitable[BenchResult]]
BENCHES: dict[str, tuple[str, Bench]] = {
    "B1": ("per-op latency vs raw aiodocker", b1_latency.run),
    "B2": ("get_state throughput vs echo", b2_throughput.run),
    "B3": ("event latency", b3_events.run),
    "B4": ("100 domains concurrently vs raw", b4_bulk.run),
    "B7": ("virtbus CLI vs minimal aio-pika script", b7_cli.run),
    "B9": ("bulk statistics vs direct cgroup reads", b9_stats.run),
    "B5": ("broadcast to 50 agents", b5_broadcast.run),
    "B6": ("1,000 domains on one host", b6_scale.run),
    "B8": ("fleet of 5,000 hosts (1,000 quick)", b8_fleet.run),
    "B10": ("dashboard over 1,000 hosts", b10_dashboard.run),
    "B11": ("libvirt gateway: per-call cost, list of 1,000", b11_gateway.run),
}
"""In the order they run: those needing only one agent first, the big ones last."""

RESULTS = Path(__file__).resolve().parent / "results"


def bench_order(result: BenchResult) -> tuple[int, str]:
    """B1, B2, …, B10 in their numeric order; any other id after them."""
    number = result.id.removeprefix("B")
    return (int(number), "") if number.isdigit() else (1 << 30, result.id)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.sh", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", help="comma-separated benchmark ids, e.g. B1,B3")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="re-run each benchmark that missed a goal under pyinstrument",
    )
    parser.add_argument(
        "--profile-all", action="store_true", help="re-run every benchmark under pyinstrument"
    )
    parser.add_argument("--amqp-url", default=os.environ.get("VIRTBUS_AMQP_URL", DEFAULT_AMQP_URL))
    parser.add_argument(
        "--quiet-load",
        type=float,
        help="before each benchmark, wait (up to 15 min) for the 1-minute load average "
        "to drop to this (on a machine shared with other work)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="a full run (with --profile) that becomes the published one: writes "
        "bench/published/ and regenerates the docs' tables from it",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--keep-workdir", action="store_true", help="keep state and logs")
    args = parser.parse_args(argv)
    if args.only:
        wanted = [item.strip().upper() for item in args.only.split(",") if item.strip()]
        unknown = [item for item in wanted if item not in BENCHES]
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
        args.only = wanted
    if args.publish and (args.quick or args.only):
        parser.error("--publish records the full suite: not with --quick or --only")
    args.profile = args.profile or args.profile_all or args.publish
    if args.profile:
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            parser.error("--profile needs pyinstrument: .venv/bin/pip install pyinstrument")
    return args


async def docker_up(docker: aiodocker.Docker, timeout_s: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            await docker.version()
            return True
        except (aiodocker.DockerError, aiohttp.ClientError, OSError):
            await asyncio.sleep(2)
    return False


async def run_bench(
    ctx: Context, bench_id: str, title: str, bench: Bench, quiet_load: float | None = None
) -> BenchResult:
    """One benchmark with a client of its own. If it fails (the broker or Docker
    restarted by someone else on a shared machine, say), it runs once more after both are
    reachable; a benchmark that fails twice is reported as an error."""
    ctx.current = bench_id
    began = time.monotonic()
    for attempt in (1, 2):
        if quiet_load is not None:
            await wait_quiet(ctx, quiet_load)
        ctx.log(f"{bench_id}: {title}{' (profiled)' if ctx.profiling else ''}")
        load = MachineLoad()
        try:
            async with RpcClient(ctx.amqp_url) as client:
                result = await bench(ctx, client)
            break
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            await ctx.cleanup.stop_processes()
            with contextlib.suppress(Exception):
                if await wait_for_broker(ctx.amqp_url) and await docker_up(ctx.docker):
                    await ctx.cleanup.sweep(ctx.docker)
            if attempt == 1:
                ctx.log(f"{bench_id} failed ({type(error).__name__}); running it again")
                continue
            result = BenchResult(bench_id, title, error=f"{type(error).__name__}: {error}")
    if attempt == 2 and not result.error:
        result.notes.append("run a second time: the first run failed (see the run's log)")
    result.metrics["machine_load"] = load.done()
    busy = result.metrics["machine_load"]["cpu_busy_pct"]
    result.notes.append(
        f"machine during the run: CPUs {busy:.0f} % busy (every process, this run's "
        f"included), load average {load.start:.1f} → {os.getloadavg()[0]:.1f}"
    )
    result.duration_s = time.monotonic() - began
    ctx.log(f"{bench_id} done in {result.duration_s:.0f} s (CPUs {busy:.0f} % busy)")
    return result


TRACES: dict[str, trace.Mode] = {"B1": "ops", "B3": "external"}
"""The timestamped trace (``bench.trace``) of each benchmark whose misses it explains."""


async def trace_misses(ctx: Context, result: BenchResult, quiet_load: float | None = None) -> None:
    """With the profiles of a benchmark that missed a goal, a timestamped trace of the
    agent's steps: written beside them, and named by each missed goal."""
    mode = TRACES.get(result.id)
    if mode is None or not result.missed:
        return
    if quiet_load is not None:
        await wait_quiet(ctx, quiet_load)
    ctx.log(f"{result.id}: tracing the agent's steps ({mode})")
    path = ctx.profile_dir / f"{result.id}{TRACE_MARK}{mode}.txt"
    try:
        host = ctx.host(f"{result.id.lower()}trace")
        text = await trace.record(ctx.amqp_url, 10 if ctx.quick else 30, mode, host=host)
        ctx.profile_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        result.notes.append(f"the trace of the agent's steps failed: {error!r}")
        return
    for goal in result.goals:
        if not goal.met:
            goal.profiles = [*goal.profiles, str(path)]


class MachineLoad:
    """How busy all the CPUs were, from ``/proc/stat``, between creation and ``done``."""

    def __init__(self) -> None:
        self.start = os.getloadavg()[0]
        self._busy, self._total = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            return 0, 0
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields) - idle, sum(fields)

    def done(self) -> dict[str, float]:
        busy, total = self._read()
        share = (busy - self._busy) / (total - self._total) if total > self._total else 0.0
        return {
            "cpu_busy_pct": 100 * share,
            "load_start": self.start,
            "load_end": os.getloadavg()[0],
        }


async def wait_quiet(ctx: Context, threshold: float, limit_s: float = 900.0) -> None:
    """Wait (at most ``limit_s``) until the 1-minute load average is at most ``threshold``."""
    if os.getloadavg()[0] > threshold:
        ctx.log(f"waiting for the machine to calm down (load {os.getloadavg()[0]:.1f})")
    began = time.monotonic()
    try:
        for _ in range(int(limit_s / 5)):
            if os.getloadavg()[0] <= threshold:
                return
            await asyncio.sleep(5)
    finally:
        ctx.waited_s += time.monotonic() - began


async def amain(args: argparse.Namespace) -> int:
    run_id = secrets.token_hex(3)
    timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    pidfile = write_pidfile(run_id)
    workdir = Path(tempfile.mkdtemp(prefix=f"virtbus-bench-{run_id}-"))
    docker = aiodocker.Docker()
    cleanup = Cleanup(args.amqp_url)
    ctx = Context(
        run_id=run_id,
        quick=args.quick,
        scale=Scale.quick() if args.quick else Scale.full(),
        amqp_url=args.amqp_url,
        workdir=workdir,
        profile_dir=args.results / f"{timestamp}-profiles",
        cleanup=cleanup,
        docker=docker,
    )
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, lambda: main_task.cancel() if main_task else None)
    command = os.environ.get("BENCH_COMMAND") or shlex.join(
        ["python", "-m", "bench", *sys.argv[1:]]
    )
    status = 1
    try:
        stale = await sweep_stale(docker, args.amqp_url)
        if any(stale):
            ctx.log(f"removed {stale[0]} containers and {stale[1]} queues of dead bench runs")
        async with RpcClient(args.amqp_url) as probe:
            machine = await describe(docker, probe)
        load_before = os.getloadavg()
        ctx.log(f"run {run_id} ({'quick' if args.quick else 'full'}), work dir {workdir}")
        results: list[BenchResult] = []
        base = await run_bench(ctx, "RPC", "bare RPC echo", baseline.run, args.quiet_load)
        selected = [b for b in BENCHES if not args.only or b in args.only]
        for bench_id in selected:
            title, bench = BENCHES[bench_id]
            results.append(await run_bench(ctx, bench_id, title, bench, args.quiet_load))
            if args.profile:
                # right after the benchmark, on the machine it measured: after the
                # fleet's, Docker answered the trace's calls 75 ms after its reports
                await trace_misses(ctx, results[-1], args.quiet_load)
        if args.profile:
            ctx.profiling = True
            for result in results:
                if not (result.missed or args.profile_all):
                    continue
                ctx.profiles = []
                title, bench = BENCHES[result.id]
                again = await run_bench(ctx, result.id, title, bench, args.quiet_load)
                result.profiles = ctx.profiles
                trees = [str(profile["call_tree"]) for profile in ctx.profiles]
                for goal in result.goals:
                    if not goal.met:
                        goal.profiles = [*trees, *goal.profiles]
                result.notes.append(
                    "profiled re-run (figures under the profiler, for orientation only): "
                    + "; ".join(
                        f"{g.what} = {g.subject:.4g} {g.unit}".rstrip() for g in again.goals
                    )
                    + (f" - error: {again.error}" if again.error else "")
                )
            ctx.profiling = False
        ordered = [base, *sorted(results, key=bench_order)]
        run = {
            "id": run_id,
            "timestamp": timestamp,
            "quick": args.quick,
            "command": command,
            "cwd": os.getcwd(),
            "duration_s": time.monotonic() - ctx.started,
            "waited_s": ctx.waited_s,
            "machine": machine,
            "load_average": {"start": load_before, "end": os.getloadavg()},
            "scale": asdict(ctx.scale),
        }
        path, text = write(args.results, run, ordered)
        print(text)
        ctx.log(f"wrote {path} and {args.results / 'latest.md'}")
        if args.publish:
            published = publish.adopt(path)
            changed = publish.write()
            ctx.log(
                f"published {published}; regenerated "
                + (", ".join(str(p.relative_to(publish.REPO)) for p in changed) or "nothing")
                + ". Commit bench/published/ and the pages together."
            )
        errors = [r.id for r in ordered if r.error]
        status = 1 if errors else 0
        if errors:
            ctx.log(f"benchmarks that failed to run: {', '.join(errors)}")
    except asyncio.CancelledError:
        ctx.log("interrupted; cleaning up")
        status = 130
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(cleanup.run(docker))
        await docker.close()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        pidfile.unlink(missing_ok=True)
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return asyncio.run(amain(args))
