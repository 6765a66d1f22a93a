"""``python -m bench.coldpath [--events N]``: what one Docker event costs the agent to
apply (translate, commit with its event, queue for the broker), warm and after an idle
wait, in one process with nothing else in the way.

The agent's real monitor and store over the fake driver: a running domain is paused and
resumed behind the agent's back, one event at a time, and each ``Monitor.apply`` is timed.
Four ways, in rotating rounds:

- ``warm``: events back to back, as under load;
- ``idle``: each event after a 10 ms idle wait of the event loop, as B3's events come;
- ``idle, store in memory``: the same, with the store's SQLite database in memory, so
  that no file is read or written;
- ``idle, then a 1 ms spin``: the same, the CPU kept busy for 1 ms before the event, so
  that the processor is awake and at speed when it comes.

Each way also counts the applies that took over 1 ms, and their sum: a commit that
waited for the disk (a checkpoint of the store's log, when it ran inside the commit).

If ``idle`` costs several times ``warm`` and neither the store in memory nor the spin
takes that back, the difference is the processor fetching the agent's code and data again
after the wait (its caches went to others meanwhile), not the disk and not a slow wake-up:
it scales with how much code and data one event touches, not with the instructions run.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock
from uuid import uuid4

from agent.host.domains import DomainObj, DomainTable
from agent.host.driver import RuntimeEvent
from agent.host.monitor import Monitor
from agent.host.store import Store
from schemas.codes import DomainState, RunningReason
from schemas.domain import DomainSpec
from tests.fakes import FakeContainer, FakeDriver

IDLE_S = 0.01
STALL_US = 1000.0
"""An apply longer than this waited for something (the disk): counted apart."""
SPIN_S = 0.001
ROUNDS = 4


def spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


@contextmanager
def in_memory() -> Iterator[None]:
    connect = sqlite3.connect

    def memory(_: object, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = connect(":memory:", **kwargs)
        return connection

    with mock.patch("agent.host.store.sqlite3.connect", memory):
        yield


async def apply_times(events: int, idle_s: float, before: Callable[[], None]) -> list[float]:
    """Microseconds per ``Monitor.apply`` of ``events`` pause/unpause events."""
    with (
        tempfile.TemporaryDirectory(prefix="virtbus-coldpath-") as directory,
        Store(Path(directory)) as store,
    ):
        driver, domains = FakeDriver(), DomainTable()
        monitor = Monitor("coldpath", domains, store, driver, lambda: None)
        spec = DomainSpec(name="web", image="virtbus-test:latest")
        domain = DomainObj(
            uuid=uuid4(),
            name="web",
            spec=spec,
            persistent=True,
            autostart=False,
            handle="h-web",
            state=DomainState.RUNNING,
            reason=RunningReason.BOOTED,
            pid=4242,
        )
        container = FakeContainer("h-web", domain.uuid, "web", spec, status="running", pid=4242)
        driver.containers["h-web"] = container
        domains.add(domain)
        monitor.save(domain)
        times: list[float] = []
        for index in range(events):
            action = "pause" if index % 2 == 0 else "unpause"
            container.status = "paused" if action == "pause" else "running"
            event = RuntimeEvent(action, "h-web", domain.uuid, "web", time.time_ns())
            if idle_s:
                await asyncio.sleep(idle_s)
            before()
            began = time.perf_counter_ns()
            await monitor.apply(event)
            times.append((time.perf_counter_ns() - began) / 1000)
            if index % 100 == 99:
                store.confirmed(store.last_seq())
        return times


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200, help="events per way and round")
    args = parser.parse_args()
    ways: dict[str, tuple[float, Callable[[], None], bool]] = {
        "warm": (0.0, lambda: None, False),
        "idle": (IDLE_S, lambda: None, False),
        "idle, store in memory": (IDLE_S, lambda: None, True),
        f"idle, then a {SPIN_S * 1000:g} ms spin": (IDLE_S, lambda: spin(SPIN_S), False),
    }
    measured: dict[str, list[float]] = {way: [] for way in ways}
    for round_index in range(ROUNDS):
        names = list(ways)
        for way in names[round_index % len(names) :] + names[: round_index % len(names)]:
            idle_s, before, memory = ways[way]
            if memory:
                with in_memory():
                    measured[way] += await apply_times(args.events, idle_s, before)
            else:
                measured[way] += await apply_times(args.events, idle_s, before)
    warm = statistics.median(measured["warm"])
    print(f"Monitor.apply of one pause/unpause event, {ROUNDS} rotating rounds:")
    for way, times in measured.items():
        p50 = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        stalls = [t for t in times if t > STALL_US]
        print(
            f"  {way:28} p50 {p50:7.1f} µs  p90 {p90:7.1f} µs  {p50 / warm:5.2f}x warm  "
            f"max {max(times) / 1000:6.2f} ms  over {STALL_US / 1000:g} ms: {len(stalls)} "
            f"({sum(stalls) / 1000:.1f} ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
