"""B2: throughput of ``domain.get_state`` (answered without a Docker round trip), 64 in
flight, against the bare RPC echo at 64 in flight, with classic and with quorum host
queues. The 64 calls go round-robin over a few defined domains, as a poller of many
domains would send them (commands for one domain are serialised by the agent).

Goal: agent throughput ≥ 70 % of the echo's, for each queue type.
"""

from __future__ import annotations

import uuid

from bench.baseline import IN_FLIGHT, QUEUE_TYPES, cpu_meter, cpu_text, per_call, rpc
from bench.core import BenchResult, Context, Dist, domain_spec, fmt
from bench.procs import AgentProcess
from bench.rpc import RpcClient, closed_loop, command_body, ok, sequential

DOMAINS = 8
GOAL = 0.70


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    result = BenchResult("B2", "get_state throughput, 64 in flight, vs bare RPC echo")
    rows = []
    for queue_type in QUEUE_TYPES:
        host = ctx.host(f"b2{queue_type[0]}")
        agent = AgentProcess(ctx, client, host, queue_type)
        try:
            await agent.start()
            for index in range(DOMAINS):
                await client.command(
                    host, "domain.define", args={"spec": domain_spec(f"b2-{index}")}
                )

            async def one(n: int, host: str = host) -> bool:
                command_id = uuid.uuid4().hex
                target = {"name": f"b2-{n % DOMAINS}"}
                body = command_body(command_id, "domain.get_state", target)
                return ok(await client.call(host, body, command_id))

            latency = await sequential(one, ctx.scale.echo_latency_calls)
            async with agent.window(f"B2 get_state x64 ({queue_type})"):
                meter = cpu_meter(agent.pid)
                load = await closed_loop(one, IN_FLIGHT, ctx.scale.throughput_s)
                cpu = per_call(meter, load.completed)
        finally:
            await agent.stop()
            await ctx.cleanup.sweep(ctx.docker, [host])
        base = rpc(ctx, queue_type)
        share = load.rate / base["rate_64"]
        single, loaded = Dist.of(latency.latencies), Dist.of(load.latencies)
        result.metrics[queue_type] = {
            "rate_64": load.rate,
            "echo_rate_64": base["rate_64"],
            "share": share,
            "p50_ms": single.p50,
            "p99_ms": single.p99,
            "echo_p50_ms": base["p50_ms"],
            "p50_64_ms": loaded.p50,
            "p99_64_ms": loaded.p99,
            "failures": load.failures + latency.failures,
            "cpu_us_per_call": cpu,
            "echo_cpu_us_per_call": base["cpu_us_per_call"],
        }
        rows.append(
            [
                queue_type,
                f"{fmt(load.rate)}/s",
                f"{fmt(base['rate_64'])}/s",
                f"{100 * share:.0f} %",
                fmt(single.p50),
                fmt(base["p50_ms"]),
                fmt(single.p50 - base["p50_ms"]),
                fmt(loaded.p99),
                cpu_text(cpu),
                cpu_text(base["cpu_us_per_call"]),
            ]
        )
        result.goal(
            f"get_state @64 / echo @64 ({queue_type})",
            100 * share,
            "%",
            f"≥ {100 * GOAL:.0f} %",
            share >= GOAL and load.failures == 0,
            f"{load.rate:.0f}/s vs {base['rate_64']:.0f}/s",
        )
        ctx.log(f"B2 {queue_type}: {load.rate:.0f}/s = {100 * share:.0f} % of echo")
    result.table(
        "B2 get_state (agent) vs echo, 64 in flight",
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
