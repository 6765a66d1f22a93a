"""``python -m bench.contention [--cycles N]``: what Docker's finishing of a pause or an
unpause costs a bus round trip made meanwhile.

The agent answers a suspend or a resume at Docker's report of it, while Docker is still
finishing its call (2 to 3 ms on the 2-core machine of the published runs): the reply's
way back shares the CPUs with that work, which the raw call's latency includes and the
bare RPC echo's, measured at rest, does not. This measures the bare echo's round trip
sent the moment the benchmark sees Docker's report of a pause or unpause of a container,
against the same round trip sent at rest, alternating. The Docker call is made by a
child process, so the benchmark's own loop reads no answer of Docker's meanwhile; the
report counts whether the call was indeed still running when the round trip was sent.
The difference is Docker's share of the agent's reply path. The machine must be
prepared (``scripts/setup.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import time
import uuid

import aiodocker
import aiohttp

from agent.host.driver import HOST_LABEL
from agent.settings import DEFAULT_AMQP_URL
from bench.core import HOST_PREFIX, Cleanup, docker_events, write_pidfile
from bench.procs import REPO
from bench.raw import RawDocker
from bench.rpc import RpcClient, command_body

VERBS = ("pause", "unpause")
REST_S = 0.03
"""The pause before each round trip, so that neither side follows the other's work."""


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--amqp-url", default=os.environ.get("VIRTBUS_AMQP_URL", DEFAULT_AMQP_URL))
    parser.add_argument("--docker-side", metavar="CONTAINER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.docker_side:
        await docker_side(args.docker_side)
    else:
        print(await measure(args.amqp_url, args.cycles))
    return 0


async def docker_side(handle: str) -> None:
    """The child: for each verb read on stdin, the Docker call, then ``<end ns>`` on stdout
    (``CLOCK_MONOTONIC``, shared with the parent) once Docker has answered."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with aiodocker.Docker() as docker:
        while verb := (await reader.readline()).decode().strip():
            await docker._query_json(f"containers/{handle}/{verb}", method="POST")
            print(time.monotonic_ns(), flush=True)


async def measure(amqp_url: str, cycles: int) -> str:
    run_id = secrets.token_hex(3)
    pidfile = write_pidfile(run_id)
    host, echo_host = f"{HOST_PREFIX}{run_id}-contention", f"{HOST_PREFIX}{run_id}-echo"
    cleanup = Cleanup(amqp_url, hosts={host, echo_host})
    docker = aiodocker.Docker()
    try:
        echo = await _spawn(
            cleanup,
            "bench.echo",
            "--amqp-url",
            amqp_url,
            "--host",
            echo_host,
            "--queue-type",
            "quorum",
        )
        assert echo.stdout is not None
        if (await asyncio.wait_for(echo.stdout.readline(), 30)).strip() != b"ready":
            raise RuntimeError("the echo server did not start")
        raw = RawDocker(docker, host)
        handle = await raw.create("c")
        await raw.start(handle)
        caller = await _spawn(cleanup, "bench.contention", "--docker-side", handle)
        return await _alternate(amqp_url, docker, caller, host, echo_host, cycles)
    finally:
        await cleanup.run(docker)
        await docker.close()
        pidfile.unlink(missing_ok=True)


async def _spawn(cleanup: Cleanup, module: str, *args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    cleanup.processes.append(process)
    return process


async def _alternate(
    amqp_url: str,
    docker: aiodocker.Docker,
    caller: asyncio.subprocess.Process,
    host: str,
    echo_host: str,
    cycles: int,
) -> str:
    assert caller.stdin is not None and caller.stdout is not None
    reports: asyncio.Queue[str] = asyncio.Queue()
    ready = asyncio.Event()

    async def follow() -> None:
        async for _, event in docker_events(docker, f"{HOST_LABEL}={host}", ready):
            reports.put_nowait(str(event.get("Action")))

    follower = asyncio.create_task(follow())
    at_rest: list[float] = []
    at_report: list[float] = []
    docker_call: list[float] = []
    running = 0
    try:
        await asyncio.wait_for(ready.wait(), 15)
        async with RpcClient(amqp_url) as client:

            async def round_trip() -> float:
                command_id = uuid.uuid4().hex
                body = command_body(command_id, "domain.lookup", {"name": "c"})
                began = time.perf_counter()
                await client.call(echo_host, body, command_id)
                return time.perf_counter() - began

            for _ in range(5):
                await round_trip()
            for _ in range(cycles):
                for verb in VERBS:
                    await asyncio.sleep(REST_S)
                    at_rest.append(await round_trip())
                    await asyncio.sleep(REST_S)
                    while not reports.empty():
                        reports.get_nowait()
                    asked_ns = time.monotonic_ns()
                    caller.stdin.write(f"{verb}\n".encode())
                    while await asyncio.wait_for(reports.get(), 15) != verb:
                        pass
                    sent_ns = time.monotonic_ns()
                    at_report.append(await round_trip())
                    answered_ns = int(await asyncio.wait_for(caller.stdout.readline(), 15))
                    running += answered_ns > sent_ns
                    docker_call.append((answered_ns - asked_ns) / 1e9)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await follower
        caller.stdin.close()

    def p50(values: list[float]) -> float:
        return statistics.median(values) * 1000

    return (
        f"bare RPC echo p50, sent at rest: {p50(at_rest):.3f} ms; sent at Docker's report "
        f"of a pause or unpause: {p50(at_report):.3f} ms (Docker's call still running when "
        f"{running} of {len(at_report)} were sent); difference "
        f"{p50(at_report) - p50(at_rest):+.3f} ms; Docker's pause/unpause call p50 "
        f"{p50(docker_call):.2f} ms (n={len(at_rest)} a side)"
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
