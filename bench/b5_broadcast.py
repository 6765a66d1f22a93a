"""B5: broadcast ``host.ping`` to a fleet of 50 agents and gather every reply.

The agents are real ``Agent`` instances over the fake driver, each with its own AMQP
connection, spread over a few worker processes; the broadcast goes to the fleet's group
(``virtbus.broadcast``, ``group.<g>``) through the typed client's scatter-gather
(``Connection.broadcast`` with ``expect``), once with classic and once with quorum host
queues. Baselines, in rounds alternating with it (``interleave``): the same broadcast
gathered by a plain aio-pika client (transient command, replies parsed for their host
only), and one bare RPC round trip to an echo server of the same queue type.

Goal: typed gather p50 ≤ 1.5 x the plain client's gather p50 of the same fleet, no reply
missing or failed.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import asdict

from agent.client import Connection, connect
from bench.baseline import QUEUE_TYPES, Echo, echo_peer
from bench.core import BenchResult, Context, Interleaved, fmt, interleave
from bench.fleetrun import (
    Fleet,
    Gathering,
    broker_memory,
    choose_connections,
    fleet_meter,
    gather_raw,
    gather_typed,
    memory_per_agent,
    per_unit,
    queue_memory,
)
from bench.rpc import RpcClient

GOAL = 1.5
TIMEOUT_S = 10.0
ECHO_CALLS = 5
"""Bare round trips per round."""


async def rounds(
    conn: Connection, client: RpcClient, echo: Echo, fleet: Fleet, count: int
) -> tuple[Gathering, Gathering, Interleaved, dict[str, float]]:
    """``count`` rounds of: a typed gather (CPU metered), a plain gather, bare RPCs."""
    await gather_typed(conn, fleet, 0, TIMEOUT_S, warmup=3)
    await gather_raw(client, fleet, 0, TIMEOUT_S, warmup=1)
    typed, plain = Gathering([], 0, 0), Gathering([], 0, 0)
    used: dict[str, float] = {}

    async def typed_round(round_: int) -> list[float]:
        meter = fleet_meter(fleet)
        one = await gather_typed(conn, fleet, 1, TIMEOUT_S, warmup=0)
        for name, seconds in meter.stop().items():
            used[name] = used.get(name, 0.0) + seconds
        typed.add(one)
        return one.times_s

    async def plain_round(round_: int) -> list[float]:
        one = await gather_raw(client, fleet, 1, TIMEOUT_S, warmup=0)
        plain.add(one)
        return one.times_s

    async def echo_round(round_: int) -> list[float]:
        return await echo.calls(ECHO_CALLS)

    measured = await interleave(
        {"typed": typed_round, "plain": plain_round, "echo": echo_round}, count
    )
    return typed, plain, measured, used


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    scale = ctx.scale
    result = BenchResult("B5", f"broadcast host.ping to {scale.b5_agents} agents, all gathered")
    rows = []
    shared, how = await choose_connections(scale.b5_agents, scale.b5_workers)
    memory_rows = []
    for queue_type in QUEUE_TYPES:
        label = f"b5{queue_type[0]}"
        before = await broker_memory() if ctx.scale.broker_memory else None
        fleet = await Fleet.start(ctx, label, scale.b5_agents, scale.b5_workers, queue_type, shared)
        try:
            per_agent = memory_per_agent(
                before, await broker_memory() if before else None, len(fleet.hosts)
            )
            per_queue = (
                await queue_memory(f"virtbus.host.bench-{ctx.run_id}-{label}") if before else {}
            )
            async with AsyncExitStack() as stack:
                conn = await stack.enter_async_context(connect(ctx.amqp_url))
                echo = await stack.enter_async_context(echo_peer(ctx, client, queue_type))
                for worker in fleet.workers:
                    await stack.enter_async_context(worker.window(f"B5 pings ({queue_type})"))
                typed, plain, measured, used = await rounds(
                    conn, client, echo, fleet, scale.b5_rounds
                )
                cpu = per_unit(used, scale.b5_rounds * len(fleet.hosts))
        finally:
            await fleet.stop()
        dist, bare_dist, echo_dist = typed.dist, plain.dist, measured.dist("echo")
        result.metrics[queue_type] = {
            "agents": len(fleet.hosts),
            "workers": len(fleet.workers),
            "fleet_startup_s": fleet.startup_s,
            "gather_ms": asdict(dist),
            "gather_plain_client_ms": asdict(bare_dist),
            "missing": typed.missing,
            "failed": typed.failed,
            "plain_missing": plain.missing,
            "plain_failed": plain.failed,
            "rpc_ms": asdict(echo_dist),
            "interleaved": measured.summary(),
            "cpu_us_per_reply": cpu,
            "broker_bytes_per_agent": per_agent,
            "broker_bytes_per_queue": per_queue,
        }
        memory_rows.append(memory_row(queue_type, per_agent, per_queue))
        rows.append(
            [
                queue_type,
                str(len(fleet.hosts)),
                fmt(dist.p50),
                fmt(dist.p99),
                fmt(dist.max),
                fmt(bare_dist.p50),
                fmt(echo_dist.p50),
                f"{dist.p50 / echo_dist.p50:.1f}x",
                f"{typed.missing} / {typed.failed}",
                f"{fleet.startup_s:.1f}",
                " · ".join(f"{name} {value:.0f}" for name, value in cpu.items()),
            ]
        )
        lost = typed.missing + typed.failed + plain.missing + plain.failed
        result.ratio(
            f"broadcast gather p50, {len(fleet.hosts)} agents, typed client ({queue_type})",
            dist.p50,
            bare_dist.p50,
            unit="ms",
            baseline_what="plain aio-pika gather p50",
            at_most=GOAL,
            rounds=measured.rounds,
            detail=f"p99 {fmt(dist.p99)} ms; missing/failed replies: typed "
            f"{typed.missing}/{typed.failed}, plain {plain.missing}/{plain.failed}",
            valid=lost == 0,
        )
        ctx.log(f"B5 {queue_type}: {dist.brief()}, missing {typed.missing}")
    result.table(
        f"B5 broadcast gather, {scale.b5_workers} worker processes, "
        f"{scale.b5_rounds} interleaved rounds (typed, plain, bare RPC)",
        [
            "host queues",
            "agents",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p50 ms, plain client",
            "bare RPC p50 ms",
            "p50 / RPC p50",
            "missing / failed",
            "fleet start s",
            "CPU per reply, µs",
        ],
        rows,
    )
    if ctx.scale.broker_memory:
        result.table(
            "Broker memory per agent (idle fleet just started; one connection, one channel, one "
            "host queue with 2 bindings each), KiB",
            [
                "host queues",
                "connection",
                "channel",
                "queue (process)",
                "all, per agent",
                "host queue (list_queues)",
            ],
            memory_rows,
        )
    result.notes.append(
        "agents: in-process `Agent` instances over `tests.fakes.FakeDriver` (no Docker), "
        f"{scale.b5_agents // scale.b5_workers} per worker process; the gatherer is the "
        "typed client (`Connection.broadcast`: persistent command, every reply validated); "
        "'plain client' gathers the same with bare aio-pika (transient command, replies "
        f"parsed for their host only). Connections: {how}."
    )
    return result


def memory_row(label: str, per_agent: dict[str, float], per_queue: dict[str, float]) -> list[str]:
    def kib(value: float | None) -> str:
        return "n/a" if value is None else f"{value / 1024:.0f}"

    return [
        label,
        kib(per_agent.get("connections")),
        kib(per_agent.get("channels")),
        kib(per_agent.get("queues")),
        kib(per_agent.get("total")),
        ", ".join(f"{kind} {kib(size)}" for kind, size in per_queue.items()) or "n/a",
    ]
