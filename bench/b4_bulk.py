"""B4: 100 domains defined, started, destroyed and undefined concurrently via the agent,
against raw aiodocker create/start/kill/remove at the same concurrency.

Each domain's four steps run in order; ``CONCURRENCY`` domains are in their life at any
moment on both sides (the agent's own ``--concurrency`` default is the same 32, so the
agent never queues for a slot). Rounds alternate which side goes first (``interleave``).

Goal: agent wall time / raw wall time ≤ 1.10.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict

from bench.core import BenchResult, Context, Dist, Side, domain_spec, fmt, interleave
from bench.procs import AgentProcess
from bench.raw import RawDocker
from bench.rpc import RpcClient

QUEUE_TYPE = "quorum"
CONCURRENCY = 32
GOAL = 1.10


async def wave(count: int, life: Callable[[int], Awaitable[None]]) -> tuple[float, list[float]]:
    """Wall time of ``count`` lives at ``CONCURRENCY``, and each life's duration."""
    slots = asyncio.Semaphore(CONCURRENCY)
    lives: list[float] = []

    async def one(index: int) -> None:
        async with slots:
            began = time.perf_counter()
            await life(index)
            lives.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(count)))
    return time.perf_counter() - started, lives


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    result = BenchResult("B4", f"{ctx.scale.b4_domains} domains through their life, concurrently")
    host = ctx.host("b4")
    raw_host = ctx.host("b4raw")
    agent = AgentProcess(ctx, client, host, QUEUE_TYPE)
    raw = RawDocker(ctx.docker, raw_host)
    lives: dict[str, list[float]] = {"agent": [], "raw": []}
    count = ctx.scale.b4_domains
    try:
        await agent.start()

        async def via_agent(index: int, round_: int) -> None:
            name = f"b4-{round_}-{index:03d}"
            target = {"name": name}
            await client.command(host, "domain.define", args={"spec": domain_spec(name)})
            await client.command(host, "domain.create", target=target)
            await client.command(host, "domain.destroy", target=target)
            await client.command(host, "domain.undefine", target=target)

        async def via_docker(index: int, round_: int) -> None:
            handle = await raw.create(f"b4-{round_}-{index:03d}")
            await raw.start(handle)
            await raw.kill(handle)
            await raw.remove(handle)

        def side(name: str, life: Callable[[int, int], Awaitable[None]]) -> Side:
            async def one_round(round_: int) -> float:
                async def bound(index: int) -> None:
                    await life(index, round_)

                async with (
                    agent.window(f"B4 round {round_}")
                    if name == "agent"
                    else contextlib.nullcontext()
                ):
                    wall, durations = await wave(count, bound)
                lives[name].extend(durations)
                ctx.log(f"B4 round {round_} {name}: {wall:.2f} s")
                return wall

            return one_round

        measured = await interleave(
            {"raw": side("raw", via_docker), "agent": side("agent", via_agent)},
            ctx.scale.b4_rounds,
        )
        walls = measured.samples
    finally:
        await agent.stop()
        await ctx.cleanup.sweep(ctx.docker, [host, raw_host])

    agent_life, raw_life = Dist.of(lives["agent"]), Dist.of(lives["raw"])
    result.metrics = {
        "domains": count,
        "concurrency": CONCURRENCY,
        "walls_s": walls,
        "ratio": sum(walls["agent"]) / sum(walls["raw"]),
        "interleaved": measured.summary(),
        "agent_life_ms": asdict(agent_life),
        "raw_life_ms": asdict(raw_life),
    }
    result.table(
        f"B4 {count} domains, {CONCURRENCY} at once, {ctx.scale.b4_rounds} round(s) per side",
        ["side", "wall s (per round)", "one life p50 ms", "one life p99 ms"],
        [
            [
                "agent",
                " / ".join(f"{w:.2f}" for w in walls["agent"]),
                fmt(agent_life.p50),
                fmt(agent_life.p99),
            ],
            [
                "raw aiodocker",
                " / ".join(f"{w:.2f}" for w in walls["raw"]),
                fmt(raw_life.p50),
                fmt(raw_life.p99),
            ],
        ],
    )
    result.ratio(
        f"wall time of {count} domains' lives, {CONCURRENCY} at once",
        sum(walls["agent"]),
        sum(walls["raw"]),
        unit="s",
        baseline_what="raw aiodocker create/start/kill/remove",
        at_most=GOAL,
        rounds=measured.rounds,
    )
    return result
