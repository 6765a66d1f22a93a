"""B9: a host's bulk statistics (``host.get_all_domain_stats``, every default group of
every domain) through the agent, against reading the same kernel files directly from
this one Python process, in the same run and on the same running domains.

The direct side reads, per domain, what the agent reads (its cgroup's CPU, memory and
pids files, its processes' I/O accounting, its ``/proc/PID/net/dev``) with the same
readers, so the ratio is what the bus, the agent and JSON add to the reading itself.
Rounds alternate which side goes first. For scale, the engine's one-shot stats API is
timed once over the same domains (one call per domain, all at once).

Goal: agent / direct per bulk call ≤ 3.0 (one bus round trip on top of the reading).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

from agent.host import cgroups
from bench.core import BenchResult, Context, Dist, domain_spec, fmt
from bench.procs import AgentProcess
from bench.rpc import RpcClient

QUEUE_TYPE = "quorum"
ROUNDS = 4
GOAL = 3.0


def read_directly(pids: list[int]) -> int:
    """Every default group's files of each domain; the number of values read."""
    values = 0
    for pid in pids:
        cgroup = cgroups.Cgroup.of(pid)
        cpu = cgroups.cpu_times(cgroup)
        memory = cgroups.memory(cgroup)
        io = cgroups.block_io(cgroup)
        interfaces = cgroups.interfaces(pid)
        current, _ = cgroups.pids(cgroup)
        values += 3 + 5 + 4 + 8 * len(interfaces) + 1
        assert cpu.total >= 0 and memory.usage >= 0 and io.wr_bytes >= 0 and current >= 0
    return values


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    count = ctx.scale.b9_domains
    calls = ctx.scale.b9_calls
    result = BenchResult("B9", f"bulk statistics of {count} running domains vs direct reads")
    host = ctx.host("b9")
    agent = AgentProcess(ctx, client, host, QUEUE_TYPE)
    times: dict[str, list[float]] = {"agent": [], "direct": []}
    engine_s = 0.0
    try:
        await agent.start()
        slots = asyncio.Semaphore(16)

        async def start(index: int) -> int:
            async with slots:
                record = await client.command(
                    host, "domain.create_xml", args={"spec": domain_spec(f"b9-{index:03d}")}
                )
            return int(record["id"])

        pids = list(await asyncio.gather(*(start(index) for index in range(count))))

        async def via_agent() -> None:
            for _ in range(calls):
                began = time.perf_counter()
                answer = await client.command(host, "host.get_all_domain_stats")
                times["agent"].append(time.perf_counter() - began)
                assert len(answer["records"]) == count

        async def direct() -> None:
            for _ in range(calls):
                began = time.perf_counter()
                read_directly(pids)
                times["direct"].append(time.perf_counter() - began)

        for round_ in range(ROUNDS):
            order = (direct, via_agent) if round_ % 2 == 0 else (via_agent, direct)
            for side in order:
                if side is via_agent:
                    async with agent.window(f"B9 round {round_}"):
                        await side()
                else:
                    await side()
            ctx.log(f"B9 round {round_} done")

        names = [f"{host}.b9-{index:03d}" for index in range(count)]
        began = time.perf_counter()
        await asyncio.gather(
            *(
                ctx.docker._query_json(
                    f"containers/{name}/stats", params={"stream": "0", "one-shot": "1"}
                )
                for name in names
            )
        )
        engine_s = time.perf_counter() - began
    finally:
        await agent.stop()
        await ctx.cleanup.sweep(ctx.docker, [host])

    agent_ms, direct_ms = Dist.of(times["agent"]), Dist.of(times["direct"])
    ratio = agent_ms.p50 / direct_ms.p50
    result.metrics = {
        "domains": count,
        "calls_per_round": calls,
        "rounds": ROUNDS,
        "agent_ms": asdict(agent_ms),
        "direct_ms": asdict(direct_ms),
        "engine_stats_api_s": engine_s,
        "ratio": ratio,
    }
    result.table(
        f"B9 all statistics of {count} domains, {calls} calls x {ROUNDS} rounds per side",
        ["side", "p50 ms", "p90 ms", "p99 ms", "per domain p50 ms"],
        [
            [name, fmt(d.p50), fmt(d.p90), fmt(d.p99), fmt(d.p50 / count)]
            for name, d in (("agent (bus)", agent_ms), ("direct reads", direct_ms))
        ],
    )
    result.notes.append(
        f"The engine's one-shot stats API for the same {count} domains, all at once: "
        f"{engine_s * 1000:,.0f} ms."
    )
    result.goal(
        "bulk call agent / direct (p50)",
        ratio,
        "x",
        f"≤ {GOAL:.1f}",
        ratio <= GOAL,
        f"agent {fmt(agent_ms.p50)} ms, direct {fmt(direct_ms.p50)} ms",
    )
    return result
