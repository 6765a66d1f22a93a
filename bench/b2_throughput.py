"""B2: throughput of ``domain.get_state`` (answered without a Docker round trip), 64 in
flight, against the bare RPC echo at 64 in flight, with classic and with quorum host
queues. The 64 calls go round-robin over a few defined domains, as a poller of many
domains would send them (commands for one domain are serialised by the agent).

The agent and an echo server of the same queue type run side by side; windows of 64 in
flight (and of one call at a time) alternate between them (``interleave``).

Goal: agent throughput ≥ 70 % of the echo's, for each queue type, every reply ``ok``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.baseline import IN_FLIGHT, QUEUE_TYPES, cpu_meter, cpu_text, echo_peer
from bench.core import BenchResult, Context, Dist, Interleaved, domain_spec, fmt, interleave
from bench.procs import AgentProcess
from bench.rpc import Load, RpcClient, closed_loop, command_body, ok, sequential

DOMAINS = 8
GOAL = 0.70
WARMUP_S = 0.25


@dataclass
class Peer:
    """One side (agent or echo): how to call it, and what its windows measured."""

    call: Callable[[int], Awaitable[bool]]
    pid: int
    calls: int
    """Calls one at a time per round."""
    window_s: float
    """Seconds of 64 in flight per round."""
    loads: list[Load] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)

    async def single(self, round_: int) -> list[float]:
        return (await sequential(self.call, self.calls, warmup=2)).latencies

    async def loaded(self, round_: int) -> float:
        meter = cpu_meter(self.pid)
        load = await closed_loop(self.call, IN_FLIGHT, self.window_s, WARMUP_S)
        for name, used in meter.stop().items():
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + used
        self.loads.append(load)
        return load.rate

    def cpu_us_per_call(self) -> dict[str, float]:
        completed = max(sum(load.completed for load in self.loads), 1)
        return {name: 1e6 * used / completed for name, used in self.cpu_s.items()}


async def measure(
    ctx: Context, client: RpcClient, queue_type: str
) -> tuple[dict[str, Peer], Interleaved, Interleaved]:
    """The agent and an echo of ``queue_type``: one call at a time, then 64 in flight,
    in interleaved rounds."""
    rounds = ctx.scale.rounds
    window_s = ctx.scale.throughput_s / rounds
    calls = max(1, ctx.scale.echo_latency_calls // rounds)
    host = ctx.host(f"b2{queue_type[0]}")
    agent = AgentProcess(ctx, client, host, queue_type)
    try:
        await agent.start()
        for index in range(DOMAINS):
            await client.command(host, "domain.define", args={"spec": domain_spec(f"b2-{index}")})

        async def get_state(n: int) -> bool:
            command_id = uuid.uuid4().hex
            body = command_body(command_id, "domain.get_state", {"name": f"b2-{n % DOMAINS}"})
            return ok(await client.call(host, body, command_id))

        async with echo_peer(ctx, client, queue_type) as echo:
            sides = {
                "agent": Peer(get_state, agent.pid, calls, window_s),
                "echo": Peer(echo.one, echo.process.pid, calls, window_s),
            }
            latency = await interleave({name: side.single for name, side in sides.items()}, rounds)
            async with agent.window(f"B2 get_state x64 ({queue_type})"):
                throughput = await interleave(
                    {name: side.loaded for name, side in sides.items()}, rounds
                )
    finally:
        await agent.stop()
        await ctx.cleanup.sweep(ctx.docker, [host])
    return sides, latency, throughput


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    result = BenchResult("B2", "get_state throughput, 64 in flight, vs bare RPC echo")
    rows = []
    rounds = ctx.scale.rounds
    for queue_type in QUEUE_TYPES:
        sides, latency, throughput = await measure(ctx, client, queue_type)
        rate = throughput.total("agent") / rounds
        echo_rate = throughput.total("echo") / rounds
        share = rate / echo_rate if echo_rate else float("nan")
        failures = sum(load.failures for load in sides["agent"].loads)
        single, single_echo = latency.dist("agent"), latency.dist("echo")
        loaded = Dist.of([s for load in sides["agent"].loads for s in load.latencies])
        cpu, echo_cpu = sides["agent"].cpu_us_per_call(), sides["echo"].cpu_us_per_call()
        result.metrics[queue_type] = {
            "rate_64": rate,
            "echo_rate_64": echo_rate,
            "share": share,
            "p50_ms": single.p50,
            "p99_ms": single.p99,
            "echo_p50_ms": single_echo.p50,
            "echo_p99_ms": single_echo.p99,
            "p50_64_ms": loaded.p50,
            "p99_64_ms": loaded.p99,
            "failures": failures,
            "cpu_us_per_call": cpu,
            "echo_cpu_us_per_call": echo_cpu,
            "interleaved": {"latency": latency.summary(), "throughput": throughput.summary()},
        }
        rows.append(
            [
                queue_type,
                f"{fmt(rate)}/s",
                f"{fmt(echo_rate)}/s",
                f"{100 * share:.0f} %",
                fmt(single.p50),
                fmt(single_echo.p50),
                fmt(single.p50 - single_echo.p50),
                fmt(loaded.p99),
                cpu_text(cpu),
                cpu_text(echo_cpu),
            ]
        )
        result.ratio(
            f"get_state throughput @64 ({queue_type} host queue)",
            rate,
            echo_rate,
            unit="/s",
            baseline_what="bare RPC echo @64",
            at_least=GOAL,
            rounds=rounds,
            detail=f"{failures} replies not ok" if failures else "",
            valid=failures == 0,
        )
        ctx.log(f"B2 {queue_type}: {rate:.0f}/s = {100 * share:.0f} % of echo")
    result.table(
        f"B2 get_state (agent) vs echo, {rounds} interleaved rounds per measure",
        [
            "host queue",
            "agent @64",
            "echo @64",
            "agent/echo",
            "agent p50 ms (1 in flight)",
            "echo p50 ms",
            "Δ p50 ms",
            "agent p99 @64 ms",
            "CPU per call @64, µs (agent)",
            "(echo)",
        ],
        rows,
    )
    return result
