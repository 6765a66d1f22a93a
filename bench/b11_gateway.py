"""B11: what the libvirt gateway adds to a bus op, and ``virsh list --all`` of 1,000
domains (issue 15, goal 5).

One agent over the fake driver (``bench.fleet``, one host) holds 1,000 defined domains:
``domain.get_state`` and ``host.list_domains`` are answered from the agent's domain
table, with no engine call, so a fake driver changes nothing that is measured and
spares defining 1,000 containers. ``virtbus gateway`` runs in its own process.

- Per call: ``virDomainGetState`` (``virsh domstate``) from libvirt-python on one
  persistent connection (process start excluded; the system python3 in a process of
  its own) against ``Domain.state()`` of the client library in this process, the same
  bus op, in alternating batches of ten. Goal: gateway p50 - library p50 ≤ 1 ms.
- Listing: libvirt-python's ``listAllDomains(0)`` (``virsh list --all``'s one call) on
  the same connection, against the library's ``list_all_domains``, alternating. Goal:
  p50 ≤ 100 ms. The ``virsh list --all`` process (start included) is timed too, and
  reported.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from agent.client import Connection
from agent.client.connection import Op, PullWatcher
from agent.gateway.server import Gateway
from bench.core import BenchError, BenchResult, Context, Dist, domain_spec, fmt
from bench.procs import VIRTBUS, FleetProcess, child_env, log_file, log_tail, terminate
from bench.rpc import RpcClient
from schemas.commands import GetState, ListDomains, Lookup, Ping
from schemas.domain import DomainRecord
from schemas.replies import DomainList, DomainStateInfo, Pong, Result

SYSTEM_PYTHON = "/usr/bin/python3"
QUEUE_TYPE = "quorum"
STATE_GOAL_MS = 1.0
LIST_GOAL_MS = 100.0
DEFINE_AT_ONCE = 32
READY_TIMEOUT_S = 60.0
STATE_BATCH = 10
"""Calls per side before the other side's turn: small, so that both see the same load."""

PEER = """
import json, sys, time
import libvirt

conn = libvirt.open(sys.argv[1])
dom = conn.lookupByName(sys.argv[2])
print(json.dumps({"ready": len(conn.listAllDomains(0))}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if request["cmd"] == "stop":
        break
    times, answer = [], None
    for _ in range(request["n"]):
        began = time.perf_counter()
        if request["cmd"] == "state":
            answer = dom.state()
        else:
            answer = len(conn.listAllDomains(0))
        times.append(time.perf_counter() - began)
    print(json.dumps({"times": times, "answer": answer}), flush=True)
conn.close()
"""
"""libvirt-python on one persistent connection: timed batches on request."""


class InstantBus(Connection):
    """A bus whose every answer is ready at once: a gateway over it costs only its own
    work, libvirt's client's and the socket's."""

    RECORD = DomainRecord(
        name="b11-0000",
        uuid=uuid.uuid4(),
        id=-1,
        state=5,
        reason=0,
        persistent=True,
        autostart=False,
    )

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def call(
        self,
        host: str,
        op: Op,
        args: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        on_pull: PullWatcher | None = None,
    ) -> Result:
        if op is Ping:
            return Pong(host=host, time=datetime.now(UTC))
        if op is Lookup:
            return self.RECORD
        if op is GetState:
            return DomainStateInfo(state=5, reason=0)
        if op is ListDomains:
            return DomainList(domains=[self.RECORD])
        raise BenchError(f"the instant bus does not answer {op}")


async def start_peer(ctx: Context, uri: str, name: str) -> Peer:
    script = ctx.workdir / "b11_peer.py"
    script.write_text(PEER)
    process = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        str(script),
        uri,
        name,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "LC_ALL": "C"},
    )
    ctx.cleanup.processes.append(process)
    return Peer(process)


async def gateway_alone(ctx: Context, calls: int) -> list[float]:
    """virDomainGetState through a gateway in this process over the instant bus."""
    async with Gateway(InstantBus("amqp://unused"), "127.0.0.1", 0) as gateway:
        peer = await start_peer(ctx, f"virtbus+tcp://127.0.0.1:{gateway.port}/b11", "b11-0000")
        try:
            await peer.read()
            times: list[float] = (await peer.batch("state", calls))["times"]
        finally:
            await terminate(peer.process, 10)
    return times


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Peer:
    """The libvirt-python process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def read(self, timeout_s: float = 120.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise BenchError("the libvirt-python peer ended")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def batch(self, cmd: str, n: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, "n": n}).encode() + b"\n")
        await self.process.stdin.drain()
        return await self.read()


async def wait_listening(port: int, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise BenchError(f"the gateway exited ({process.returncode})")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise BenchError("the gateway did not listen in time")


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    count = 200 if ctx.quick else 1000
    rounds = 2 if ctx.quick else 6
    state_rounds = 10 if ctx.quick else 60
    state_calls = STATE_BATCH
    list_calls = 3 if ctx.quick else 5
    virsh_runs = 1 if ctx.quick else 3
    result = BenchResult("B11", f"the libvirt gateway: a call's cost, a list of {count}")
    if shutil.which(SYSTEM_PYTHON) is None or shutil.which("virsh") is None:
        raise BenchError("B11 needs virsh and libvirt-python (python3-libvirt)")
    host = ctx.host("b11")
    group = f"bench-{ctx.run_id}-b11"
    agent = FleetProcess(ctx, "b11-agent", [host], group, QUEUE_TYPE, False)
    gateway: asyncio.subprocess.Process | None = None
    peer: Peer | None = None
    conn = Connection(ctx.amqp_url)
    times: dict[str, list[float]] = {key: [] for key in ("gw_state", "lib_state")}
    times |= {"gw_list": [], "lib_list": [], "virsh_list": [], "gw_alone": []}
    try:
        await agent.start()
        slots = asyncio.Semaphore(DEFINE_AT_ONCE)

        async def define(index: int) -> None:
            async with slots:
                await client.command(
                    host, "domain.define", args={"spec": domain_spec(f"b11-{index:04d}")}
                )

        began = time.perf_counter()
        await asyncio.gather(*(define(index) for index in range(count)))
        ctx.log(f"B11: {count} domains defined in {time.perf_counter() - began:.1f} s")

        port = free_port()
        with log_file(ctx, "b11-gateway") as log:
            gateway = await asyncio.create_subprocess_exec(
                str(VIRTBUS),
                "gateway",
                "--listen",
                f"127.0.0.1:{port}",
                "--connect",
                ctx.amqp_url,
                env=child_env(ctx),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        ctx.cleanup.processes.append(gateway)
        try:
            await wait_listening(port, gateway)
        except BenchError as error:
            raise BenchError(f"{error}:\n{log_tail(ctx, 'b11-gateway')}") from None
        uri = f"virtbus+tcp://127.0.0.1:{port}/{host}"
        name = "b11-0000"
        peer = await start_peer(ctx, uri, name)
        ready = await peer.read()
        if ready.get("ready") != count:
            raise BenchError(f"libvirt-python listed {ready} domains, not {count}")
        await conn.open()
        domain = await conn.lookup_by_name(host, name)

        async def gw_state() -> None:
            assert peer is not None
            answer = await peer.batch("state", state_calls)
            times["gw_state"] += answer["times"]

        async def lib_state() -> None:
            for _ in range(state_calls):
                began = time.perf_counter()
                await domain.state()
                times["lib_state"].append(time.perf_counter() - began)

        async def gw_list() -> None:
            assert peer is not None
            answer = await peer.batch("list", list_calls)
            if answer["answer"] != count:
                raise BenchError(f"listAllDomains gave {answer['answer']}, not {count}")
            times["gw_list"] += answer["times"]

        async def lib_list() -> None:
            for _ in range(list_calls):
                began = time.perf_counter()
                listed = await conn.list_all_domains(host)
                times["lib_list"].append(time.perf_counter() - began)
                if len(listed) != count:
                    raise BenchError(f"list_all_domains gave {len(listed)}, not {count}")

        await gw_state()  # warm-up of both paths, not kept
        await lib_state()
        times["gw_state"].clear()
        times["lib_state"].clear()
        async with agent.window("B11 state calls"):
            for round_ in range(state_rounds):
                for side in (gw_state, lib_state) if round_ % 2 == 0 else (lib_state, gw_state):
                    await side()
        ctx.log(f"B11 state calls done ({state_rounds} rounds)")
        for round_ in range(rounds):
            for side in (gw_list, lib_list) if round_ % 2 == 0 else (lib_list, gw_list):
                async with agent.window(f"B11 list round {round_} {side.__name__}"):
                    await side()
            ctx.log(f"B11 list round {round_} done")

        times["gw_alone"] = await gateway_alone(ctx, 100 if ctx.quick else 500)
        virsh = shutil.which("virsh")
        assert virsh is not None
        for _ in range(virsh_runs):
            began = time.perf_counter()
            listing = await asyncio.create_subprocess_exec(
                virsh,
                "-c",
                uri,
                "list",
                "--all",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "LC_ALL": "C"},
            )
            out, err = await asyncio.wait_for(listing.communicate(), 300)
            times["virsh_list"].append(time.perf_counter() - began)
            rows = [line for line in out.decode().splitlines()[2:] if line.strip()]
            if listing.returncode != 0 or len(rows) != count:
                raise BenchError(f"virsh list --all: {len(rows)} rows, {err.decode()[-300:]}")
    finally:
        await conn.close()
        if peer is not None:
            await terminate(peer.process, 10)
        if gateway is not None:
            await terminate(gateway, 10)
        await agent.stop()

    dists = {key: Dist.of(values) for key, values in times.items()}
    overhead = dists["gw_state"].p50 - dists["lib_state"].p50
    listing_ms = dists["gw_list"].p50
    result.metrics = {
        "domains": count,
        "state_rounds": state_rounds,
        "state_batch": state_calls,
        "list_rounds": rounds,
        **{f"{key}_ms": asdict(dist) for key, dist in dists.items()},
        "state_overhead_ms": overhead,
    }
    labels = {
        "gw_state": "virDomainGetState via the gateway (libvirt-python)",
        "lib_state": "Domain.state() (client library)",
        "gw_list": f"listAllDomains(0) of {count} via the gateway (libvirt-python)",
        "lib_list": f"list_all_domains of {count} (client library)",
        "virsh_list": f"`virsh list --all` of {count}, process start included",
        "gw_alone": "virDomainGetState via a gateway over a bus that answers at once",
    }
    result.table(
        f"B11 the gateway against the client library: state in {state_rounds} alternating "
        f"rounds of {state_calls} calls, listing in {rounds}",
        ["call", "n", "p50 ms", "p90 ms", "p99 ms"],
        [
            [
                label,
                str(dists[key].n),
                fmt(dists[key].p50),
                fmt(dists[key].p90),
                fmt(dists[key].p99),
            ]
            for key, label in labels.items()
        ],
    )
    result.notes.append(
        "The agent runs over the fake driver (one host, bench.fleet): both calls are "
        "answered from its domain table without an engine call. libvirt-python keeps one "
        "connection open (no process start); `virsh list --all` is a process per run and "
        "also asks each domain's state (one virDomainGetState per domain). The gateway "
        "over a bus that answers at once (in this process, between the rounds) shows what "
        "the gateway, libvirt's client and the socket cost by themselves."
    )
    result.difference(
        "virsh call via the gateway, over the same op via the client library (p50)",
        dists["gw_state"].p50,
        dists["lib_state"].p50,
        unit="ms",
        baseline_what="Domain.state() of the client library (p50)",
        at_most=STATE_GOAL_MS,
        rounds=state_rounds,
    )
    result.absolute(
        f"listAllDomains(0) of {count} via the gateway (p50)",
        listing_ms,
        unit="ms",
        reason="issue 15's bound for `virsh list --all` of 1,000 domains",
        at_most=LIST_GOAL_MS,
        detail=f"library list_all_domains {fmt(dists['lib_list'].p50)} ms; `virsh list --all` "
        f"process {fmt(dists['virsh_list'].p50)} ms",
    )
    return result
