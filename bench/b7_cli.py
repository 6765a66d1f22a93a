"""B7: the ``virtbus`` CLI against the least a program can do instead — the minimal
aio-pika script ``bench/minimal_rpc.py``, sending the same command body to the same
agent and waiting for its reply — each a fresh process, process start included, as a
shell script would run them.

Verbs: ``domstate`` (domain.get_state), ``list`` (host.list_domains, active) and
``start`` (domain.create; the domain is destroyed, untimed, before each start). Rounds
are interleaved, script and CLI alternating which goes first, so both see the same
load. Goal (issue 15): each verb's p50 ≤ 1.25 x the script's p50.

Like with like: both run on the same interpreter, with the project's bytecode compiled
(as an installed wheel has it) and ``PYTHONDONTWRITEBYTECODE`` unset; both open one
connection, a channel with publisher confirms, an exclusive server-named reply queue,
and publish persistent and mandatory. CPU time of each process (user + system) is
recorded too: on a shared machine it is steadier than the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from dataclasses import asdict

from bench.core import BenchError, BenchResult, Context, Dist, domain_spec, fmt
from bench.procs import REPO, VIRTBUS, AgentProcess, child_env
from bench.rpc import RpcClient

QUEUE_TYPE = "quorum"
GOAL_RATIO = 1.25
DOMAIN = "b7-cli"
SCRIPT = REPO / "bench" / "minimal_rpc.py"
VERBS: dict[str, tuple[list[str], str, dict[str, object] | None, dict[str, object]]] = {
    "domstate": (["domstate", DOMAIN], "domain.get_state", {"name": DOMAIN}, {}),
    "list": (["list"], "host.list_domains", None, {"flags": ["active"]}),
    "start": (["start", DOMAIN], "domain.create", {"name": DOMAIN}, {"start_paused": False}),
}
"""verb: (CLI words, the op the script sends, its target, its args)."""
ROUNDS_PER_CYCLE = 4


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def command(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one process, from spawn to exit."""
    cpu = cpu_of_children()
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
    return elapsed, cpu_of_children() - cpu


async def compile_bytecode() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "compileall",
        "-q",
        "agent",
        "schemas",
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
    )
    if await process.wait() != 0:
        raise BenchError("python -m compileall agent schemas failed")


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    result = BenchResult("B7", "virtbus CLI vs a minimal aio-pika script, one command each")
    host = ctx.host("b7")
    agent = AgentProcess(ctx, client, host, QUEUE_TYPE)
    env = {k: v for k, v in child_env(ctx).items() if k != "PYTHONDONTWRITEBYTECODE"}
    wall: dict[str, dict[str, list[float]]] = {v: {"cli": [], "script": []} for v in VERBS}
    cpu: dict[str, dict[str, list[float]]] = {v: {"cli": [], "script": []} for v in VERBS}
    rounds = ctx.scale.b7_cycles * ROUNDS_PER_CYCLE
    try:
        await compile_bytecode()
        await agent.start()
        await client.command(host, "domain.define", args={"spec": domain_spec(DOMAIN)})
        await client.command(host, "domain.create", target={"name": DOMAIN})
        warmup = 1 if ctx.scale.b7_warmup else 0
        for number in range(rounds + warmup):
            for verb, (words, op, target, args) in VERBS.items():
                ways = {
                    "cli": [str(VIRTBUS), *words, "--host", host],
                    "script": [
                        sys.executable,
                        str(SCRIPT),
                        ctx.amqp_url,
                        host,
                        op,
                        json.dumps(target) if target is not None else "",
                        json.dumps(args),
                    ],
                }
                order = ("cli", "script") if number % 2 else ("script", "cli")
                for way in order:
                    if verb == "start":
                        await client.command(host, "domain.destroy", target={"name": DOMAIN})
                    wall_s, cpu_s = await command(ways[way], env)
                    if number >= warmup:
                        wall[verb][way].append(wall_s)
                        cpu[verb][way].append(cpu_s)
    finally:
        await agent.stop()
        await ctx.cleanup.sweep(ctx.docker, [host])

    rows = []
    for verb in VERBS:
        cli_d, script_d = Dist.of(wall[verb]["cli"]), Dist.of(wall[verb]["script"])
        cli_cpu, script_cpu = Dist.of(cpu[verb]["cli"]), Dist.of(cpu[verb]["script"])
        ratio = cli_d.p50 / script_d.p50
        cpu_ratio = cli_cpu.p50 / script_cpu.p50
        rounds_done = len(wall[verb]["cli"])
        result.metrics[verb] = {
            "cli_ms": asdict(cli_d),
            "script_ms": asdict(script_d),
            "cli_cpu_ms": asdict(cli_cpu),
            "script_cpu_ms": asdict(script_cpu),
            "ratio": ratio,
            "cpu_ratio": cpu_ratio,
            "rounds": rounds_done,
        }
        result.ratio(
            f"`virtbus {verb}` p50, process start included",
            cli_d.p50,
            script_d.p50,
            unit="ms",
            baseline_what="minimal aio-pika script p50 (bench/minimal_rpc.py, same command)",
            at_most=GOAL_RATIO,
            rounds=rounds_done,
            detail=f"CPU {fmt(cli_cpu.p50)} / {fmt(script_cpu.p50)} ms = {cpu_ratio:.2f}x",
        )
        rows.append(
            [
                verb,
                fmt(script_d.p50),
                fmt(cli_d.p50),
                f"{ratio:.2f}x",
                fmt(script_cpu.p50),
                fmt(cli_cpu.p50),
                f"{cpu_ratio:.2f}x",
            ]
        )
    result.table(
        "B7 one command per process, p50 ms (process start included)",
        ["verb", "script", "virtbus CLI", "ratio", "script CPU", "CLI CPU", "CPU ratio"],
        rows,
    )
    result.notes.append(
        "Both processes run with the project's bytecode compiled and publish with "
        "publisher confirms, persistent and mandatory, replies on an exclusive queue."
    )
    return result
