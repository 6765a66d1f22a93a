"""B1: per-op latency through agent + bus, against the bare aiodocker call.

One domain through the agent (quorum host queue, the default) and one container driven
by raw aiodocker go through the same cycles — start, suspend, resume, lookup, shutdown,
start, destroy — alternating which goes first. The agent's latency is the round trip
of a command (the agent answers once Docker has reported the change); the raw latency
is the one Docker call that does the same (a SIGKILL answers once the container is
gone; stop once it has stopped). The domain sleeps under Docker's init, which forwards
SIGTERM, so shutdown takes no grace period.

Goal: agent p50 - raw p50 ≤ 1.5 x bare RPC p50 (quorum).
"""

from __future__ import annotations

import time
from dataclasses import asdict

from bench.baseline import rpc
from bench.core import BenchError, BenchResult, Context, Dist, domain_spec, fmt
from bench.procs import AgentProcess
from bench.raw import AGENT_OPS, CYCLE, OPS, RawDocker
from bench.rpc import RpcClient, ok

QUEUE_TYPE = "quorum"
BOUND = 1.5


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    result = BenchResult("B1", "per-op latency: agent + bus vs raw aiodocker")
    host = ctx.host("b1")
    raw_host = ctx.host("b1raw")
    agent = AgentProcess(ctx, client, host, QUEUE_TYPE)
    raw = RawDocker(ctx.docker, raw_host)
    agent_times: dict[str, list[float]] = {op: [] for op in OPS}
    raw_times: dict[str, list[float]] = {op: [] for op in OPS}
    try:
        await agent.start()
        await client.command(host, "domain.define", args={"spec": domain_spec("b1")})
        handle = await raw.create("b1")
        target = {"name": "b1"}

        async def agent_cycle(record: bool) -> None:
            for op in CYCLE:
                name, args = AGENT_OPS[op]
                began = time.perf_counter()
                body = await client.command_raw(host, name, target, args)
                elapsed = time.perf_counter() - began
                if not ok(body):
                    raise BenchError(f"{name}: {body.decode()}")
                if record:
                    agent_times[op].append(elapsed)

        async def raw_cycle(record: bool) -> None:
            for op in CYCLE:
                began = time.perf_counter()
                await raw.op(handle, op)
                if record:
                    raw_times[op].append(time.perf_counter() - began)

        await agent_cycle(record=False)
        await raw_cycle(record=False)
        async with agent.window("B1 op cycles"):
            for cycle in range(ctx.scale.b1_cycles):
                first, second = (agent_cycle, raw_cycle) if cycle % 2 else (raw_cycle, agent_cycle)
                await first(True)
                await second(True)
    finally:
        await agent.stop()
        await ctx.cleanup.sweep(ctx.docker, [host, raw_host])

    base = rpc(ctx, QUEUE_TYPE)
    bound = BOUND * base["p50_ms"]
    rows = []
    for op in OPS:
        via_agent, bare = Dist.of(agent_times[op]), Dist.of(raw_times[op])
        delta = via_agent.p50 - bare.p50
        result.metrics[op] = {
            "agent": asdict(via_agent),
            "raw": asdict(bare),
            "delta_p50_ms": delta,
            "delta_over_rpc_p50": delta / base["p50_ms"],
        }
        rows.append(
            [
                op,
                fmt(via_agent.p50),
                fmt(via_agent.p99),
                fmt(bare.p50),
                fmt(bare.p99),
                fmt(delta),
                f"{delta / base['p50_ms']:.2f}x",
            ]
        )
        result.ratio(
            f"{op}: agent p50 - raw p50",
            delta,
            base["p50_ms"],
            unit="ms",
            baseline_what="bare RPC p50",
            at_most=BOUND,
            interleaved=False,
            detail=f"agent {fmt(via_agent.p50)} ms, raw {fmt(bare.p50)} ms (n={via_agent.n})",
        )
    result.metrics["rpc_p50_ms"] = base["p50_ms"]
    result.metrics["bound_ms"] = bound
    result.table(
        f"B1 per-op latency, ms ({QUEUE_TYPE} host queue; bare RPC p50 {fmt(base['p50_ms'])} ms)",
        ["op", "agent p50", "agent p99", "raw p50", "raw p99", "Δ p50", "Δ / RPC p50"],
        rows,
    )
    result.notes.append(
        "start is measured twice per cycle (after shutdown and after destroy); p99 of "
        f"{len(agent_times['lookup'])} samples is close to the maximum."
    )
    return result
