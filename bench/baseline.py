"""The bus-side baseline: a bare aio-pika RPC echo between two processes.

The echo server (``bench.echo``) sits on a host queue of its own, of each queue type,
reached through ``virtbus.commands`` exactly as an agent is; the client is the one the
benchmarks measure agents with, sending the same command bodies.

A benchmark whose goal is set against a bare round trip starts its own echo with
``echo_peer`` and measures it in alternating rounds with its subject
(``bench.core.interleave``). The "RPC" section that opens every run (``run`` here:
one call at a time, and 64 in flight) describes the bus for the report; no goal is set
against it, since it was measured minutes before the benchmarks under another load.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bench.core import BenchResult, Context, CpuMeter, Dist, broker_pid, fmt
from bench.procs import EchoProcess
from bench.rpc import RpcClient, closed_loop, command_body, sequential

IN_FLIGHT = 64
QUEUE_TYPES = ("classic", "quorum")


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    result = BenchResult("RPC", "bare RPC echo (baseline)")
    rows = []
    for queue_type in QUEUE_TYPES:
        host = ctx.host(f"echo-{queue_type}")
        echo = EchoProcess(ctx, host, queue_type)
        await echo.start()
        try:

            async def one(n: int, host: str = host) -> bool:
                command_id = uuid.uuid4().hex
                body = command_body(command_id, "domain.get_state", {"name": "b2-0"})
                await client.call(host, body, command_id)
                return True

            latency = await sequential(one, ctx.scale.echo_latency_calls)
            meter = cpu_meter(echo.pid)
            load = await closed_loop(one, IN_FLIGHT, ctx.scale.throughput_s)
            cpu = per_call(meter, load.completed)
        finally:
            await echo.stop()
            await ctx.cleanup.sweep(ctx.docker, [host])
        single = Dist.of(latency.latencies)
        loaded = Dist.of(load.latencies)
        ctx.baselines[f"rpc_{queue_type}"] = {
            "p50_ms": single.p50,
            "p99_ms": single.p99,
            "n": single.n,
            "rate_64": load.rate,
            "p50_64_ms": loaded.p50,
            "p99_64_ms": loaded.p99,
            "cpu_us_per_call": cpu,
        }
        result.metrics[queue_type] = ctx.baselines[f"rpc_{queue_type}"]
        rows.append(
            [
                queue_type,
                fmt(single.p50),
                fmt(single.p99),
                f"{fmt(load.rate)}/s",
                fmt(loaded.p50),
                fmt(loaded.p99),
                cpu_text(cpu),
            ]
        )
        ctx.log(f"RPC echo {queue_type}: {single.brief()}; 64 in flight {load.rate:.0f}/s")
    result.table(
        "Bare RPC echo (two processes, persistent message, publisher confirms, ack after reply)",
        [
            "host queue",
            "p50 ms",
            "p99 ms",
            "throughput @64",
            "p50 @64 ms",
            "p99 @64 ms",
            "CPU per call @64, µs",
        ],
        rows,
    )
    return result


@dataclass
class Echo:
    """A running bare echo server and the client that calls it."""

    host: str
    client: RpcClient
    process: EchoProcess

    async def one(self, n: int = 0) -> bool:
        """One round trip with the body of a ``domain.get_state`` command (the shape
        ``sequential`` and ``closed_loop`` call)."""
        command_id = uuid.uuid4().hex
        body = command_body(command_id, "domain.get_state", {"name": "echo"})
        await self.client.call(self.host, body, command_id)
        return True

    async def calls(self, count: int) -> list[float]:
        """``count`` round trips one at a time; the seconds of each."""
        return (await sequential(self.one, count, warmup=0)).latencies


@contextlib.asynccontextmanager
async def echo_peer(
    ctx: Context, client: RpcClient, queue_type: str, name: str = ""
) -> AsyncIterator[Echo]:
    """A bare echo server on a host queue of ``queue_type`` for the block, to be measured
    interleaved with the benchmark's subject; removed afterwards."""
    host = ctx.host(f"echo-{name or ctx.current.lower()}-{queue_type[0]}")
    process = EchoProcess(ctx, host, queue_type)
    await process.start()
    try:
        echo = Echo(host, client, process)
        await sequential(echo.one, 0, warmup=10)
        yield echo
    finally:
        await process.stop()
        await ctx.cleanup.sweep(ctx.docker, [host])


def rpc(ctx: Context, queue_type: str) -> dict[str, Any]:
    """The figures of the run's opening RPC section (measured before the benchmarks, not
    interleaved with them: a goal set against them must say ``interleaved=False``)."""
    figures: dict[str, Any] = ctx.baselines[f"rpc_{queue_type}"]
    return figures


def cpu_meter(server_pid: int) -> CpuMeter:
    """Meters the broker, the server (echo or agent) and this process (the client)."""
    broker = broker_pid()
    meter = CpuMeter(
        {"broker": [broker] if broker else [], "server": [server_pid], "client": [os.getpid()]}
    )
    meter.start()
    return meter


def per_call(meter: CpuMeter, calls: int) -> dict[str, float]:
    """CPU microseconds per call of each metered party (measured over the whole loop,
    its warm-up and tail included, divided by the calls it completed)."""
    used = meter.stop()
    return {name: 1e6 * seconds / max(calls, 1) for name, seconds in used.items()}


def cpu_text(cpu: dict[str, float]) -> str:
    return " · ".join(f"{name} {value:.0f}" for name, value in cpu.items())
