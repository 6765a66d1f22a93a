"""Fleets of in-process agents over the fake driver (or of bare hosts), spread over
worker processes (``bench.fleet``), and broadcast gathering against them (used by B5 and
B8)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiormq
import aiormq.abc

from agent.client import Connection
from agent.client.connection import DIRECT_REPLY_TO
from bench.core import BenchError, Context, CpuMeter, Dist, amqp_port, broker_pid, run_tool
from bench.procs import FleetProcess, Responder
from bench.rpc import RpcClient, command_body
from schemas.topology import BROADCAST_EXCHANGE, group_key


@dataclass
class Fleet:
    ctx: Context
    hosts: list[str]
    group: str
    workers: list[FleetProcess] = field(default_factory=list)
    startup_s: float = 0.0

    @classmethod
    async def start(
        cls,
        ctx: Context,
        label: str,
        size: int,
        processes: int,
        queue_type: str,
        shared_connection: bool,
        heartbeat_s: float | None = None,
        responder: Responder = "agent",
    ) -> Fleet:
        hosts = [ctx.host(f"{label}{index:04d}") for index in range(size)]
        group = f"bench-{ctx.run_id}-{label}"
        fleet = cls(ctx, hosts, group)
        per = -(-size // processes)
        for index in range(processes):
            chunk = hosts[index * per : (index + 1) * per]
            if chunk:
                fleet.workers.append(
                    FleetProcess(
                        ctx,
                        f"{label}-worker{index}",
                        chunk,
                        group,
                        queue_type,
                        shared_connection,
                        heartbeat_s,
                        responder,
                    )
                )
        began = time.perf_counter()
        try:
            await asyncio.gather(*(worker.start() for worker in fleet.workers))
        except BaseException:
            await fleet.stop()
            raise
        fleet.startup_s = time.perf_counter() - began
        return fleet

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self.workers), return_exceptions=True)
        await self.ctx.cleanup.sweep(self.ctx.docker, self.hosts)

    async def request_all(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.request(command) for w in self.workers)))


@dataclass
class Gathering:
    times_s: list[float]
    missing: int
    failed: int

    @property
    def dist(self) -> Dist:
        return Dist.of(self.times_s)

    def add(self, other: Gathering) -> None:
        self.times_s.extend(other.times_s)
        self.missing += other.missing
        self.failed += other.failed


async def gather_typed(
    conn: Connection, fleet: Fleet, rounds: int, timeout_s: float, warmup: int = 2
) -> Gathering:
    """``host.ping`` to the fleet's group ``rounds`` times through the typed client
    (persistent command, every reply validated), each gathered until every host has
    answered (or ``timeout_s``)."""
    expect = set(fleet.hosts)
    times: list[float] = []
    missing = failed = 0
    for round_ in range(warmup + rounds):
        outcome = await conn.broadcast(
            "host.ping", group=fleet.group, expect=expect, timeout_s=timeout_s
        )
        if round_ < warmup:
            continue
        times.append(outcome.elapsed_s)
        missing += len(outcome.missing)
        failed += len(outcome.failed)
    return Gathering(times, missing, failed)


async def gather_raw(
    client: RpcClient, fleet: Fleet, rounds: int, timeout_s: float, warmup: int = 2
) -> Gathering:
    """``host.ping`` to the fleet's group ``rounds`` times with plain aio-pika (transient
    command, replies parsed for their host only)."""
    expect = set(fleet.hosts)
    times: list[float] = []
    missing = failed = 0
    for round_ in range(warmup + rounds):
        outcome = await client.broadcast(fleet.group, "host.ping", expect, timeout_s=timeout_s)
        if round_ < warmup:
            continue
        times.append(outcome.elapsed_s)
        missing += outcome.missing
        failed += outcome.failed
    return Gathering(times, missing, failed)


@dataclass
class PathCost:
    """One gather path over the rounds it ran: gather times, and the CPU seconds of the
    broker, the agents and the gatherer spent inside those gathers."""

    times_s: list[float] = field(default_factory=list)
    missing_by_round: list[int] = field(default_factory=list)
    missing: int = 0
    failed: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    background_s: float = 0.0
    """Broker CPU that the broker's rate just before each gather (other clients of a
    shared broker, the idle fleet's own upkeep) predicts for the gather's duration;
    ``per_reply`` takes it off the broker's share."""
    replies: int = 0

    @property
    def dist(self) -> Dist:
        return Dist.of(self.times_s)

    def per_reply(self) -> dict[str, float]:
        """CPU µs per reply by party. The broker's own share is NaN when its background
        predicts at least all it used: the gathers' part is then not separable from the
        rest (never a clamped 0); ``broker (raw)`` and ``broker (background)`` say why."""
        used = dict(self.cpu_s)
        if "broker" in used:
            raw = used["broker (raw)"] = used["broker"]
            used["broker (background)"] = self.background_s
            used["broker"] = raw - self.background_s if raw > self.background_s else math.nan
        return per_unit(used, self.replies)

    def add(
        self,
        elapsed_s: float,
        missing: int,
        failed: int,
        used: dict[str, float],
        background_s: float,
    ) -> None:
        self.background_s += background_s
        self.times_s.append(elapsed_s)
        self.missing_by_round.append(missing)
        self.missing += missing
        self.failed += failed
        for name, seconds in used.items():
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + seconds


BACKGROUND_S = 1.0
"""How long the broker's background rate is sampled before each gather."""


Gather = Callable[[], Awaitable[tuple[float, int, int]]]
"""One gather: its time, how many hosts did not answer, how many answered with an error."""


def by_reply_queue(client: RpcClient, fleet: Fleet, timeout_s: float) -> Gather:
    """The old path: plain aio-pika, a reply queue of its own, replies parsed for their
    host only."""
    expect = set(fleet.hosts)

    async def gather() -> tuple[float, int, int]:
        outcome = await client.broadcast(fleet.group, "host.ping", expect, timeout_s=timeout_s)
        return outcome.elapsed_s, outcome.missing, outcome.failed

    return gather


def by_library(conn: Connection, fleet: Fleet, timeout_s: float) -> Gather:
    """The client library's path: direct reply-to, every reply read for its host and
    outcome."""
    expect = set(fleet.hosts)

    async def gather() -> tuple[float, int, int]:
        outcome = await conn.broadcast(
            "host.ping", group=fleet.group, expect=expect, timeout_s=timeout_s
        )
        return outcome.elapsed_s, len(outcome.missing), len(outcome.failed)

    return gather


async def compare_gathers(
    paths: dict[str, tuple[Fleet, Gather]], rounds: int, broker: int | None
) -> dict[str, PathCost]:
    """``host.ping`` to each path's fleet, ``rounds`` times by each path, the order
    rotating from round to round; each gather metered on its own (the broker, the
    path's own fleet, this process)."""
    costs = {name: PathCost() for name in paths}
    order = list(paths)
    for round_ in range(rounds):
        shift = round_ % len(order)
        for name in order[shift:] + order[:shift]:
            fleet, gather = paths[name]
            idle = CpuMeter({"broker": [broker] if broker else []})
            idle.start()
            await asyncio.sleep(BACKGROUND_S)
            rate = idle.stop()["broker"] / idle.wall_s
            meter = fleet_meter(fleet, broker)
            elapsed_s, missing, failed = await gather()
            used = meter.stop()
            costs[name].add(elapsed_s, missing, failed, used, rate * meter.wall_s)
            costs[name].replies += len(fleet.hosts) - missing
    return costs


@dataclass(frozen=True)
class Descriptors:
    """The local RabbitMQ node's file descriptors, as ``rabbitmq-diagnostics`` has them."""

    sockets_limit: int
    sockets_used: int
    total_limit: int
    total_used: int


async def broker_descriptors() -> Descriptors | None:
    output = await run_tool("rabbitmq-diagnostics", "-q", "status", "--formatter", "json")
    if output is None:
        return None
    try:
        found = json.loads(output)["file_descriptors"]
        return Descriptors(
            int(found["sockets_limit"]),
            int(found["sockets_used"]),
            int(found["total_limit"]),
            int(found["total_used"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


SPARE_DESCRIPTORS = 200
"""Left free on the broker for everything else (other clients, queue files, Erlang)."""


async def choose_connections(agents: int, workers: int) -> tuple[bool, str]:
    """One connection per agent if the broker has the sockets for it, else one shared
    connection per worker. Refuses to start a fleet the broker cannot hold: a RabbitMQ
    node that runs out of file descriptors stops accepting connections and can crash."""
    found = await broker_descriptors()
    if found is None:
        return True, "broker limits unknown: agents share one AMQP connection per worker"
    if found.total_limit - found.total_used < workers + SPARE_DESCRIPTORS:
        raise BenchError(
            f"the broker has {found.total_used} of {found.total_limit} file descriptors in "
            "use: too few left for a fleet"
        )
    sockets_free = found.sockets_limit - found.sockets_used
    files_free = found.total_limit - found.total_used
    if min(sockets_free, files_free) >= agents + SPARE_DESCRIPTORS:
        return False, (
            f"one AMQP connection per agent (broker: {found.sockets_used}/"
            f"{found.sockets_limit} sockets in use)"
        )
    return True, (
        "agents share one AMQP connection per worker process, each agent with its own "
        f"channel, queue and consumer: the broker allows {found.sockets_limit} sockets "
        f"({found.total_limit} descriptors in all, {found.total_used} in use), fewer than "
        f"{agents} agents need"
    )


def need(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


async def broker_memory() -> dict[str, int] | None:
    """The local RabbitMQ node's memory by category, in bytes."""
    output = await run_tool(
        "rabbitmq-diagnostics", "-q", "memory_breakdown", "--unit", "bytes", "--formatter", "json"
    )
    if output is None:
        return None
    try:
        return {key: int(value["bytes"]) for key, value in json.loads(output).items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


MEMORY_GROUPS: dict[str, tuple[str, ...]] = {
    "connections": ("connection_readers", "connection_writers", "connection_other"),
    "channels": ("connection_channels",),
    "queues": ("queue_procs", "quorum_queue_procs", "quorum_ets", "msg_index"),
}
ALSO_COUNTED = ("mnesia", "metrics", "other_ets")
"""Bindings and queue records (mnesia), per-object stats (metrics), routing tables."""


def memory_per_agent(
    before: dict[str, int] | None, after: dict[str, int] | None, agents: int
) -> dict[str, float]:
    """Broker memory the fleet added, per agent and by group (bytes)."""
    if before is None or after is None or agents == 0:
        return {}
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    per = {
        group: sum(delta.get(key, 0) for key in keys) / agents
        for group, keys in MEMORY_GROUPS.items()
    }
    counted = [key for keys in MEMORY_GROUPS.values() for key in keys] + list(ALSO_COUNTED)
    per["total"] = sum(delta.get(key, 0) for key in counted) / agents
    return per


async def queue_memory(prefix: str) -> dict[str, float]:
    """Mean memory (bytes) of the queues whose name starts with ``prefix``, by type."""
    output = await run_tool(
        "rabbitmqctl",
        "-q",
        "list_queues",
        "name",
        "type",
        "memory",
        "--formatter",
        "json",
        timeout_s=120,
    )
    if output is None:
        return {}
    sizes: dict[str, list[int]] = {}
    try:
        for row in json.loads(output):
            if str(row["name"]).startswith(prefix):
                sizes.setdefault(str(row["type"]), []).append(int(row["memory"]))
    except (ValueError, KeyError, TypeError):
        return {}
    return {kind: sum(values) / len(values) for kind, values in sizes.items()}


def fleet_meter(fleet: Fleet, broker: int | None = None) -> CpuMeter:
    """Meters the broker (``broker``, else the node the bench talks to), the fleet's
    worker processes and this process (the client)."""
    broker = broker or broker_pid(amqp_port(fleet.ctx.amqp_url))
    meter = CpuMeter(
        {
            "broker": [broker] if broker else [],
            "agents": [worker.pid for worker in fleet.workers],
            "client": [os.getpid()],
        }
    )
    meter.start()
    return meter


def per_unit(used: dict[str, float], units: int) -> dict[str, float]:
    """CPU microseconds per unit (reply, event) of each metered party."""
    return {name: 1e6 * seconds / max(units, 1) for name, seconds in used.items()}


class CountingGatherer:
    """The least a gatherer can do on aiormq, the AMQP library under aio-pika: publish
    the broadcast, then count the replies that carry its correlation id, reading nothing
    else of them (no host, no outcome). Its CPU per reply is the floor of any gatherer
    built on aio-pika."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._waiting = ""
        self._counted = 0
        self._expected = 0
        self._complete: asyncio.Future[None] | None = None

    async def open(self) -> None:
        self._connection = await aiormq.connect(self.url)
        self._channel = await self._connection.channel()
        await self._channel.basic_consume(DIRECT_REPLY_TO, self._on_reply, no_ack=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        if message.header.properties.correlation_id != self._waiting:
            return
        self._counted += 1
        if self._counted == self._expected and self._complete and not self._complete.done():
            self._complete.set_result(None)

    def by_counting(self, fleet: Fleet, timeout_s: float) -> Gather:
        assert self._channel is not None
        channel = self._channel

        async def gather() -> tuple[float, int, int]:
            command_id = uuid.uuid4().hex
            self._waiting, self._counted, self._expected = command_id, 0, len(fleet.hosts)
            self._complete = asyncio.get_running_loop().create_future()
            began = time.perf_counter()
            await channel.basic_publish(
                command_body(command_id, "host.ping"),
                exchange=BROADCAST_EXCHANGE,
                routing_key=group_key(fleet.group),
                properties=aiormq.spec.Basic.Properties(
                    content_type="application/json",
                    message_id=command_id,
                    correlation_id=command_id,
                    reply_to=DIRECT_REPLY_TO,
                ),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._complete, timeout_s)
            elapsed = time.perf_counter() - began
            return elapsed, max(0, self._expected - self._counted), 0

        return gather
