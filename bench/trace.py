"""``python -m bench.trace [--cycles N] [--external]``: timestamped traces of B1's ops
(or, with ``--external``, of B3's changes made behind the agent's back).

Runs one agent as ``python -m bench.tracedagent`` (``virtbus agent`` with
``perf_counter_ns`` stamps at each step of a command and of a Docker event), sends it
start / suspend / resume / destroy cycles with the benchmarks' client, and prints, per op,
the median time of each step after the command was sent (``CLOCK_MONOTONIC`` is shared
by the processes). The machine must be prepared (``scripts/setup.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import aiodocker

from agent.settings import DEFAULT_AMQP_URL
from bench.core import HOST_PREFIX, Cleanup, cpu_s, domain_spec, write_pidfile
from bench.procs import REPO
from bench.rpc import Arrival, EventTap, RpcClient, command_body, ok

OPS = (("start", "domain.create"), ("suspend", "domain.suspend"), ("resume", "domain.resume"))
EXTERNAL = (("suspended", "pause"), ("resumed", "unpause"))


def is_event(event: str) -> Callable[[Arrival], bool]:
    return lambda arrival: arrival.body.get("event") == event


def timeline(stamps: list[tuple[int, str]], since: int, until: int) -> list[tuple[str, float]]:
    return [(point, (ns - since) / 1e6) for ns, point in stamps if since <= ns <= until]


Mode = Literal["ops", "external", "lookups", "fresh"]
"""What is traced: B1's start / suspend / resume cycles, B3's changes behind the agent's
back, lookups only (no Docker), or starts of freshly defined domains."""


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--external", action="store_true")
    parser.add_argument("--lookups", action="store_true", help="lookups only (no Docker)")
    parser.add_argument("--fresh", action="store_true", help="starts of fresh domains")
    parser.add_argument("--spy", help="also sample the agent with py-spy into this file")
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--amqp-url", default=os.environ.get("VIRTBUS_AMQP_URL", DEFAULT_AMQP_URL))
    args = parser.parse_args()
    mode: Mode = (
        "external"
        if args.external
        else "lookups"
        if args.lookups
        else "fresh"
        if args.fresh
        else "ops"
    )
    print(await record(args.amqp_url, args.cycles, mode, args.event_loop, args.spy), end="")
    return 0


async def record(
    amqp_url: str,
    cycles: int,
    mode: Mode = "ops",
    event_loop: str = "uvloop",
    spy_out: str | None = None,
    host: str | None = None,
) -> str:
    """Trace ``cycles`` cycles of ``mode`` (see ``Mode``) on a fresh agent; returns the
    report: per op, the median time of each step after the command was sent. ``host``,
    a host name of a running bench (``Context.host``), or one of a run of its own."""
    pidfile = None
    if host is None:
        run_id = secrets.token_hex(3)
        # a bench run started meanwhile takes a host of a run without one for stale
        pidfile = write_pidfile(run_id)
        host = f"{HOST_PREFIX}{run_id}-trace"
    work = Path(tempfile.mkdtemp(prefix="virtbus-trace-"))
    docker = aiodocker.Docker()
    try:
        return await _record(amqp_url, cycles, mode, event_loop, spy_out, host, work, docker)
    finally:
        await docker.close()
        shutil.rmtree(work, ignore_errors=True)
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)


async def _record(
    amqp_url: str,
    cycles: int,
    mode: Mode,
    event_loop: str,
    spy_out: str | None,
    host: str,
    work: Path,
    docker: aiodocker.Docker,
) -> str:
    out = work / "trace.txt"
    cleanup = Cleanup(amqp_url, hosts={host})
    marks: list[tuple[str, int, int]] = []
    async with RpcClient(amqp_url) as client:
        online = await EventTap(client.channel, [f"{host}.agent.online"]).start()
        env = {**child_env_for(amqp_url), "BENCH_TRACE_OUT": str(out)}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.tracedagent",
            "agent",
            "--host",
            host,
            "--state-dir",
            str(work / "state"),
            "--heartbeat-s",
            "3600",
            "--log-level",
            "warning",
            "--event-loop",
            event_loop,
            cwd=REPO,
            env=env,
        )
        cleanup.processes.append(process)
        cpu_ms = 0.0
        try:
            await online.wait_for(lambda a: True, 60)
            await online.stop()
            await client.command(host, "domain.define", args={"spec": domain_spec("t")})
            target = {"name": "t"}
            cpu_before = cpu_s(process.pid)
            spy = None
            if spy_out:
                spy = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-r",
                    "1000",
                    "-f",
                    "raw",
                    "-o",
                    spy_out,
                    "-p",
                    str(process.pid),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                await asyncio.sleep(1)
            if mode == "external":
                await client.command(host, "domain.create", target=target)
                handle = (await docker._query_json(f"containers/{host}.t/json"))["Id"]
                tap = await EventTap(client.channel, [f"{host}.lifecycle.#"]).start()
                for _ in range(cycles):
                    for event, verb in EXTERNAL:
                        began = time.perf_counter_ns()
                        await docker._query_json(f"containers/{handle}/{verb}", method="POST")
                        await tap.wait_for(is_event(event), 15)
                        marks.append((event, began, time.perf_counter_ns()))
                        tap.arrivals.clear()
                        await asyncio.sleep(0.02)
                await tap.stop()
            elif mode == "fresh":
                for cycle in range(cycles):
                    fresh = {"name": f"f{cycle}"}
                    spec = domain_spec(fresh["name"])
                    await client.command(host, "domain.define", args={"spec": spec})
                    command_id = uuid.uuid4().hex
                    body = command_body(command_id, "domain.create", fresh)
                    began = time.perf_counter_ns()
                    reply = await client.call(host, body, command_id)
                    marks.append(("fresh start", began, time.perf_counter_ns()))
                    if not ok(reply):
                        raise RuntimeError(reply.decode())
                    await client.command(host, "domain.destroy", target=fresh)
                    await client.command(host, "domain.undefine", target=fresh)
            else:
                ops = (("lookup", "domain.lookup"),) if mode == "lookups" else OPS
                for _ in range(cycles):
                    for op, name in ops:
                        command_id = uuid.uuid4().hex
                        body = command_body(command_id, name, target)
                        began = time.perf_counter_ns()
                        reply = await client.call(host, body, command_id)
                        marks.append((op, began, time.perf_counter_ns()))
                        if not ok(reply):
                            raise RuntimeError(reply.decode())
                        await asyncio.sleep(0.02)
                    if mode != "lookups":
                        await client.command(host, "domain.destroy", target=target)
                        await asyncio.sleep(0.05)
            cpu_ms = 1000 * (cpu_s(process.pid) - cpu_before)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                await spy.wait()
        finally:
            await cleanup.stop_processes()
            with contextlib.suppress(Exception):
                await cleanup.sweep(docker)
    stamps = [
        (int(ns), point) for ns, point in (line.split() for line in out.read_text().splitlines())
    ]
    per_op = 1000 * cpu_ms / len(marks)
    lines = [
        *textwrap.wrap(
            f"Trace of one agent (python -m bench.trace, {mode}, {cycles} cycles): per op, "
            "each step's median time after the command (external: Docker's call) was sent "
            "(CLOCK_MONOTONIC, shared by the processes), the median step from the line "
            "above, and in how many of the op's runs it was seen. `x>` / `x<`: entry to and "
            "exit from a step (bench/tracedagent.py); `sock.feed`: the broker's bytes reach "
            "the agent's socket; `docker.report`: Docker's own time of the change; "
            "`wireN>`: the Nth message since written to the broker's socket.",
            width=88,
        ),
        "",
        f"agent CPU: {cpu_ms:.1f} ms for {len(marks)} ops (+ destroys): {per_op:.0f} µs per op",
    ]
    for op in dict.fromkeys(m[0] for m in marks):
        runs = [timeline(stamps, began, ended) for name, began, ended in marks if name == op]
        totals = [(ended - began) / 1e6 for name, began, ended in marks if name == op]
        lines += ["", f"{op}: round trip p50 {statistics.median(totals):.2f} ms (n={len(totals)})"]
        firsts: dict[str, list[float]] = {}
        for run in runs:
            seen: dict[str, float] = {}
            for point, ms in run:
                seen.setdefault(point, ms)
            for point, ms in seen.items():
                firsts.setdefault(point, []).append(ms)
        ordered = sorted(firsts.items(), key=lambda item: statistics.median(item[1]))
        previous = "sent"
        for point, values in ordered:
            steps = []
            for run in runs:
                seen = dict(reversed(run))
                if point in seen:
                    before = seen.get(previous, 0.0) if previous != "sent" else 0.0
                    steps.append(seen[point] - before)
            lines.append(
                f"  {statistics.median(values):7.2f} ms  {point:16} "
                f"+{statistics.median(steps) if steps else float('nan'):6.2f}  (n={len(values)})"
            )
            previous = point
    return "\n".join(lines) + "\n"


def child_env_for(url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VIRTBUS_")}
    env["VIRTBUS_AMQP_URL"] = url
    return env


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
