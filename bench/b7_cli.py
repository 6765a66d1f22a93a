"""B7: the same ops as an operator would type them — the ``docker`` CLI — against the
``virtbus`` CLI (one process per command, as a shell script would run it) and the
virtbus library (``agent.client``, one open connection). Reported only.

Op mapping: start = ``docker start`` / ``virtbus start`` / ``Domain.create``; suspend =
``docker pause`` / ``virtbus suspend``; resume = ``docker unpause`` / ``virtbus resume``;
lookup = ``docker inspect`` / ``virtbus domid`` / ``Domain.refresh``; shutdown =
``docker stop`` / ``virtbus shutdown``; destroy = ``docker kill`` / ``virtbus destroy``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

from agent.client import Domain, connect
from bench.core import BenchError, BenchResult, Context, Dist, domain_spec, fmt
from bench.procs import REPO, VIRTBUS, AgentProcess, child_env
from bench.raw import CYCLE, OPS, RawDocker
from bench.rpc import RpcClient

QUEUE_TYPE = "quorum"
DOCKER_VERBS = {
    "start": ["start"],
    "suspend": ["pause"],
    "resume": ["unpause"],
    "lookup": ["inspect"],
    "shutdown": ["stop", "-t", "10"],
    "destroy": ["kill"],
}
VIRTBUS_VERBS = {
    "start": "start",
    "suspend": "suspend",
    "resume": "resume",
    "lookup": "domid",
    "shutdown": "shutdown",
    "destroy": "destroy",
}


async def command(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    elapsed = time.perf_counter() - began
    if process.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {stderr.decode(errors='replace').strip()}")
    return elapsed


async def library(domain: Domain, op: str) -> None:
    if op == "start":
        await domain.create()
    elif op == "suspend":
        await domain.suspend()
    elif op == "resume":
        await domain.resume()
    elif op == "lookup":
        await domain.refresh()
    elif op == "shutdown":
        await domain.shutdown()
    else:
        await domain.destroy()


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    result = BenchResult("B7", "docker CLI vs virtbus CLI vs virtbus library (reported)")
    host = ctx.host("b7")
    raw_host = ctx.host("b7raw")
    agent = AgentProcess(ctx, client, host, QUEUE_TYPE)
    raw = RawDocker(ctx.docker, raw_host)
    env = child_env(ctx)
    ways = ("docker CLI", "virtbus CLI", "virtbus library")
    times: dict[str, dict[str, list[float]]] = {way: {op: [] for op in OPS} for way in ways}
    try:
        await agent.start()
        for name in ("b7-cli", "b7-lib"):
            await client.command(host, "domain.define", args={"spec": domain_spec(name)})
        await raw.create("b7")
        container = raw.name("b7")
        async with connect(ctx.amqp_url) as conn:
            domain = await conn.lookup_by_name(host, "b7-lib")
            warmup = 1 if ctx.scale.b7_warmup else 0
            for cycle in range(ctx.scale.b7_cycles + warmup):
                record = cycle >= warmup
                for op in CYCLE:
                    docker_s = await command(["docker", *DOCKER_VERBS[op], container], env)
                    cli_s = await command(
                        [str(VIRTBUS), VIRTBUS_VERBS[op], "--host", host, "b7-cli"], env
                    )
                    began = time.perf_counter()
                    await library(domain, op)
                    library_s = time.perf_counter() - began
                    if record:
                        times["docker CLI"][op].append(docker_s)
                        times["virtbus CLI"][op].append(cli_s)
                        times["virtbus library"][op].append(library_s)
    finally:
        await agent.stop()
        await ctx.cleanup.sweep(ctx.docker, [host, raw_host])

    rows = []
    for op in OPS:
        docker_d = Dist.of(times["docker CLI"][op])
        cli_d = Dist.of(times["virtbus CLI"][op])
        lib_d = Dist.of(times["virtbus library"][op])
        result.metrics[op] = {
            "docker_cli_ms": asdict(docker_d),
            "virtbus_cli_ms": asdict(cli_d),
            "virtbus_library_ms": asdict(lib_d),
        }
        rows.append(
            [
                op,
                fmt(docker_d.p50),
                fmt(cli_d.p50),
                fmt(lib_d.p50),
                f"{cli_d.p50 / docker_d.p50:.2f}x",
                f"{lib_d.p50 / docker_d.p50:.2f}x",
            ]
        )
    result.table(
        "B7 one op, p50 ms (CLIs include process start-up)",
        ["op", "docker CLI", "virtbus CLI", "virtbus library", "CLI / docker", "library / docker"],
        rows,
    )
    return result
