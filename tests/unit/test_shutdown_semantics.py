"""``escalate: false``: libvirt's shutdown and reboot, delivered and never a kill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.host.store import Store
from schemas.commands import Create, Define, Destroy, Reboot, Shutdown
from schemas.events import EVENT_ADAPTER, DomainEvent, LifecycleEvent, RebootEvent
from tests.fakes import fake_host
from tests.unit.test_operations import SPEC, WAIT_S, Rig, command


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    queued = asyncio.Event()
    with Store(tmp_path / "h1") as store:
        async with fake_host(store, tmp_path, queued.set) as host:
            rig = Rig(host, host.operations())
            rig.queued = queued  # type: ignore[attr-defined]
            await rig.run(command(Define, spec=SPEC))
            await rig.run(command(Create, "web"))
            yield rig


def events(rig: Rig) -> list[str]:
    seen = [EVENT_ADAPTER.validate_json(p.body) for p in rig.host.store.pending(1000)]
    return [name(e) for e in seen if isinstance(e, LifecycleEvent | RebootEvent)]


def name(event: DomainEvent) -> str:
    if isinstance(event, LifecycleEvent):
        return f"{event.event}/{event.detail}"
    return event.kind


async def until(rig: Rig, done: Callable[[], bool]) -> None:
    """Until ``done()``, checked each time the monitor queued events (it applies
    Docker's events in the background)."""
    queued: asyncio.Event = rig.queued  # type: ignore[attr-defined]
    async with asyncio.timeout(WAIT_S):
        while not done():
            queued.clear()
            await queued.wait()


async def test_a_shutdown_without_escalation_is_a_signal_answered_at_once(rig: Rig) -> None:
    handle = rig.host.domains.by_name("web").handle  # type: ignore[union-attr]
    assert handle is not None
    rig.host.driver.deaf.add(handle)
    calls = len(rig.host.driver.calls)
    record = await rig.run(command(Shutdown, "web", escalate=False))
    assert record.state == 1  # still running: the request is delivered, nothing more
    assert rig.host.driver.calls[calls:] == ["signal"]
    assert "stop" not in rig.host.driver.calls and "kill" not in rig.host.driver.calls


async def test_a_reboot_without_escalation_starts_the_domain_once_it_stopped(rig: Rig) -> None:
    calls = len(rig.host.driver.calls)
    await rig.run(command(Reboot, "web", escalate=False))
    await until(rig, lambda: "reboot" in events(rig))
    assert events(rig) == ["defined/added", "started/booted", "reboot"]
    assert rig.host.driver.calls[calls:] == ["signal", "wait_stopped", "start"]


async def test_a_destroy_cancels_a_reboot_that_waits_for_the_domain(rig: Rig) -> None:
    handle = rig.host.domains.by_name("web").handle  # type: ignore[union-attr]
    assert handle is not None
    rig.host.driver.deaf.add(handle)
    rig.host.driver.gates["wait_stopped"] = asyncio.Event()  # the domain ignores SIGTERM
    await rig.run(command(Reboot, "web", escalate=False))
    await rig.run(command(Destroy, "web"))
    assert events(rig) == ["defined/added", "started/booted", "stopped/destroyed"]
    assert rig.host.driver.calls.count("start") == 1
