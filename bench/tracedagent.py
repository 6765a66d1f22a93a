"""``python -m bench.tracedagent agent …``: exactly ``virtbus agent …``, with
``time.perf_counter_ns`` stamps at the steps of a command and of a Docker event
(``bench.trace`` drives it and prints the timelines), and three from below the agent's
code: ``sock.feed`` when bytes from the broker reach the socket's reader (the command's
arrival, before aiormq reads it), ``wireN>`` when the Nth message since leaves, and
``docker.report``, Docker's own time of the change it reports, on the same clock. The
stamps go to ``$BENCH_TRACE_OUT`` (one ``<ns> <point>`` line each) when the agent exits.
Used only for traces; measured runs start the real ``virtbus`` entry point.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

STAMPS: list[tuple[int, str]] = []

POINTS: dict[str, tuple[str, str]] = {
    "bus.take": ("agent.host.bus", "Bus._take"),
    "submit": ("agent.host.dispatch", "Dispatcher.submit"),
    "parse": ("agent.host.dispatch", "parse"),
    "fingerprint": ("agent.host.dispatch", "fingerprint_of"),
    "attempt": ("agent.host.store", "Store.attempt"),
    "run": ("agent.host.operations", "Operations.run"),
    "intend": ("agent.host.store", "Transaction.intend"),
    "docker.pause": ("agent.host.driver", "DockerDriver.pause"),
    "docker.unpause": ("agent.host.driver", "DockerDriver.unpause"),
    "docker.start": ("agent.host.driver", "DockerDriver.start"),
    "docker.observe": ("agent.host.driver", "DockerDriver.observe"),
    "docker.event": ("agent.host.driver", "DockerDriver._runtime_event"),
    "apply": ("agent.host.monitor", "Monitor._apply"),
    "stale": ("agent.host.monitor", "Monitor._stale"),
    "enqueue": ("agent.host.store", "Transaction.enqueue"),
    "pending": ("agent.host.store", "Store.pending"),
    "publish_event": ("agent.host.bus", "Bus.publish_event"),
    "confirmed": ("agent.host.store", "Store.confirmed"),
    "encode": ("agent.host.dispatch", "_encode"),
    "record_reply": ("agent.host.store", "Store.record_reply"),
    "reply": ("agent.host.bus", "Bus.reply"),
    "settle": ("agent.host.bus", "Bus.settle"),
}


WRITES = [0]
"""Writes to the broker's socket since the last command was taken or Docker event read."""


def stamp(point: str) -> None:
    if point in ("bus.take>", "docker.event>"):
        WRITES[0] = 0
    STAMPS.append((time.perf_counter_ns(), point))


def traced(point: str, function: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def coroutine(*args: Any, **kwargs: Any) -> Any:
            stamp(f"{point}>")
            try:
                return await function(*args, **kwargs)
            finally:
                stamp(f"{point}<")

        return coroutine

    if inspect.isasyncgenfunction(function):
        return function

    @functools.wraps(function)
    def plain(*args: Any, **kwargs: Any) -> Any:
        stamp(f"{point}>")
        try:
            return function(*args, **kwargs)
        finally:
            stamp(f"{point}<")

    return plain


def install() -> None:
    import importlib

    for point, (module_name, attribute) in POINTS.items():
        module = importlib.import_module(module_name)
        owner: Any = module
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)
        setattr(owner, name, traced(point, original))
    from agent.host.driver import DockerDriver

    runtime_event = DockerDriver._runtime_event

    async def reported(self: DockerDriver, line: bytes) -> Any:
        # Docker's own time of the report (CLOCK_REALTIME) put on the trace's clock:
        # docker.report → docker.event> is the stream's delivery to the agent
        found = re.search(rb'"timeNano":(\d+)', line)
        if found:
            STAMPS.append(
                (time.perf_counter_ns() - (time.time_ns() - int(found[1])), "docker.report")
            )
        return await runtime_event(self, line)

    DockerDriver._runtime_event = reported  # type: ignore[method-assign]
    import asyncio.streams

    write = asyncio.streams.StreamWriter.write

    def traced_write(self: asyncio.streams.StreamWriter, data: Any) -> None:
        # aiormq's writer task hands its frames to the socket here: wireN> is when the
        # Nth message since the command or the Docker event left the agent
        WRITES[0] += 1
        stamp(f"wire{WRITES[0]}>")
        write(self, data)

    asyncio.streams.StreamWriter.write = traced_write  # type: ignore[method-assign]
    feed = asyncio.streams.StreamReader.feed_data

    def traced_feed(self: asyncio.streams.StreamReader, data: bytes) -> None:
        stamp("sock.feed")
        feed(self, data)

    asyncio.streams.StreamReader.feed_data = traced_feed  # type: ignore[method-assign,assignment]
    import sqlite3

    commit_point = "commit"

    class TracedConnection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql == "COMMIT":
                stamp(f"{commit_point}>")
                try:
                    return super().execute(sql, *args)
                finally:
                    stamp(f"{commit_point}<")
            return super().execute(sql, *args)

    connect = sqlite3.connect

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(*args, factory=TracedConnection, **kwargs)

    sqlite3.connect = traced_connect  # type: ignore[assignment]


def main() -> int:
    install()
    from agent.cli import main as virtbus_main

    try:
        return virtbus_main(sys.argv[1:])
    finally:
        with open(os.environ["BENCH_TRACE_OUT"], "w") as out:
            out.writelines(f"{ns} {point}\n" for ns, point in STAMPS)


if __name__ == "__main__":
    sys.exit(main())
