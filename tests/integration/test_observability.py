"""Metrics and health, scraped from a running agent: counters move by exactly the work
done, and readiness follows the broker."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import BusPeer, EventRecorder
from tests.support.fleet import Fleet, Host, spec

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def health(port: int) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/health") as response,
    ):
        return response.status, await response.json()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    """Health is only visible by asking the endpoint: ask every 0.1 s, at most timeout_s."""
    for _ in range(int(timeout_s * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"not true within {timeout_s} s")


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_by_exactly_the_work_done(
    fleet: Fleet, peer: BusPeer, unused_tcp_port: int
) -> None:
    agent = await fleet.start(metrics_port=unused_tcp_port)
    port = unused_tcp_port
    recorder = await EventRecorder(peer.channel, f"{agent.host}.lifecycle.#").start()
    host = Host(agent.host, peer, recorder, agent)
    before = await scrape(port)
    assert metric(before, "virtbus_broker_connected") == 1
    assert metric(before, "virtbus_docker_connected") == 1
    await host.ok("domain.define", args={"spec": spec("web")})
    await host.ok("domain.create", "web")
    running = await scrape(port)
    assert metric(running, "virtbus_domains", state="running") == 1
    for op in ("domain.suspend", "domain.resume", "domain.destroy", "domain.undefine"):
        await host.ok(op, "web")
    assert (await host.call("domain.lookup", "ghost"))["error"]["code"] == "NO_DOMAIN"
    await asyncio.wait_for(await peer.send(agent.host, b"{not json"), 30)
    await recorder.wait_for(lambda e: getattr(e, "event", "") == "undefined")
    await agent.flushed(timeout_s=10)
    after = await scrape(port)
    for op in ("define", "create", "suspend", "resume", "destroy", "undefine"):
        name = f"domain.{op}"
        assert metric(after, "virtbus_commands_total", op=name, outcome="ok") == 1, name
        assert metric(after, "virtbus_command_duration_seconds_count", op=name) == 1, name
    assert metric(after, "virtbus_commands_total", op="domain.lookup", outcome="NO_DOMAIN") == 1
    assert metric(after, "virtbus_commands_total", op="invalid", outcome="INVALID_ARG") == 1
    assert metric(after, "virtbus_events_published_total", kind="lifecycle") == 6
    assert metric(after, "virtbus_events_pending") == 0
    assert metric(after, "virtbus_domains", state="running") == 0
    assert sum(v for (n, _), v in after.items() if n == "virtbus_domains") == 0
    assert metric(after, "virtbus_reconnects_total", peer="broker") == 0


def rabbitmqctl(*argv: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *argv], check=True, timeout=120, capture_output=True)


async def test_health_follows_the_broker(fleet: Fleet, unused_tcp_port: int) -> None:
    agent = await fleet.start(metrics_port=unused_tcp_port)
    port = unused_tcp_port
    assert await health(port) == (
        200,
        {"ready": True, "broker": True, "docker": True, "store": True},
    )
    await asyncio.to_thread(rabbitmqctl, "stop_app")
    try:

        async def unready() -> bool:
            return (await health(port))[0] == 503

        await eventually(unready, 30)
        assert (await health(port))[1] == {
            "ready": False,
            "broker": False,
            "docker": True,
            "store": True,
        }
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await asyncio.to_thread(rabbitmqctl, "await_startup")

    async def ready() -> bool:
        return (await health(port))[0] == 200

    await eventually(ready, 60)
    samples = await scrape(port)
    assert metric(samples, "virtbus_reconnects_total", peer="broker") >= 1
    assert agent.ready.is_set()
