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
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict

from bench.core import BenchError, BenchResult, Context, Dist, domain_spec, fmt
from bench.procs import AgentProcess, EchoProcess
from bench.raw import AGENT_OPS, CYCLE, OPS, RawDocker
from bench.rpc import RpcClient, command_body, ok

QUEUE_TYPE = "quorum"
BOUND = 1.5
FRESH = "start (fresh domain)"
"""The start of a domain whose container never ran."""


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
    try:
        await agent.start()
        await echo.start()
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
            began = time.perf_counter()
            body = await client.command_raw(host, "domain.create", {"name": name})
            elapsed = time.perf_counter() - began
            if not ok(body):
                raise BenchError(f"domain.create of a fresh domain: {body.decode()}")
            await client.command(host, "domain.destroy", target={"name": name})
            await client.command(host, "domain.undefine", target={"name": name})
            return elapsed

        async def raw_fresh(name: str) -> float:
            fresh_handle = await raw.create(name)
            began = time.perf_counter()
            await raw.start(fresh_handle)
            elapsed = time.perf_counter() - began
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
    finally:
        await echo.stop()
        await agent.stop()
        await ctx.cleanup.sweep(ctx.docker, [host, raw_host, echo_host])

    base = Dist.of(echo_times)
    bound = BOUND * base.p50
    rows = []
    for op in names:
        via_agent, bare = Dist.of(agent_times[op]), Dist.of(raw_times[op])
        delta = via_agent.p50 - bare.p50
        met = delta <= bound
        result.metrics[op] = {
            "agent": asdict(via_agent),
            "raw": asdict(bare),
            "delta_p50_ms": delta,
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
            detail=f"agent {fmt(via_agent.p50)} ms, raw {fmt(bare.p50)} ms (n={via_agent.n})",
        )
    result.metrics["rpc"] = asdict(base)
    result.metrics["rpc_p50_ms"] = base.p50
    result.metrics["bound_ms"] = bound
    result.table(
        f"B1 per-op latency, ms ({QUEUE_TYPE} host queue; bare RPC p50 {fmt(base.p50)} ms, "
        f"p99 {fmt(base.p99)} ms, n={base.n}, in the same rounds)",
        ["op", "agent p50", "agent p99", "raw p50", "raw p99", "Δ p50", "Δ / RPC p50"],
        rows,
    )
    result.notes.append(
        "start is measured twice per cycle (after shutdown and after destroy); "
        f"{FRESH!r} once per round, on a domain defined for it, against the start of a "
        f"container created for it; p99 of {len(agent_times['lookup'])} samples is close "
        "to the maximum."
    )
    return result
