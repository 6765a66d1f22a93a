"""B6: one host with 1,000 defined domains (200 running), real Docker driver.

The domains are defined and started through the agent (``virtbus agent``, quorum host
queue). Then: ``host.list_domains`` latency (one call at a time, all 1,000 records in
each reply), the agent's RSS, and restarts: SIGTERM, spawn again, time from spawn to the
``agent.online`` event (the agent re-lists Docker and reconciles 1,000 containers first).
Baselines in the same run: the same agent with no domains (RSS, start-up), and a bare
RPC round trip.

Goals: list p50 ≤ 20 ms; RSS ≤ 100 MB; start-up to ready ≤ 3 s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict

from agent.client import connect
from bench.baseline import rpc
from bench.core import BenchError, BenchResult, Context, Dist, domain_spec, fmt, rss_kib
from bench.procs import AgentProcess
from bench.rpc import RpcClient, ok

QUEUE_TYPE = "quorum"
DEFINE_AT_ONCE = 32
START_AT_ONCE = 16
LIST_GOAL_MS = 20.0
RSS_GOAL_MB = 100.0
STARTUP_GOAL_S = 3.0


async def populate(ctx: Context, client: RpcClient, host: str, total: int, running: int) -> float:
    slots = asyncio.Semaphore(DEFINE_AT_ONCE)
    began = time.perf_counter()

    async def define(index: int) -> None:
        async with slots:
            await client.command(
                host, "domain.define", args={"spec": domain_spec(f"b6-{index:04d}")}
            )
            if index % 200 == 199:
                ctx.log(f"B6 defined {index + 1}/{total}")

    await asyncio.gather(*(define(index) for index in range(total)))
    ctx.log(f"B6 defined {total} in {time.perf_counter() - began:.1f} s; starting {running}")
    starts = asyncio.Semaphore(START_AT_ONCE)

    async def start(index: int) -> None:
        async with starts:
            await client.command(host, "domain.create", target={"name": f"b6-{index:04d}"})

    await asyncio.gather(*(start(index) for index in range(running)))
    return time.perf_counter() - began


async def list_latency(client: RpcClient, host: str, calls: int) -> tuple[list[float], int]:
    sizes = 0
    for _ in range(3):
        body = await client.command_raw(host, "host.list_domains")
        if not ok(body):
            raise BenchError(f"host.list_domains: {body[:200]!r}")
        sizes = len(body)
    latencies = []
    for _ in range(calls):
        began = time.perf_counter()
        body = await client.command_raw(host, "host.list_domains")
        latencies.append(time.perf_counter() - began)
    return latencies, sizes


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    scale = ctx.scale
    total, running = scale.b6_domains, scale.b6_running
    result = BenchResult("B6", f"{total:,} domains ({running} running) on one host")
    host = ctx.host("b6")
    agent = AgentProcess(ctx, client, host, QUEUE_TYPE)
    try:
        empty_start = await agent.start()
        empty_lists, _ = await list_latency(client, host, scale.b6_list_calls)
        empty_rss, _ = rss_kib(agent.pid)
        ctx.log(f"B6 populating {total} domains ({running} running)")
        populate_s = await populate(ctx, client, host, total, running)
        ctx.log(f"B6 populated in {populate_s:.1f} s")
        async with agent.window(f"B6 host.list_domains x{scale.b6_list_calls}"):
            lists, reply_bytes = await list_latency(client, host, scale.b6_list_calls)
        rss, hwm = rss_kib(agent.pid)
        async with connect(ctx.amqp_url) as conn:
            typed = []
            for _ in range(min(10, scale.b6_list_calls)):
                began = time.perf_counter()
                listed = await conn.list_all_domains(host)
                typed.append(time.perf_counter() - began)
            if len(listed) != total:
                raise BenchError(f"listed {len(listed)} domains, expected {total}")
        startups = []
        restart_rss = []
        for restart in range(scale.b6_restarts):
            await agent.stop()
            startups.append(await agent.start(profile_startup=restart == 0))
            body = await client.command_raw(host, "host.list_domains")
            count = len(json.loads(body)["result"]["domains"])
            if count != total:
                raise BenchError(f"after restart the agent lists {count} domains, not {total}")
            restart_rss.append(rss_kib(agent.pid)[0])
            ctx.log(f"B6 restart with {total} domains: ready after {startups[-1]:.2f} s")
    finally:
        await agent.stop()
        ctx.log(f"B6 removing {total} containers")
        await ctx.cleanup.sweep(ctx.docker, [host])

    base = rpc(ctx, QUEUE_TYPE)
    listing, empty_listing, typed_listing = Dist.of(lists), Dist.of(empty_lists), Dist.of(typed)
    startup = statistics.median(startups)
    rss_mb, hwm_mb, empty_mb = rss / 1024, hwm / 1024, empty_rss / 1024
    result.metrics = {
        "domains": total,
        "running": running,
        "populate_s": populate_s,
        "list_ms": asdict(listing),
        "list_empty_ms": asdict(empty_listing),
        "list_typed_client_ms": asdict(typed_listing),
        "list_reply_bytes": reply_bytes,
        "rss_kib": rss,
        "hwm_kib": hwm,
        "rss_empty_kib": empty_rss,
        "rss_after_restart_kib": restart_rss,
        "startup_s": startups,
        "startup_empty_s": empty_start,
        "rpc_p50_ms": base["p50_ms"],
    }
    result.table(
        f"B6 one host, {total:,} domains ({running} running) vs the same agent empty",
        ["measure", f"{total:,} domains", "empty agent", "Δ"],
        [
            [
                "host.list_domains p50 ms",
                fmt(listing.p50),
                fmt(empty_listing.p50),
                fmt(listing.p50 - empty_listing.p50),
            ],
            [
                "host.list_domains p99 ms",
                fmt(listing.p99),
                fmt(empty_listing.p99),
                fmt(listing.p99 - empty_listing.p99),
            ],
            ["list via typed client p50 ms", fmt(typed_listing.p50), "", ""],
            [
                "agent RSS MB (peak)",
                f"{rss_mb:.1f} ({hwm_mb:.1f})",
                f"{empty_mb:.1f}",
                f"{rss_mb - empty_mb:.1f}",
            ],
            [
                "spawn → agent.online s",
                " / ".join(f"{s:.2f}" for s in startups),
                f"{empty_start:.2f}",
                f"{startup - empty_start:.2f}",
            ],
        ],
    )
    result.notes.append(
        f"list reply: {reply_bytes / 1024:.0f} KiB of JSON; bare RPC p50 {fmt(base['p50_ms'])} ms. "
        f"Defining {total} and starting {running} through the agent took {populate_s:.0f} s."
    )
    result.goal(
        f"host.list_domains p50 ({total:,} domains)",
        listing.p50,
        "ms",
        f"≤ {LIST_GOAL_MS:g} ms",
        listing.p50 <= LIST_GOAL_MS,
        f"empty agent {fmt(empty_listing.p50)} ms",
    )
    result.goal(
        "agent RSS",
        rss_mb,
        "MB",
        f"≤ {RSS_GOAL_MB:g} MB",
        rss_mb <= RSS_GOAL_MB,
        f"empty agent {empty_mb:.1f} MB; peak {hwm_mb:.1f} MB",
    )
    result.goal(
        "start-up to ready (spawn → agent.online)",
        startup,
        "s",
        f"≤ {STARTUP_GOAL_S:g} s",
        startup <= STARTUP_GOAL_S,
        f"empty agent {empty_start:.2f} s",
    )
    return result
