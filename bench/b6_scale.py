"""B6: one host with 1,000 defined domains (200 running), real Docker driver.

The domains are defined and started through the agent (``virtbus agent``, quorum host
queue); a second agent of the same kind runs with no domains. Measured, each against a
baseline in rounds alternating with it (``interleave``):

- ``host.list_domains`` (all 1,000 records in each reply, every reply checked ``ok``)
  against Docker's own list of the same containers (``GET /containers/json?all=1``
  filtered by the host's label, what ``docker ps -a`` asks), and against the empty agent;
- the agent's RSS against the empty agent's, both alive at the same moment;
- restarts: SIGTERM, spawn again, time from spawn to the ``agent.online`` event (the
  agent re-lists Docker and reconciles 1,000 containers first), against the same restart
  of the empty agent.

Goals: list p50 ≤ Docker's list p50; RSS ≤ 1.5 x the empty agent's; start-up to ready
≤ 2 x the empty agent's.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict

from agent.client import connect
from agent.host.driver import HOST_LABEL
from bench.core import BenchError, BenchResult, Context, Dist, domain_spec, fmt, interleave, rss_kib
from bench.procs import AgentProcess
from bench.rpc import RpcClient, ok

QUEUE_TYPE = "quorum"
DEFINE_AT_ONCE = 32
START_AT_ONCE = 16
LIST_GOAL = 1.0
RSS_GOAL = 1.5
STARTUP_GOAL = 2.0
LIST_ROUNDS = 5
"""Rounds of the list measurement; ``b6_list_calls`` calls are spread over them."""


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


async def list_domains(client: RpcClient, host: str, calls: int) -> list[float]:
    """``calls`` lists one at a time; each reply must be ``ok``."""
    latencies = []
    for _ in range(calls):
        began = time.perf_counter()
        body = await client.command_raw(host, "host.list_domains")
        elapsed = time.perf_counter() - began
        if not ok(body):
            raise BenchError(f"host.list_domains on {host}: {body[:200]!r}")
        latencies.append(elapsed)
    return latencies


async def docker_list(ctx: Context, host: str, calls: int, expected: int) -> list[float]:
    """Docker's own list of the host's containers, ``calls`` times one at a time."""
    params = {"all": "1", "filters": json.dumps({"label": [f"{HOST_LABEL}={host}"]})}
    latencies = []
    for _ in range(calls):
        began = time.perf_counter()
        entries = await ctx.docker._query_json("containers/json", params=params)
        latencies.append(time.perf_counter() - began)
        if len(entries) != expected:
            raise BenchError(f"Docker lists {len(entries)} containers of {host}, not {expected}")
    return latencies


async def restart(agent: AgentProcess, client: RpcClient, total: int, profile: bool) -> float:
    """Stop the agent and start it again; seconds from spawn to ``agent.online``, once it
    lists all ``total`` domains."""
    await agent.stop()
    startup = await agent.start(profile_startup=profile)
    body = await client.command_raw(agent.host, "host.list_domains")
    if not ok(body):
        raise BenchError(f"host.list_domains after a restart: {body[:200]!r}")
    count = len(json.loads(body)["result"]["domains"])
    if count != total:
        raise BenchError(f"after restart {agent.host} lists {count} domains, not {total}")
    return startup


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    scale = ctx.scale
    total, running = scale.b6_domains, scale.b6_running
    result = BenchResult("B6", f"{total:,} domains ({running} running) on one host")
    host, empty_host = ctx.host("b6"), ctx.host("b6empty")
    agent = AgentProcess(ctx, client, host, QUEUE_TYPE)
    empty = AgentProcess(ctx, client, empty_host, QUEUE_TYPE)
    per_round = max(1, scale.b6_list_calls // LIST_ROUNDS)
    try:
        await agent.start()
        await empty.start()
        ctx.log(f"B6 populating {total} domains ({running} running)")
        populate_s = await populate(ctx, client, host, total, running)
        ctx.log(f"B6 populated in {populate_s:.1f} s")
        await list_domains(client, host, 3)
        await list_domains(client, empty_host, 3)
        await docker_list(ctx, host, 1, total)
        lists = await interleave(
            {
                "agent": lambda _: list_domains(client, host, per_round),
                "docker": lambda _: docker_list(ctx, host, per_round, total),
                "empty": lambda _: list_domains(client, empty_host, per_round),
            },
            LIST_ROUNDS,
        )
        body = await client.command_raw(host, "host.list_domains")
        reply_bytes = len(body)
        (rss, hwm), (empty_rss, _) = rss_kib(agent.pid), rss_kib(empty.pid)
        async with connect(ctx.amqp_url) as conn:
            typed = []
            for _ in range(min(10, scale.b6_list_calls)):
                began = time.perf_counter()
                listed = await conn.list_all_domains(host)
                typed.append(time.perf_counter() - began)
            if len(listed) != total:
                raise BenchError(f"listed {len(listed)} domains, expected {total}")
        startups = await interleave(
            {
                "agent": lambda round_: restart(agent, client, total, profile=round_ == 0),
                "empty": lambda _: restart(empty, client, 0, profile=False),
            },
            scale.b6_restarts,
        )
        ctx.log(f"B6 restarts with {total} domains: ready after {startups.samples['agent']} s")
        restart_rss = rss_kib(agent.pid)[0]
    finally:
        await agent.stop()
        await empty.stop()
        ctx.log(f"B6 removing {total} containers")
        await ctx.cleanup.sweep(ctx.docker, [host, empty_host])

    listing, docker_listing = lists.dist("agent"), lists.dist("docker")
    empty_listing, typed_listing = lists.dist("empty"), Dist.of(typed)
    startup, empty_start = startups.dist("agent"), startups.dist("empty")
    mib, hwm_mib, empty_mib = rss / 1024, hwm / 1024, empty_rss / 1024
    result.metrics = {
        "domains": total,
        "running": running,
        "populate_s": populate_s,
        "list_ms": asdict(listing),
        "list_docker_ms": asdict(docker_listing),
        "list_empty_ms": asdict(empty_listing),
        "list_typed_client_ms": asdict(typed_listing),
        "list_reply_bytes": reply_bytes,
        "rss_kib": rss,
        "hwm_kib": hwm,
        "rss_empty_kib": empty_rss,
        "rss_after_restart_kib": restart_rss,
        "startup_s": startups.samples["agent"],
        "startup_empty_s": startups.samples["empty"],
        "interleaved": {"list": lists.summary(), "restarts": startups.summary()},
    }
    result.table(
        f"B6 one host, {total:,} domains ({running} running) vs the same agent empty, "
        "measured in alternating rounds",
        ["measure", f"{total:,} domains", "empty agent", "Docker's own list", "Δ to empty"],
        [
            [
                "host.list_domains p50 ms",
                fmt(listing.p50),
                fmt(empty_listing.p50),
                fmt(docker_listing.p50),
                fmt(listing.p50 - empty_listing.p50),
            ],
            [
                "host.list_domains p99 ms",
                fmt(listing.p99),
                fmt(empty_listing.p99),
                fmt(docker_listing.p99),
                fmt(listing.p99 - empty_listing.p99),
            ],
            ["list via typed client p50 ms", fmt(typed_listing.p50), "", "", ""],
            [
                "agent RSS MiB (peak)",
                f"{mib:.1f} ({hwm_mib:.1f})",
                f"{empty_mib:.1f}",
                "",
                f"{mib - empty_mib:.1f}",
            ],
            [
                "spawn → agent.online s",
                " / ".join(f"{s:.2f}" for s in startups.samples["agent"]),
                " / ".join(f"{s:.2f}" for s in startups.samples["empty"]),
                "",
                f"{(startup.p50 - empty_start.p50) / 1000:.2f}",
            ],
        ],
    )
    result.notes.append(
        f"list reply: {reply_bytes / 1024:.0f} KiB of JSON. Defining {total} and starting "
        f"{running} through the agent took {populate_s:.0f} s."
    )
    result.ratio(
        f"host.list_domains p50 ({total:,} domains)",
        listing.p50,
        docker_listing.p50,
        unit="ms",
        baseline_what="Docker's own list of the same containers (p50)",
        at_most=LIST_GOAL,
        rounds=lists.rounds,
        detail=f"empty agent {fmt(empty_listing.p50)} ms",
    )
    result.ratio(
        f"agent RSS ({total:,} domains)",
        mib,
        empty_mib,
        unit="MiB",
        baseline_what="the same agent with no domains",
        at_most=RSS_GOAL,
        interleaved=True,
        detail=f"peak {hwm_mib:.1f} MiB; both agents alive at the same moment",
    )
    result.ratio(
        "start-up to ready (spawn → agent.online), p50",
        startup.p50 / 1000,
        empty_start.p50 / 1000,
        unit="s",
        baseline_what="the same restart of an agent with no domains",
        at_most=STARTUP_GOAL,
        rounds=startups.rounds,
    )
    return result
