"""B9: a host's bulk statistics (``host.get_all_domain_stats``, every default group of
every domain) through the agent, against reading the same kernel files directly from
this one Python process, in the same run and on the same running domains.

The direct side reads, per domain, the files the agent reads for the default groups
(its cgroup's CPU, memory and pids files, its ``cgroup.procs`` and each process's I/O
accounting for the block group, its ``/proc/PID/net/dev`` for the interface group) with
the same parsers, opening each file per read as a plain reader does: that is the goal's
baseline. The agent keeps a running domain's files open and reads them again from their
start, so a third side, in the same rounds, reads directly that way too: the agent
against it is what the bus, the agent and JSON add to the reading itself. Every side
finds each domain's cgroup directories once (the agent caches them per run of a domain;
the direct sides before their first round), so all read only counters.
Rounds alternate which side goes first. For scale, the engine's one-shot stats API is
timed once over the same domains (one call per domain, all at once).

The agent side is timed from sending the command to holding the decoded reply (parsed
by pydantic-core's JSON parser, as the client library parses it); the decoding alone and
the CPU each process spent per call (agent, broker, this client; the direct sides' own)
are recorded too: CPU is steadier than the wall clock on a shared machine, and says
whose work a miss is.

Goal (issue 15, goal 4): agent / direct per bulk call ≤ 1.5.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict

import pydantic_core

from agent.host import cgroups
from bench.core import (
    BenchResult,
    Context,
    CpuMeter,
    Dist,
    amqp_port,
    broker_pid,
    domain_spec,
    fmt,
)
from bench.procs import AgentProcess
from bench.rpc import RpcClient

QUEUE_TYPE = "quorum"
FILES_PER_DOMAIN = 16
ROUNDS = 8
GOAL = 1.5


Domain = tuple[int, cgroups.Cgroup, cgroups.Read]
"""A domain's init, its cgroup, and how its files are read."""


def read_directly(domains: list[Domain]) -> int:
    """Every default group's files of each domain; the number of values read."""
    values = 0
    for pid, cgroup, read in domains:
        cpu = cgroups.cpu_times(cgroup, read)
        memory = cgroups.memory(cgroup, read)
        io = cgroups.block_io(cgroup, read=read)
        interfaces = cgroups.interfaces(pid, read=read)
        current, _ = cgroups.pids(cgroup, read)
        values += 3 + 5 + 4 + 8 * len(interfaces) + 1
        assert cpu.total >= 0 and memory.usage >= 0 and io.wr_bytes >= 0 and current >= 0
    return values


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    count = ctx.scale.b9_domains
    calls = ctx.scale.b9_calls
    result = BenchResult("B9", f"bulk statistics of {count} running domains vs direct reads")
    host = ctx.host("b9")
    agent = AgentProcess(ctx, client, host, QUEUE_TYPE)
    times: dict[str, list[float]] = {"agent": [], "direct": [], "kept": [], "decode": []}
    cpu: dict[str, float] = {}
    engine_s = 0.0
    held: list[cgroups.KeptFiles] = []
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
        found: list[Domain] = [(pid, cgroups.Cgroup.of(pid), cgroups.read_text) for pid in pids]
        budget = cgroups.Budget(len(found) * FILES_PER_DOMAIN)
        held = [cgroups.KeptFiles(budget) for _ in found]
        kept: list[Domain] = [
            (pid, cgroup, files) for (pid, cgroup, _), files in zip(found, held, strict=True)
        ]

        broker = broker_pid(amqp_port(ctx.amqp_url))

        async def via_agent() -> None:
            meter = CpuMeter(
                {
                    "broker": [broker] if broker else [],
                    "agent": [agent.pid],
                    "client": [os.getpid()],
                }
            )
            meter.start()
            for _ in range(calls):
                began = time.perf_counter()
                raw = await client.command_raw(host, "host.get_all_domain_stats")
                received = time.perf_counter()
                answer = pydantic_core.from_json(raw)
                times["agent"].append(time.perf_counter() - began)
                times["decode"].append(time.perf_counter() - received)
                assert answer["ok"] and len(answer["result"]["records"]) == count
            for party, used in meter.stop().items():
                cpu[f"agent side: {party}"] = cpu.get(f"agent side: {party}", 0.0) + used

        async def direct() -> None:
            for side, domains in (("direct", found), ("kept", kept)):
                used = time.process_time()
                for _ in range(calls):
                    began = time.perf_counter()
                    read_directly(domains)
                    times[side].append(time.perf_counter() - began)
                cpu[side] = cpu.get(side, 0.0) + time.process_time() - used

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
        for files in held:
            files.close()
        await agent.stop()
        await ctx.cleanup.sweep(ctx.docker, [host])

    agent_ms, direct_ms = Dist.of(times["agent"]), Dist.of(times["direct"])
    kept_ms = Dist.of(times["kept"])
    ratio = agent_ms.p50 / direct_ms.p50
    result.metrics = {
        "domains": count,
        "calls_per_round": calls,
        "rounds": ROUNDS,
        "agent_ms": asdict(agent_ms),
        "direct_ms": asdict(direct_ms),
        "direct_kept_ms": asdict(kept_ms),
        "engine_stats_api_s": engine_s,
        "decode_ms": asdict(Dist.of(times["decode"])),
        "cpu_ms_per_call": {party: 1000 * used / (calls * ROUNDS) for party, used in cpu.items()},
        "ratio": ratio,
    }
    result.table(
        f"B9 all statistics of {count} domains, {calls} calls x {ROUNDS} rounds per side",
        ["side", "p50 ms", "p90 ms", "p99 ms", "per domain p50 ms"],
        [
            [name, fmt(d.p50), fmt(d.p90), fmt(d.p99), fmt(d.p50 / count)]
            for name, d in (
                ("agent (bus)", agent_ms),
                ("direct reads", direct_ms),
                ("direct reads, files kept open", kept_ms),
            )
        ],
    )
    result.notes.append(
        "The goal's baseline opens each file per read, as a plain reader does. The agent "
        "keeps a running domain's files open and reads them again from their start (no "
        "path walk); against a direct reader doing the same, in the same rounds, the agent "
        f"takes {agent_ms.p50 / kept_ms.p50:.2f} x: that is what the bus, the agent and "
        "JSON add to the reading itself."
    )
    result.notes.append(
        f"The engine's one-shot stats API for the same {count} domains, all at once: "
        f"{engine_s * 1000:,.0f} ms."
    )
    result.ratio(
        f"bulk statistics of {count} domains, one call (p50)",
        agent_ms.p50,
        direct_ms.p50,
        unit="ms",
        baseline_what="direct cgroup reads in one process (p50)",
        at_most=GOAL,
        rounds=ROUNDS,
    )
    return result
