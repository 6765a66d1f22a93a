"""A full state disk seen from the wire: the agent's state directory is a small tmpfs,
filled to the last byte while commands run, then freed. Nothing is lost, answered twice
or made up: every command gets one reply, every effect its one event, ``seq`` has no
gap, and the agent's domains end as Docker has them (docs/delivery.md)."""

from __future__ import annotations

import asyncio
import errno
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from schemas.events import LifecycleEvent
from tests.integration.test_observability import eventually, health, metric, scrape
from tests.support import WAIT_S, BusPeer, EventRecorder
from tests.support.fleet import Fleet, Host, spec

pytestmark = pytest.mark.integration

DISK = "4m"
DOMAINS = 4
ROUNDS = 3
FULL_S = 3.0
"""How long the disk stays full once the agent has noticed (commands keep coming)."""


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/state`` (the fleet's state directory) on a tmpfs of its own."""
    mount = tmp_path / "state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def fleet(disk: Path, fleet: Fleet) -> Fleet:
    assert fleet.state_dir == disk
    return fleet


def fill(filler: Path) -> None:
    """Write ``filler`` until the disk has no byte left."""
    with filler.open("wb", buffering=0) as sink:
        try:
            while True:
                sink.write(b"\0" * 65536)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise


async def store_health(port: int, writable: bool) -> bool:
    status, checks = await health(port)
    return status == (200 if writable else 503) and checks["store"] is writable


async def test_a_full_state_disk_loses_nothing_and_the_agent_recovers_by_itself(
    fleet: Fleet, peer: BusPeer, disk: Path, docker: aiodocker.Docker, unused_tcp_port: int
) -> None:
    port = unused_tcp_port
    agent = await fleet.start(metrics_port=port)
    host = Host(
        agent.host, peer, await EventRecorder(peer.channel, f"{agent.host}.#").start(), agent
    )
    names = [f"disk-{n}" for n in range(DOMAINS)]
    for name in names:
        await host.ok("domain.define", args={"spec": spec(name)})
        await host.ok("domain.create", name)
    sent: list[tuple[str, str, str]] = []
    replies: list[asyncio.Future[dict[str, Any]]] = []
    ops = ["domain.suspend", "domain.resume"] * ROUNDS + ["domain.destroy", "domain.create"]
    for op in ops:
        for name in names:
            command_id = uuid.uuid4().hex
            sent.append((command_id, op, name))
            body = {"v": 1, "id": command_id, "op": op, "target": {"name": name}}
            replies.append(
                await host.peer.send(host.name, json.dumps(body).encode(), message_id=command_id)
            )
    filler = disk / "filler"
    try:
        await asyncio.to_thread(fill, filler)
        await eventually(lambda: store_health(port, False), WAIT_S)
        assert metric(await scrape(port), "virtbus_store_writable") == 0
        await asyncio.sleep(FULL_S)
    finally:
        filler.unlink(missing_ok=True)
    answered = await asyncio.wait_for(asyncio.gather(*replies), 3 * WAIT_S)
    await eventually(lambda: store_health(port, True), WAIT_S)

    assert [r["ok"] for r in answered] == [True] * len(sent), [r for r in answered if not r["ok"]]
    events = await host.fence()
    assert host.peer.extra_replies == []
    for command_id, _, _ in sent:
        assert len(host.peer._received[command_id]) == 1
    seqs = sorted({e.seq for e in host.events.domain_events()})
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    by_seq: dict[int, Any] = {}
    for event in host.events.domain_events():
        assert by_seq.setdefault(event.seq, event) == event

    expected = [("suspended", "paused"), ("resumed", "unpaused")] * ROUNDS + [
        ("stopped", "destroyed"),
        ("started", "booted"),
    ]
    for name in names:
        # an event published again (its confirmation was not written) is a redelivery
        mine = [
            e
            for e in events
            if isinstance(e, LifecycleEvent) and e.domain.name == name and by_seq[e.seq] is e
        ]
        history = "\n".join(f"{e.seq} {e.event}/{e.detail} {e.origin} {e.cause}" for e in mine)
        assert [(e.event, e.detail) for e in mine][2:] == expected, f"{name}:\n{history}"
        causes = {command_id for command_id, _, target in sent if target == name}
        for event in mine[2:]:
            assert event.cause in causes or event.origin == "reconcile", event

    after = await scrape(port)
    assert metric(after, "virtbus_store_write_failures_total") > 0
    assert metric(after, "virtbus_store_writable") == 1
    for name in names:
        state = await host.ok("domain.get_state", name)
        inspected = await (await docker.containers.get(host.container_name(name))).show()
        assert inspected["State"]["Status"] == "running"
        assert state["state"] == 1
