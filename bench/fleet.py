"""A fleet worker: many in-process agents over the fake driver (``tests.fakes``) in one
process, steered over standard input by the benchmark.

    python -m bench.fleet '<json config>'

Each agent is a real ``agent.agent.Agent`` (store, monitor, dispatcher, bus) whose
Docker is a ``FakeDriver``. With ``shared_connection`` the agents of the worker open
their channels on one AMQP connection instead of one connection each (a broker started
with the default ``ulimit -n`` of 1024 allows 832 sockets, fewer than a 1,000-host fleet
needs); every agent still has its own channel, queue, bindings, consumer and publisher
confirms. The shim replaces ``aio_pika.connect`` in the worker process only.

Protocol: one JSON object per line. The worker first prints ``{"ready": …}``; then for
every request line it prints one reply line. Requests: ``{"cmd": "emit", "domain": D,
"n": N}`` (each agent's domain D is killed/started N times in all behind the agent's
back: N events per agent), ``{"cmd": "rss"}``, ``{"cmd": "profile_start"}``,
``{"cmd": "profile_stop"}``, ``{"cmd": "stop"}``. The agents heartbeat every
``heartbeat_s`` of the config (default: once an hour, none during a run).

With ``"responder": "bare"`` the hosts are ``bench.echo.BareHost``: the agent's queue,
bindings and reply, no agent (``emit`` has nothing to emit).

The worker runs on asyncio's own loop, not on uvloop as ``virtbus agent`` does by default.
Packed 625 to a process, each with its own connection, the agents cost more on uvloop:
at 5,000 hosts, one run after the other, 1,681 against 1,304 µs of the workers' CPU per
broadcast reply, gather p50 6.68 against 5.04 s (at 1,000 hosts uvloop was no slower).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from agent.host.agent import Agent
from agent.host.config import Config
from bench.core import rss_kib
from bench.echo import BareHost
from bench.profiling import BUSY_INTERVAL_S, Window
from tests.fakes import FakeDriver

START_AT_ONCE = 25
HEARTBEAT_S = 3600.0
QUIET: dict[str, Any] = {"reconcile_s": 3600.0} if "reconcile_s" in Config.model_fields else {}
"""No periodic re-list during a run (a fake engine has nothing to catch up on)."""


class SharedConnection:
    """Stands in for one agent's connection: its channels live on a shared one, and
    closing it closes only them."""

    def __init__(self, real: AbstractConnection, numbers: Iterator[int]) -> None:
        self._real = real
        self._numbers = numbers
        self._channels: list[AbstractChannel] = []
        self._closed = False
        self.close_callbacks: set[Any] = set()
        """Kept for the bus's sake; a lost shared connection closes every channel on it,
        and the bus watches its channel too."""

    def channel(self, publisher_confirms: bool = True) -> AbstractChannel:
        # never a number used before on the shared connection: aiormq may drop the
        # CloseOk of a channel the broker closed (its write queue full), and the broker
        # then refuses the number's next channel.open by closing the whole connection
        channel = self._real.channel(
            channel_number=next(self._numbers), publisher_confirms=publisher_confirms
        )
        self._channels.append(channel)
        return channel

    @property
    def is_closed(self) -> bool:
        return self._closed or self._real.is_closed

    async def close(self, *args: Any, **kwargs: Any) -> None:
        self._closed = True
        for channel in self._channels:
            if not channel.is_closed:
                await channel.close()
        self._channels.clear()


def share_connections(url: str) -> list[AbstractConnection]:
    """Make ``aio_pika.connect`` (as the agents' bus calls it) hand out channels of one
    real connection per worker; returns the list that will hold that connection."""
    shared: list[AbstractConnection] = []
    numbers = itertools.count(1)
    lock = asyncio.Lock()
    real_connect = aio_pika.connect

    async def connect(*args: Any, **kwargs: Any) -> Any:
        async with lock:
            if not shared:
                shared.append(
                    await real_connect(
                        url, client_properties={"connection_name": "virtbus bench fleet worker"}
                    )
                )
        return SharedConnection(shared[0], numbers)

    aio_pika.connect = connect
    aio_pika.connect_robust = connect
    return shared


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def emit(agents: list[tuple[Agent, FakeDriver]], domain: str, n: int) -> int:
    """Every agent's (running) domain is killed and started again behind the agent's
    back, ``n`` steps in all: one lifecycle event per step (stopped/destroyed, then
    started/booted). Not pause/unpause: the monitor checks a pause against the
    container's state at the time it reads the event, and drops it as a stale duplicate
    if a later step has already changed that state."""
    emitted = 0
    for _, driver in agents:
        handle = next((c.handle for c in driver.containers.values() if c.name == domain), None)
        if handle is None:
            continue
        for step in range(n):
            if step % 2 == 0:
                await driver.kill(handle)
            else:
                await driver.start(handle)
            emitted += 1
    return emitted


async def serve(config: dict[str, Any]) -> None:
    url: str = config["amqp_url"]
    shared = share_connections(url) if config["shared_connection"] else []
    window = Window(config["profile_out"], BUSY_INTERVAL_S) if config.get("profile_out") else None
    agents: list[tuple[Agent, FakeDriver]] = []
    bare: list[BareHost] = []
    for host in config["hosts"]:
        if config.get("responder") == "bare":
            bare.append(BareHost(url, host, config["group"], config["queue_type"]))
            continue
        driver = FakeDriver()
        settings = Config(
            host=host,
            amqp_url=url,
            groups=[config["group"]],
            state_dir=Path(config["state_dir"]),
            queue_type=config["queue_type"],
            heartbeat_s=config.get("heartbeat_s") or HEARTBEAT_S,
            drain_s=5.0,
            **QUIET,
        )
        agents.append((Agent(settings, driver=driver), driver))
    started = time.perf_counter()
    slots = asyncio.Semaphore(START_AT_ONCE)

    async def start(host: Agent | BareHost) -> None:
        async with slots:
            await host.start()

    await asyncio.gather(*(start(agent) for agent, _ in agents), *(start(b) for b in bare))
    reply(
        {
            "ready": len(agents) + len(bare),
            "startup_s": time.perf_counter() - started,
            "rss_kib": rss_kib_self(),
            "connections": len(shared) if shared else len(agents) + len(bare),
        }
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        request = json.loads(line)
        command = request["cmd"]
        if command == "emit":
            began = time.perf_counter()
            count = await emit(agents, request["domain"], request["n"])
            reply({"emitted": count, "elapsed_s": time.perf_counter() - began})
        elif command == "rss":
            reply({"rss_kib": rss_kib_self()})
        elif command == "profile_start":
            if window is not None:
                window.start()
            reply({"profiling": window is not None})
        elif command == "profile_stop":
            path = window.stop() if window is not None else None
            reply({"profile": str(path) if path else None})
        elif command == "stop":
            break
        else:
            reply({"error": f"unknown command {command}"})
    began = time.perf_counter()
    await asyncio.gather(
        *(agent.stop() for agent, _ in agents), *(b.stop() for b in bare), return_exceptions=True
    )
    for connection in shared:
        await connection.close()
    reply({"stopped": len(agents) + len(bare), "elapsed_s": time.perf_counter() - began})


def rss_kib_self() -> int:
    return rss_kib(os.getpid())[0]


def main() -> int:
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(json.loads(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
