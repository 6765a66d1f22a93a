"""The event history (a stream queue bound to the events exchange): a reader that was
not there when events happened replays them, from a time or from an offset, through the
client library and ``virtbus event --since``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from agent.client import Connection, LifecycleEvent, connect
from tests.support.fleet import CLI, Host, spec
from tests.support.services import AMQP_URL

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(services: None) -> AsyncIterator[Connection]:
    async with connect(AMQP_URL, timeout_s=30) as connection:
        # attaching declares the history, so the test's events are recorded
        async with connection.history("next"):
            pass
        yield connection


async def test_a_late_reader_replays_from_a_time_then_from_an_offset(
    conn: Connection, host: Host
) -> None:
    before = datetime.now(UTC)
    await host.ok("domain.define", args={"spec": spec("web")})
    await host.ok("domain.create", "web")

    async with conn.history(before, host=host.name, kind="lifecycle") as replay:
        defined = await replay.next(30)
        started = await replay.next(30)
    assert isinstance(defined.event, LifecycleEvent)
    assert isinstance(started.event, LifecycleEvent)
    assert (defined.event.event, started.event.event) == ("defined", "started")
    assert started.offset > defined.offset

    async with conn.history(defined.offset + 1, host=host.name) as replay:
        again = await replay.next(30)
    assert again == started


async def test_a_reader_of_the_recent_past_skips_the_older_history(
    conn: Connection, host: Host
) -> None:
    """``last``: a reader starts near the history's newest events, however long the
    history since its time (the dashboard opens with the newest of the last hour)."""
    before = datetime.now(UTC)
    await host.ok("domain.define", args={"spec": spec("web")})
    for op in ("domain.create", "domain.suspend", "domain.resume", "domain.destroy"):
        await host.ok(op, "web")

    async with conn.history(before, host=host.name, kind="lifecycle") as replay:
        whole = [await replay.next(30) for _ in range(5)]
    async with conn.history(before, host=host.name, kind="lifecycle", last=1) as replay:
        await host.ok("domain.create", "web")
        # the newest chunk may still hold the stop, or not (any host's event after it
        # starts a new one); the define, start, suspend and resume are not read again
        first = await replay.next(30)
        started = await replay.next(30) if first == whole[-1] else first
    assert [r.event.event for r in whole if isinstance(r.event, LifecycleEvent)] == [
        "defined", "started", "suspended", "resumed", "stopped"
    ]  # fmt: skip
    assert isinstance(started.event, LifecycleEvent)
    assert started.event.event == "started" and started.offset > whole[-1].offset


async def test_event_verb_replays_with_since(conn: Connection, host: Host, cli: CLI) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})
    await host.ok("domain.create", "web")
    ran = await cli(
        "event", "--all", "--loop", "--json", "--host", host.name, "--since", "5m",
        "--timeout", "5",
    )  # fmt: skip
    assert ran.status == 0, ran.err
    shown = [json.loads(line) for line in ran.out.splitlines()]
    assert [(e["event"], e["detail"]) for e in shown] == [
        ("defined", "added"),
        ("started", "booted"),
    ]
    assert shown[0]["offset"] < shown[1]["offset"]

    ran = await cli(
        "event", "--all", "--json", "--host", host.name, "--since", str(shown[1]["offset"]),
        "--timeout", "5",
    )  # fmt: skip
    assert [json.loads(line)["event"] for line in ran.out.splitlines()] == ["started"]


async def test_a_bad_since_is_refused(cli: CLI) -> None:
    ran = await cli("event", "--all", "--since", "yesterday-ish")
    assert ran.status == 2
    assert "neither a time" in ran.err
