"""B1: per-op latency through agent + bus, against the bare aiodocker call and the bare
RPC echo, all measured in the same rounds.

One domain through the agent (quorum host queue, the default) and one container driven
by raw aiodocker go through the same cycles — start, suspend, resume, lookup, shutdown,
start, destroy — and the bare RPC echo (``bench.echo`` on a quorum host queue of its own)
answers the same command bodies one at a time; the three alternate round by round, in a
rotating order, so each baseline is measured under the load its subject met. The
agent's latency is the round trip of a command (the agent answers once Docker has
reported the change); the raw latency is the one Docker call that does the same (a
SIGKILL answers once the container is gone; stop once it has stopped). The domain
sleeps under Docker's init, which forwards SIGTERM, so shutdown takes no grace period.

Start is also measured on a freshly defined domain each round (its container never ran,
so no clean-up of a previous stop is pending in Docker), against ``start`` of a freshly
created container.

Goal, per op: agent p50 - raw p50 ≤ 1.5 x bare RPC p50 (the echo of these rounds).

Where the time goes, per op: Docker's report of each change (its event's ``timeNano``;
the agent's lifecycle event carries it as ``time``, and the benchmark follows Docker's
own stream for the raw side) splits each latency in two. Agent: command sent → Docker's
report, then report → reply received. Raw: request → report (Docker's work until it
reports), then report → answer (Docker's work after its report, which the agent does not
wait for: the next command on the domain does, as libvirt's job lock makes it). The
agent's own part is what remains of the agent's latency once Docker's work until its
report (the raw side's, same rounds), Docker's delivery of its report on its event stream
(p50, seen by the benchmark's own subscription) and the bare RPC round trip are taken out:
``(agent to report - raw to report) + (agent after report - stream delivery) - bare RPC
p50``, so that ``Δ p50 ≈ bare RPC + stream delivery + own part - raw after report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import aiohttp

from agent.host.driver import HOST_LABEL
from bench.core import BenchError, BenchResult, Context, Dist, docker_events, domain_spec, fmt
from bench.procs import AgentProcess, EchoProcess
from bench.raw import AGENT_OPS, CYCLE, OPS, RawDocker
from bench.rpc import Arrival, EventTap, RpcClient, command_body, ok

QUEUE_TYPE = "quorum"
BOUND = 1.5
FRESH = "start (fresh domain)"
"""The start of a domain whose container never ran."""
REPORTS = {"start": "start", "suspend": "pause", "resume": "unpause", "shutdown": "die"}
REPORTS |= {"destroy": "die", FRESH: "start"}
"""Op → Docker's action that reports its effect (the agent answers at it)."""
AFTER_STOP = "start right after a shutdown"
SETTLED = "start, the stop long over"
"""The two starts of a cycle: right after its shutdown, and at its beginning (the destroy
before it was the previous cycle's, other rounds ran since)."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DockerReports:
    """The benchmark's own subscription to Docker's events of the raw host: when Docker
    reported each change (``timeNano``), by container."""

    def __init__(self, ctx: Context, host: str) -> None:
        self.ctx = ctx
        self.host = host
        self.seen: dict[str, list[tuple[str, int]]] = {}
        """Container id → (action, timeNano) in arrival order."""
        self.delivery_s: list[float] = []
        """Receive - timeNano of each: Docker's delivery of its events, which the agent
        waits for as well."""

    async def follow(self, ready: asyncio.Event) -> None:
        label = f"{HOST_LABEL}={self.host}"
        async for received_ns, event in docker_events(self.ctx.docker, label, ready):
            self.delivery_s.append((received_ns - int(event["timeNano"])) / 1e9)
            action = str(event.get("Action", "")).split(":", 1)[0]
            handle = event.get("Actor", {}).get("ID") or event.get("id", "")
            self.seen.setdefault(str(handle), []).append((action, int(event["timeNano"])))

    def report_ns(self, handle: str, action: str, after_ns: int) -> int | None:
        for seen, at_ns in self.seen.get(handle, []):
            if seen == action and at_ns >= after_ns:
                return at_ns
        return None


Mark = tuple[tuple[str, ...], str, int, int]


def _labels(op: str, index: int) -> tuple[str, ...]:
    """The rows of the breakdown that op number ``index`` of ``CYCLE`` counts in."""
    if op != "start":
        return (op,)
    return (op, AFTER_STOP if index > 0 and CYCLE[index - 1] == "shutdown" else SETTLED)


def _p50_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else float("nan")


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    result = BenchResult("B1", "per-op latency: agent + bus vs raw aiodocker")
    host = ctx.host("b1")
    raw_host = ctx.host("b1raw")
    echo_host = ctx.host("b1echo")
    agent = AgentProcess(ctx, client, host, QUEUE_TYPE)
    echo = EchoProcess(ctx, echo_host, QUEUE_TYPE)
    raw = RawDocker(ctx.docker, raw_host)
    names = (*OPS, FRESH)
    agent_times: dict[str, list[float]] = {op: [] for op in names}
    raw_times: dict[str, list[float]] = {op: [] for op in names}
    echo_times: list[float] = []
    agent_marks: list[Mark] = []
    """(rows, command id, sent, replied): the rows an op counts in, and wall clocks."""
    raw_marks: list[Mark] = []
    """(rows, container, request sent, answered)."""
    reports = DockerReports(ctx, raw_host)
    stream: asyncio.Task[None] | None = None
    tap: EventTap | None = None
    try:
        await agent.start()
        await echo.start()
        tap = await EventTap(client.channel, [f"{host}.lifecycle.#"]).start()
        ready = asyncio.Event()
        stream = asyncio.create_task(reports.follow(ready))
        await asyncio.wait_for(ready.wait(), 15)
        await client.command(host, "domain.define", args={"spec": domain_spec("b1")})
        handle = await raw.create("b1")
        target = {"name": "b1"}

        async def agent_cycle(record: bool) -> None:
            for index, op in enumerate(CYCLE):
                name, args = AGENT_OPS[op]
                command_id = uuid.uuid4().hex
                message = command_body(command_id, name, target, args)
                sent_ns = time.time_ns()
                began = time.perf_counter()
                body = await client.call(host, message, command_id)
                elapsed = time.perf_counter() - began
                replied_ns = time.time_ns()
                if not ok(body):
                    raise BenchError(f"{name}: {body.decode()}")
                if record:
                    agent_times[op].append(elapsed)
                    agent_marks.append((_labels(op, index), command_id, sent_ns, replied_ns))

        async def raw_cycle(record: bool) -> None:
            for index, op in enumerate(CYCLE):
                sent_ns = time.time_ns()
                began = time.perf_counter()
                await raw.op(handle, op)
                elapsed = time.perf_counter() - began
                if record:
                    raw_times[op].append(elapsed)
                    raw_marks.append((_labels(op, index), handle, sent_ns, time.time_ns()))

        async def echo_cycle(record: bool) -> None:
            for op in CYCLE:
                name, args = AGENT_OPS[op]
                command_id = uuid.uuid4().hex
                body = command_body(command_id, name, target, args)
                began = time.perf_counter()
                await client.call(echo_host, body, command_id)
                if record:
                    echo_times.append(time.perf_counter() - began)

        fresh = 0

        async def agent_fresh(name: str) -> float:
            await client.command(host, "domain.define", args={"spec": domain_spec(name)})
            command_id = uuid.uuid4().hex
            message = command_body(command_id, "domain.create", {"name": name})
            sent_ns = time.time_ns()
            began = time.perf_counter()
            body = await client.call(host, message, command_id)
            elapsed = time.perf_counter() - began
            agent_marks.append(((FRESH,), command_id, sent_ns, time.time_ns()))
            if not ok(body):
                raise BenchError(f"domain.create of a fresh domain: {body.decode()}")
            await client.command(host, "domain.destroy", target={"name": name})
            await client.command(host, "domain.undefine", target={"name": name})
            return elapsed

        async def raw_fresh(name: str) -> float:
            fresh_handle = await raw.create(name)
            sent_ns = time.time_ns()
            began = time.perf_counter()
            await raw.start(fresh_handle)
            elapsed = time.perf_counter() - began
            raw_marks.append(((FRESH,), fresh_handle, sent_ns, time.time_ns()))
            await raw.remove(fresh_handle)
            return elapsed

        async def fresh_starts(record: bool) -> None:
            nonlocal fresh
            fresh += 1
            name = f"b1f{fresh}"
            if fresh % 2:
                via_agent, bare = await agent_fresh(name), await raw_fresh(name)
            else:
                bare, via_agent = await raw_fresh(name), await agent_fresh(name)
            if record:
                agent_times[FRESH].append(via_agent)
                raw_times[FRESH].append(bare)

        rounds: list[Callable[[bool], Awaitable[None]]] = [
            agent_cycle,
            raw_cycle,
            echo_cycle,
            fresh_starts,
        ]
        for warmup in rounds:
            await warmup(False)
        async with agent.window("B1 op cycles"):
            for cycle in range(ctx.scale.b1_cycles):
                shift = cycle % len(rounds)
                for one in rounds[shift:] + rounds[:shift]:
                    await one(True)
        # the last reports may trail the last answers
        await asyncio.sleep(0.5)
    finally:
        if stream is not None:
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await stream
        if tap is not None:
            await tap.stop()
        await echo.stop()
        await agent.stop()
        await ctx.cleanup.sweep(ctx.docker, [host, raw_host, echo_host])

    base = Dist.of(echo_times)
    assert tap is not None
    parts = breakdown(result, base, agent_marks, tap.arrivals, raw_marks, reports)
    bound = BOUND * base.p50
    rows = []
    for op in names:
        via_agent, bare = Dist.of(agent_times[op]), Dist.of(raw_times[op])
        delta = via_agent.p50 - bare.p50
        met = delta <= bound
        low, high = delta_interval_ms(agent_times[op], raw_times[op])
        result.metrics[op] = {
            "agent": asdict(via_agent),
            "raw": asdict(bare),
            "delta_p50_ms": delta,
            "delta_p50_95_ms": [low, high],
            "delta_over_rpc_p50": delta / base.p50,
            "goal": f"agent p50 - raw p50 <= {BOUND} x bare RPC p50",
            "baseline_ms": base.p50,
            "value_ms": delta,
            "limit_ms": bound,
            "met": met,
        }
        rows.append(
            [
                op,
                fmt(via_agent.p50),
                fmt(via_agent.p99),
                fmt(bare.p50),
                fmt(bare.p99),
                fmt(delta),
                f"{fmt(low)} … {fmt(high)}",
                f"{delta / base.p50:.2f}x",
            ]
        )
        result.ratio(
            f"{op}: agent p50 - raw p50",
            delta,
            base.p50,
            unit="ms",
            baseline_what="bare RPC p50 in the same rounds",
            at_most=BOUND,
            rounds=via_agent.n,
            detail=f"agent {fmt(via_agent.p50)} ms, raw {fmt(bare.p50)} ms (n={via_agent.n}); "
            f"Δ p50 95 % interval {fmt(low)} … {fmt(high)} ms" + _own_part(parts.get(op)),
        )
    result.metrics["rpc"] = asdict(base)
    result.metrics["rpc_p50_ms"] = base.p50
    result.metrics["bound_ms"] = bound
    result.table(
        f"B1 per-op latency, ms ({QUEUE_TYPE} host queue; bare RPC p50 {fmt(base.p50)} ms, "
        f"p99 {fmt(base.p99)} ms, n={base.n}, in the same rounds)",
        [
            "op",
            "agent p50",
            "agent p99",
            "raw p50",
            "raw p99",
            "Δ p50",
            "Δ p50, 95 % interval",
            "Δ / RPC p50",
        ],
        rows,
    )
    result.notes.append(
        "start is measured twice per cycle (after shutdown and after destroy); "
        f"{FRESH!r} once per round, on a domain defined for it, against the start of a "
        f"container created for it; p99 of {len(agent_times['lookup'])} samples is close "
        "to the maximum."
    )
    show_breakdown(result, base)
    return result


def delta_interval_ms(
    agent: list[float], raw: list[float], resamples: int = 2000
) -> tuple[float, float]:
    """A bootstrap 95 % interval of agent p50 - raw p50, in ms: how far the difference of
    the two medians moves with the samples drawn (Docker's own spread; a start's is
    hundreds of ms)."""
    if not agent or not raw:
        return float("nan"), float("nan")
    draw = random.Random(15)
    deltas = sorted(
        statistics.median(draw.choices(agent, k=len(agent)))
        - statistics.median(draw.choices(raw, k=len(raw)))
        for _ in range(resamples)
    )
    return 1000 * deltas[int(0.025 * resamples)], 1000 * deltas[int(0.975 * resamples) - 1]


def _own_part(part: dict[str, float] | None) -> str:
    if part is None:
        return ""
    return (
        f"; the agent's own part {fmt(part['agent_own_ms'])} ms = "
        f"{part['agent_own_over_rpc_p50']:.2f} x bare RPC p50, the rest Docker's: its "
        f"stream's delivery {fmt(part['docker_stream_delivery_ms'])} ms, less its work "
        f"after its report {fmt(part['raw_report_to_answer_ms'])} ms (not waited for)"
    )


def breakdown(
    result: BenchResult,
    rpc: Dist,
    agent_marks: list[Mark],
    events: list[Arrival],
    raw_marks: list[Mark],
    reports: DockerReports,
) -> dict[str, dict[str, float]]:
    """Each op's latency split at Docker's report of its change (module docstring)."""
    reported_ns = {
        str(a.body.get("cause")): wall_ns(str(a.body["time"]))
        for a in events
        if a.body.get("cause") and a.body.get("time")
    }
    to_report: dict[str, list[float]] = {}
    after_report: dict[str, list[float]] = {}
    for names, command_id, sent_ns, replied_ns in agent_marks:
        at_ns = reported_ns.get(command_id)
        if at_ns is None:
            continue
        for name in names:
            to_report.setdefault(name, []).append((at_ns - sent_ns) / 1e9)
            after_report.setdefault(name, []).append((replied_ns - at_ns) / 1e9)
    raw_to: dict[str, list[float]] = {}
    raw_after: dict[str, list[float]] = {}
    for names, handle, sent_ns, answered_ns in raw_marks:
        action = REPORTS.get(names[0])
        at_ns = reports.report_ns(handle, action, sent_ns) if action else None
        if at_ns is None or at_ns > answered_ns + 1_000_000_000:
            continue
        for name in names:
            raw_to.setdefault(name, []).append((at_ns - sent_ns) / 1e9)
            raw_after.setdefault(name, []).append((answered_ns - at_ns) / 1e9)
    parts: dict[str, dict[str, float]] = {}
    delivery = _p50_ms(reports.delivery_s)
    for op in (*REPORTS, SETTLED, AFTER_STOP):
        if not to_report.get(op) or not raw_to.get(op):
            continue
        agent_to, agent_after = _p50_ms(to_report[op]), _p50_ms(after_report[op])
        docker_to, docker_after = _p50_ms(raw_to[op]), _p50_ms(raw_after[op])
        own = agent_to - docker_to + agent_after - delivery - rpc.p50
        parts[op] = {
            "agent_to_report_ms": agent_to,
            "agent_report_to_reply_ms": agent_after,
            "docker_stream_delivery_ms": delivery,
            "raw_to_report_ms": docker_to,
            "raw_report_to_answer_ms": docker_after,
            "agent_own_ms": own,
            "agent_own_over_rpc_p50": own / rpc.p50,
            "n": len(to_report[op]),
        }
    result.metrics["breakdown"] = parts
    result.metrics["stop_cleanup_after_report_ms"] = _p50_ms(raw_after.get("shutdown", []))
    return parts


def show_breakdown(result: BenchResult, rpc: Dist) -> None:
    parts: dict[str, dict[str, float]] = result.metrics["breakdown"]
    cleanup: float = result.metrics["stop_cleanup_after_report_ms"]
    rows = [
        [
            op,
            fmt(part["agent_to_report_ms"]),
            fmt(part["raw_to_report_ms"]),
            fmt(part["agent_report_to_reply_ms"]),
            fmt(part["docker_stream_delivery_ms"]),
            fmt(part["raw_report_to_answer_ms"]),
            fmt(part["agent_own_ms"]),
            f"{part['agent_own_over_rpc_p50']:.2f}x",
        ]
        for op, part in parts.items()
    ]
    result.table(
        "B1 where the time goes, p50 ms, split at Docker's report of the change "
        f"(bare RPC p50 {fmt(rpc.p50)} ms): own part = (agent to report - raw to report) "
        "+ (agent after report - Docker's stream delivery) - bare RPC",
        [
            "op",
            "agent: sent → report",
            "raw: request → report",
            "agent: report → reply",
            "Docker's stream delivery",
            "raw: report → answer",
            "agent's own part",
            "own / RPC p50",
        ],
        rows,
    )
    result.notes.append(
        "Δ p50 ≈ bare RPC + Docker's stream delivery + the agent's own part - raw report → "
        "answer: the agent answers "
        "at Docker's report, the raw call only once Docker has finished. A start right "
        "after a stop waits, as libvirt's job lock makes it, for Docker to finish the "
        f"stop, whose clean-up after its report took {fmt(cleanup)} ms (p50 of the raw "
        "shutdowns, report → answer): that wait is Docker's work inside "
        f"the {AFTER_STOP!r} row's own part; {SETTLED!r} is the same op with no stop "
        "left to finish."
    )


def wall_ns(iso: str) -> int:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return ((moment - EPOCH) // timedelta(microseconds=1)) * 1000
