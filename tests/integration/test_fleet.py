"""A fleet of agent processes on one engine: broadcast scatter-gather, groups, presence,
and the client's event filters."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.client import Connection, EventStream, VirtbusError, connect
from schemas.codes import ErrorCode, EventId
from schemas.events import Event, LifecycleEvent
from tests.support import BusPeer, EventRecorder
from tests.support.fleet import CLI, VIRTBUS, Fleet, Host, spec
from tests.support.services import AMQP_URL, new_host

pytestmark = pytest.mark.integration

FLEET_SIZE = 10
HEARTBEAT_S = 0.5


@dataclass
class Processes:
    hosts: dict[str, asyncio.subprocess.Process]
    groups: dict[str, str]

    def of(self, group: str) -> set[str]:
        return {host for host, g in self.groups.items() if g == group}


@pytest.fixture
async def processes(fleet: Fleet, peer: BusPeer, tmp_path: Path) -> AsyncIterator[Processes]:
    groups = {new_host(): ("red" if n % 2 else "blue") for n in range(FLEET_SIZE)}
    fleet.hosts.update(groups)
    online = await EventRecorder(peer.channel, "*.agent.online").start()
    environment = {**os.environ, "VIRTBUS_AMQP_URL": AMQP_URL}
    started = {
        host: await asyncio.create_subprocess_exec(
            str(VIRTBUS),
            "agent",
            "--host",
            host,
            "--group",
            group,
            "--heartbeat-s",
            str(HEARTBEAT_S),
            "--queue-type",
            "classic",
            "--state-dir",
            str(tmp_path / "state"),
            env=environment,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for host, group in groups.items()
    }
    try:
        await online.wait_for(
            lambda _: groups.keys() <= {e.host for e in online.events}, timeout=60
        )
        yield Processes(started, groups)
    finally:
        for process in started.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in started.values():
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


@pytest.fixture
async def conn(services: None) -> AsyncIterator[Connection]:
    async with connect(AMQP_URL, timeout_s=10) as connection:
        yield connection


async def test_broadcast_to_all_and_to_a_group_gets_exactly_those_hosts(
    processes: Processes, conn: Connection
) -> None:
    everyone = set(processes.hosts)
    to_all = await conn.broadcast("host.ping", expect=everyone, timeout_s=10)
    assert to_all.missing == frozenset()
    assert everyone <= to_all.replies.keys()
    red = processes.of("red")
    to_red = await conn.broadcast("host.get_info", group="red", timeout_s=2)
    assert set(to_red.replies) == red
    assert all(reply.ok for reply in to_red.replies.values())


async def test_stopped_agent_is_missing_and_then_lost(
    processes: Processes, conn: Connection, cli: CLI
) -> None:
    everyone = set(processes.hosts)
    remembered = await cli("hosts", "--json")
    assert everyone <= {h["host"] for h in remembered.json()}
    victim = sorted(everyone)[0]
    async with conn.hosts(discover_s=2) as registry:
        assert everyone <= registry.alive()
        processes.hosts[victim].send_signal(signal.SIGKILL)
        await processes.hosts[victim].wait()
        result = await conn.broadcast("host.ping", expect=everyone, timeout_s=3)
        assert result.missing == {victim}
        assert result.elapsed_s >= 3
        await registry.wait_for(lambda hosts: hosts[victim].state == "lost", timeout_s=10)
        assert registry.alive() >= everyone - {victim}
    group = processes.groups[victim]
    expect = ",".join(sorted(processes.of(group)))
    ran = await cli(
        "list", "--all", "--group", group, "--expect", expect, "--timeout", "3", "--json"
    )
    assert ran.status == 1
    answer = ran.json()
    assert answer["missing"] == [victim]
    assert set(answer["replies"]) == processes.of(group) - {victim}
    assert f"error: host {victim} did not answer within 3 s" in ran.err
    hosts = {h["host"]: h for h in (await cli("hosts", "--json")).json()}
    assert hosts[victim]["state"] == "lost"
    assert all(hosts[h]["state"] == "alive" for h in everyone - {victim})
    table = (await cli("hosts", "--group", group)).out
    assert any(line.split()[:2] == [victim, "lost"] for line in table.splitlines())


async def test_cli_broadcast_expects_the_hosts_seen_before(processes: Processes, cli: CLI) -> None:
    await cli("hosts")
    ran = await cli("domstate", "ghost", "--all-hosts", "--timeout", "10", "--json")
    answer = json.loads(ran.out)
    assert set(processes.hosts) <= set(answer["expected"])
    assert set(processes.hosts) <= set(answer["replies"])
    assert {r["error"]["code"] for r in answer["replies"].values()} == {"NO_DOMAIN"}
    assert "hosts answered" in ran.err


async def test_event_filters_deliver_exactly_what_was_asked(host: Host, conn: Connection) -> None:
    async with (
        conn.events(host=host.name, domain="web") as web_only,
        conn.events(host=host.name, event="stopped") as stops_only,
        conn.events(host=host.name, kind="reboot") as reboots_only,
    ):
        callbacks: list[Event] = []
        callback_id = await conn.domain_event_register_any(
            host.name, "db", EventId.LIFECYCLE, callbacks.append
        )
        for name in ("web", "db"):
            await host.ok("domain.define", args={"spec": spec(name)})
            await host.ok("domain.create", name)
            await host.ok("domain.reboot", name)
            await host.ok("domain.destroy", name)
        everything = await host.fence()
        await conn.domain_event_deregister_any(callback_id)

        async def drain(stream: EventStream, count: int) -> list[Event]:
            return [await stream.next(10) for _ in range(count)]

        web_events = [e for e in everything if e.domain.name == "web"]
        assert await drain(web_only, len(web_events)) == web_events
        stops = [e for e in everything if isinstance(e, LifecycleEvent) and e.event == "stopped"]
        assert await drain(stops_only, len(stops)) == stops
        reboots = [e for e in everything if e.kind == "reboot"]
        assert await drain(reboots_only, len(reboots)) == reboots
        db_lifecycle = [
            e for e in everything if e.domain.name == "db" and isinstance(e, LifecycleEvent)
        ]
        assert callbacks == db_lifecycle
        for stream in (web_only, stops_only, reboots_only):
            with pytest.raises(VirtbusError) as nothing_more:
                await stream.next(0.2)
            assert nothing_more.value.code is ErrorCode.OPERATION_TIMEOUT
    with pytest.raises(VirtbusError):
        await conn.domain_event_deregister_any(callback_id)


async def test_presence_events_reach_the_registry(fleet: Fleet, conn: Connection) -> None:
    async with conn.hosts(discover_s=0) as registry:
        agent = await fleet.start(heartbeat_s=HEARTBEAT_S)
        await registry.wait_for(lambda hosts: agent.host in hosts, timeout_s=10)
        await agent.stop()
        await registry.wait_for(lambda hosts: hosts[agent.host].state == "offline", timeout_s=10)
    assert registry.hosts[agent.host].heartbeat_s == HEARTBEAT_S
