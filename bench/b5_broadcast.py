"""B5: broadcast ``host.ping`` to a fleet of 50 agents and gather every reply.

The agents are real ``Agent`` instances over the fake driver, each with its own AMQP
connection, spread over a few worker processes; the broadcast goes to the fleet's group
(``virtbus.broadcast``, ``group.<g>``) through the typed client's scatter-gather
(``Connection.broadcast`` with ``expect``), once with classic and once with quorum host
queues. Reference in the same run: one bare RPC round trip.

Goal: p50 gather time ≤ 100 ms.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import asdict

from agent.client import connect
from bench.baseline import QUEUE_TYPES, rpc
from bench.core import BenchResult, Context, fmt
from bench.fleetrun import (
    Fleet,
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

GOAL_MS = 100.0
TIMEOUT_S = 10.0


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
                for worker in fleet.workers:
                    await stack.enter_async_context(worker.window(f"B5 pings ({queue_type})"))
                await gather_typed(conn, fleet, 0, TIMEOUT_S, warmup=3)
                meter = fleet_meter(fleet)
                gathered = await gather_typed(conn, fleet, scale.b5_rounds, TIMEOUT_S, warmup=0)
                cpu = per_unit(meter.stop(), scale.b5_rounds * len(fleet.hosts))
                bare = await gather_raw(client, fleet, scale.b5_rounds, TIMEOUT_S, warmup=1)
        finally:
            await fleet.stop()
        dist, bare_dist = gathered.dist, bare.dist
        base = rpc(ctx, queue_type)
        result.metrics[queue_type] = {
            "agents": len(fleet.hosts),
            "workers": len(fleet.workers),
            "fleet_startup_s": fleet.startup_s,
            "gather_ms": asdict(dist),
            "gather_plain_client_ms": asdict(bare_dist),
            "missing": gathered.missing,
            "failed": gathered.failed,
            "rpc_p50_ms": base["p50_ms"],
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
                f"{dist.p50 / base['p50_ms']:.1f}x",
                str(gathered.missing),
                f"{fleet.startup_s:.1f}",
                " · ".join(f"{name} {value:.0f}" for name, value in cpu.items()),
            ]
        )
        result.goal(
            f"gather p50, {len(fleet.hosts)} agents ({queue_type})",
            dist.p50,
            "ms",
            f"≤ {GOAL_MS:g} ms",
            dist.p50 <= GOAL_MS and gathered.missing == 0,
            f"p99 {fmt(dist.p99)} ms, {gathered.missing} replies missing over {dist.n} rounds",
        )
        ctx.log(f"B5 {queue_type}: {dist.brief()}, missing {gathered.missing}")
    result.table(
        f"B5 broadcast gather, {scale.b5_workers} worker processes",
        [
            "host queues",
            "agents",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p50 ms, plain client",
            "p50 / RPC p50",
            "missing",
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
