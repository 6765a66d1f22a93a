"""The Docker driver against the real engine and kernel."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from agent.errors import VirtError
from agent.host.credentials import RegistryCredentials
from agent.host.domains import DomainTable
from agent.host.driver import DockerDriver, _frozen
from agent.host.monitor import Monitor
from agent.host.operations import Operations
from agent.host.store import Store
from schemas.codes import Lifecycle
from schemas.commands import COMMAND_ADAPTER
from schemas.domain import DomainSpec
from schemas.events import EVENT_ADAPTER, LifecycleEvent
from tests.support.fleet import Host, spec
from tests.support.services import new_host

pytestmark = pytest.mark.integration


async def test_the_freezer_tells_a_paused_domain(host: Host, docker: aiodocker.Docker) -> None:
    await host.ok("domain.define", args={"spec": spec("frz")})
    await host.ok("domain.create", "frz")
    container = await docker.containers.get(host.container_name("frz"))
    handle, pid = container.id, int(container["State"]["Pid"])
    assert _frozen(handle, pid) is False
    await container.pause()
    await host.events.wait_for(lambda e: isinstance(e, LifecycleEvent) and e.event == "suspended")
    assert _frozen(handle, pid) is True
    await container.unpause()
    await host.events.wait_for(lambda e: isinstance(e, LifecycleEvent) and e.event == "resumed")
    assert _frozen(handle, pid) is False


TOGGLING_DOMAINS = 8
TOGGLING_S = 20.0


@pytest.fixture
async def driver(docker: aiodocker.Docker) -> AsyncIterator[DockerDriver]:
    driver = DockerDriver(new_host(), pids_limit=64)
    try:
        yield driver
    finally:
        for observed in await driver.observe_all():
            await driver.remove(observed.handle)
        await driver.close()


async def test_strictly_sequential_pauses_and_unpauses_never_fail(driver: DockerDriver) -> None:
    """Each call made after the previous one answered. Docker 20.10 applies containerd's
    report of a pause to its own record late, so that a next call can meet a record one
    step behind ("already paused", "not paused"): several domains at once make it show
    within seconds, and the driver must not fail for it."""
    handles = []
    for n in range(TOGGLING_DOMAINS):
        domain = DomainSpec.model_validate(spec(f"toggle-{n}"))
        handle = await driver.create(domain.name, uuid.uuid4(), domain)
        await driver.start(handle)
        handles.append(handle)
    deadline = time.monotonic() + TOGGLING_S

    async def toggle(handle: str) -> list[str]:
        failures, paused = [], False
        while time.monotonic() < deadline:
            try:
                await (driver.unpause(handle) if paused else driver.pause(handle))
            except VirtError as error:
                failures.append(error.message)
            paused = not paused
        if paused:
            await driver.unpause(handle)
        return failures

    failures = await asyncio.wait_for(asyncio.gather(*map(toggle, handles)), 2 * TOGGLING_S)
    assert failures == [[] for _ in handles]


async def test_strictly_sequential_suspends_and_resumes_never_fail_nor_stray(
    driver: DockerDriver, tmp_path: Path
) -> None:
    """The same through the operations and the monitor (the bus left out, to go as fast
    as Docker): every command succeeds, and each domain's events are exactly its
    commands' effects, each credited to its command; no stale copy of a pause or
    unpause Docker reports again answers a command or becomes an event."""
    with Store(tmp_path) as store:
        domains = DomainTable()
        monitor = Monitor(driver.host, domains, store, driver, lambda: None)
        watching = asyncio.create_task(monitor.run())
        try:
            await asyncio.wait_for(monitor.connected.wait(), 10)
            operations = Operations(
                driver.host,
                [],
                domains,
                driver,
                monitor,
                RegistryCredentials(tmp_path / "registries.json"),
                await driver.engine(),
            )
            ids = iter(range(1_000_000))

            async def run(op: str, name: str, args: dict[str, Any] | None = None) -> str:
                document: dict[str, Any] = {"op": op, "id": f"{op}-{next(ids)}", "args": args or {}}
                if op != "domain.define":
                    document["target"] = {"name": name}
                await operations.run(COMMAND_ADAPTER.validate_python(document))
                return str(document["id"])

            names = [f"toggle-{n}" for n in range(TOGGLING_DOMAINS)]
            for name in names:
                await run("domain.define", name, {"spec": spec(name)})
                await run("domain.create", name)
            deadline = time.monotonic() + TOGGLING_S

            async def alternate(name: str) -> tuple[list[str], list[str]]:
                sent: list[str] = []
                failures: list[str] = []
                while time.monotonic() < deadline or len(sent) % 2:
                    op = "domain.resume" if len(sent) % 2 else "domain.suspend"
                    try:
                        sent.append(await run(op, name))
                    except VirtError as error:
                        failures.append(error.message)
                        break
                return sent, failures

            results = await asyncio.wait_for(asyncio.gather(*map(alternate, names)), 2 * TOGGLING_S)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        events = [
            event
            for event in (EVENT_ADAPTER.validate_json(p.body) for p in store.pending(100_000))
            if isinstance(event, LifecycleEvent)
        ]
    assert [failures for _, failures in results] == [[] for _ in names]
    for name, (sent, _) in zip(names, results, strict=True):
        toggles = [
            (e.lifecycle, e.cause)
            for e in events
            if e.domain.name == name
            and e.lifecycle in (Lifecycle.SUSPENDED_PAUSED, Lifecycle.RESUMED_UNPAUSED)
        ]
        expected = [
            (Lifecycle.SUSPENDED_PAUSED if n % 2 == 0 else Lifecycle.RESUMED_UNPAUSED, cause)
            for n, cause in enumerate(sent)
        ]
        assert toggles == expected
