"""B3: event latency, from Docker reporting a change to a subscriber holding the libvirt
event.

A domain of an agent (quorum host queue) is paused/resumed, then killed/started,
behind the agent's back with bare aiodocker calls, one change at a time. A lifecycle
event's ``time`` is Docker's own ``timeNano`` of the change, so latency = receive wall
clock - ``time``. Baselines in the same run: a subscriber of Docker's own event stream
(receive - ``timeNano``: Docker's delivery, which the agent cannot beat) and a bare
event on the bus (publish with confirms → subscriber).

Goals (issue 15): p50 ≤ Docker's stream p50 + bare bus event p50 + 0.5 ms; p99 ≤ 3x that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import aio_pika
import aiohttp

from agent.host.driver import HOST_LABEL
from bench.core import BenchError, BenchResult, Context, Dist, domain_spec, fmt
from bench.procs import AgentProcess
from bench.rpc import Arrival, EventTap, RpcClient
from schemas.topology import EVENTS_EXCHANGE

QUEUE_TYPE = "quorum"
P50_GOAL_MS = 0.5
"""Over Docker's own stream p50 + a bare bus event p50."""
P99_GOAL = 3.0
"""Times the p50 bound."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BUS_PROBES = 200


def wall_ns(iso: str) -> int:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return ((moment - EPOCH) // timedelta(microseconds=1)) * 1000


async def docker_stream(ctx: Context, host: str, seen: list[tuple[str, float]]) -> None:
    """Docker's own events for the host, as (action, receive - timeNano in seconds)."""
    params = {
        "since": f"{time.time():.9f}",
        "filters": json.dumps({"type": ["container"], "label": [f"{HOST_LABEL}={host}"]}),
    }
    async with ctx.docker._query(
        "events", params=params, timeout=aiohttp.ClientTimeout(total=None)
    ) as response:
        async for line in response.content:
            received = time.time_ns()
            if line.strip():
                event = json.loads(line)
                action = str(event.get("Action", "")).split(":", 1)[0]
                seen.append((action, (received - int(event["timeNano"])) / 1e9))


def probe(n: int) -> Callable[[Arrival], bool]:
    return lambda arrival: bool(arrival.body["n"] == n)


async def bus_floor(ctx: Context, client: RpcClient, host: str) -> list[float]:
    """Bare events: publish with confirms to ``virtbus.events``, receive on a tap."""
    tap = await EventTap(client.channel, [f"{host}.probe"]).start()
    exchange = await client.channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
    try:
        for n in range(BUS_PROBES):
            body = json.dumps({"n": n, "sent_ns": time.time_ns()}).encode()
            await exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=f"{host}.probe",
            )
            await tap.wait_for(probe(n), 10)
    finally:
        await tap.stop()
    return [(a.received_ns - int(a.body["sent_ns"])) / 1e9 for a in tap.arrivals[20:]]


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    result = BenchResult("B3", "event latency: Docker's event → libvirt event at a subscriber")
    host = ctx.host("b3")
    agent = AgentProcess(ctx, client, host, QUEUE_TYPE)
    docker_seen: list[tuple[str, float]] = []
    by_event: dict[str, list[float]] = {}
    stream: asyncio.Task[None] | None = None
    tap: EventTap | None = None
    try:
        await agent.start()
        await client.command(host, "domain.define", args={"spec": domain_spec("b3")})
        await client.command(host, "domain.create", target={"name": "b3"})
        inspected = await ctx.docker._query_json(f"containers/{host}.b3/json")
        handle = str(inspected["Id"])
        tap = await EventTap(client.channel, [f"{host}.lifecycle.#"]).start()
        stream = asyncio.create_task(docker_stream(ctx, host, docker_seen))
        await asyncio.sleep(0.2)
        last_seq = 0

        async def change(verb: str, event: str, **params: str) -> None:
            nonlocal last_seq
            assert tap is not None
            await ctx.docker._query_json(
                f"containers/{handle}/{verb}", method="POST", params=params or None
            )
            floor = last_seq

            def match(a: Arrival) -> bool:
                return a.body.get("seq", 0) > floor and a.body.get("event") == event

            arrival = await tap.wait_for(match, 15)
            last_seq = int(arrival.body["seq"])
            latency = (arrival.received_ns - wall_ns(arrival.body["time"])) / 1e9
            by_event.setdefault(event, []).append(latency)
            await asyncio.sleep(0.005)

        async with agent.window("B3 external changes"):
            for _ in range(ctx.scale.b3_pause_cycles):
                await change("pause", "suspended")
                await change("unpause", "resumed")
            for _ in range(ctx.scale.b3_start_cycles):
                await change("kill", "stopped", signal="KILL")
                await change("start", "started")
        floor = await bus_floor(ctx, client, host)
    finally:
        if stream is not None:
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await stream
        if tap is not None:
            await tap.stop()
        await agent.stop()
        await ctx.cleanup.sweep(ctx.docker, [host])

    everything = [value for values in by_event.values() for value in values]
    if not everything:
        raise BenchError("no events measured")
    overall = Dist.of(everything)
    docker_actions = {
        "suspended": "pause",
        "resumed": "unpause",
        "stopped": "die",
        "started": "start",
    }
    rows = []
    for event, values in by_event.items():
        agent_dist = Dist.of(values)
        docker_dist = Dist.of([s for action, s in docker_seen if action == docker_actions[event]])
        rows.append(
            [
                event,
                str(agent_dist.n),
                fmt(agent_dist.p50),
                fmt(agent_dist.p99),
                fmt(docker_dist.p50),
                fmt(docker_dist.p99),
                fmt(agent_dist.p50 - docker_dist.p50),
            ]
        )
        result.metrics[event] = {"agent": asdict(agent_dist), "docker_stream": asdict(docker_dist)}
    docker_all = Dist.of([s for _, s in docker_seen])
    bus = Dist.of(floor)
    rows.append(
        [
            "all",
            str(overall.n),
            fmt(overall.p50),
            fmt(overall.p99),
            fmt(docker_all.p50),
            fmt(docker_all.p99),
            fmt(overall.p50 - docker_all.p50),
        ]
    )
    result.metrics["overall"] = asdict(overall)
    result.metrics["docker_stream"] = asdict(docker_all)
    result.metrics["bus_event"] = asdict(bus)
    result.table(
        "B3 event latency after Docker's timeNano, ms "
        f"(bare event on the bus: p50 {fmt(bus.p50)} ms, p99 {fmt(bus.p99)} ms)",
        [
            "event",
            "n",
            "agent p50",
            "agent p99",
            "Docker stream p50",
            "Docker stream p99",
            "Δ p50",
        ],
        rows,
    )
    floor_p50 = docker_all.p50 + bus.p50
    result.difference(
        "event latency p50",
        overall.p50,
        floor_p50,
        unit="ms",
        baseline_what="Docker's own stream p50 + bare bus event p50",
        at_most=P50_GOAL_MS,
        interleaved=False,
        detail=f"Docker's own stream p50 {fmt(docker_all.p50)} ms, "
        f"bare bus event p50 {fmt(bus.p50)} ms",
    )
    result.ratio(
        "event latency p99",
        overall.p99,
        floor_p50 + P50_GOAL_MS,
        unit="ms",
        baseline_what="(Docker's own stream p50 + bare bus event p50 + 0.5 ms)",
        at_most=P99_GOAL,
        interleaved=False,
        detail=f"Docker's own stream p99 {fmt(docker_all.p99)} ms, "
        f"bare bus event p99 {fmt(bus.p99)} ms",
    )
    return result
