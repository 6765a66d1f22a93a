"""Crash restarts done by the agent (agent/host/restarts.py) over a fake engine: the
domain stays active through a crash and comes back with a reboot event; a destroy or
shutdown cancels a restart that waits and the domain stays down; a restart the policy
refuses ends in the crash's stopped event; the back-off doubles up to its ceiling."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from agent.host.domains import DomainObj
from agent.host.operations import Operations
from agent.host.policy import MountRule, Policy
from agent.host.restarts import Restarts
from agent.host.store import Store
from schemas.codes import DomainState, ShutoffReason
from schemas.commands import parse_command
from schemas.domain import DomainRecord
from schemas.events import EVENT_ADAPTER, DomainEventBase, LifecycleEvent, RebootEvent
from tests.fakes import FakeHost, fake_host

WAIT_S = 5.0


@dataclass
class Rig:
    host: FakeHost
    operations: Operations
    restarts: Restarts
    allowed: Path
    count: int = 0

    async def run(self, op: str, name: str | None = None, **args: Any) -> DomainRecord:
        self.count += 1
        document: dict[str, Any] = {"id": f"cmd-{self.count}", "op": op}
        if name is not None:
            document["target"] = {"name": name}
        if args:
            document["args"] = args
        result = await self.operations.run(parse_command(json.dumps(document).encode()))
        assert isinstance(result, DomainRecord)
        return result

    def events(self) -> list[DomainEventBase]:
        parsed = [EVENT_ADAPTER.validate_json(p.body) for p in self.host.store.pending(10_000)]
        return [e for e in parsed if isinstance(e, DomainEventBase)]

    def lifecycle(self) -> list[tuple[str, str]]:
        return [(e.event, e.detail) for e in self.events() if isinstance(e, LifecycleEvent)]

    def domain(self, name: str) -> DomainObj:
        domain = self.host.domains.by_name(name)
        assert domain is not None and domain.handle is not None
        return domain

    async def crash(self, name: str, exit_code: int = 1) -> None:
        """The domain's process exits by itself; returns once the agent has seen it."""
        domain = self.domain(name)
        assert domain.handle is not None
        self.host.driver.exit(domain.handle, exit_code)
        for _ in range(1000):
            if self.restarts.pending(domain.uuid) or not domain.active:
                return
            await asyncio.sleep(0)
        raise AssertionError("the crash was not seen")

    async def restarted(self, name: str) -> None:
        """Wait for the restart in progress or waiting to end."""
        await asyncio.wait_for(self.restarts.now(self.domain(name).uuid), WAIT_S)


RigFactory = Callable[[float], Rig]
"""A rig whose first restart waits the given back-off."""


@pytest.fixture
async def rigs(tmp_path: Path) -> AsyncIterator[RigFactory]:
    allowed = tmp_path / "allowed"
    (allowed / "x").mkdir(parents=True)
    with Store(tmp_path / "h1") as store:
        async with fake_host(store, tmp_path) as host:

            def rig(first_delay_s: float) -> Rig:
                restarts = Restarts(first_delay_s=first_delay_s, max_delay_s=60.0)
                host.monitor.restarts = restarts
                policy = Policy(mounts=[MountRule(prefix=str(allowed))])
                return Rig(host, host.operations(policy=policy), restarts, allowed)

            yield rig
            await host.monitor.restarts.close()


def looping(name: str = "loop", **fields: Any) -> dict[str, Any]:
    spec = {"name": name, "image": "virtbus-test:latest", "on_crash": "restart", **fields}
    return {"spec": spec}


async def test_a_crashed_domain_stays_active_and_comes_back_with_a_reboot(rigs: RigFactory) -> None:
    rig = rigs(0.0)
    await rig.run("domain.create_xml", **looping())
    first = rig.domain("loop").pid
    await rig.crash("loop")
    assert rig.domain("loop").active
    await rig.restarted("loop")
    domain = rig.domain("loop")
    assert (domain.state, domain.active) == (DomainState.RUNNING, True)
    assert domain.pid not in (0, first)
    assert rig.lifecycle() == [("started", "booted")]
    reboot = rig.events()[-1]
    assert isinstance(reboot, RebootEvent)
    assert (reboot.origin, reboot.cause) == ("agent", f"restart-{domain.uuid}")
    assert rig.host.driver.calls.count("start") == 2


async def test_a_domain_without_on_crash_restart_stops(rigs: RigFactory) -> None:
    rig = rigs(0.0)
    await rig.run("domain.create_xml", **looping(on_crash="destroy"))
    await rig.crash("loop")
    assert rig.lifecycle() == [("started", "booted"), ("stopped", "failed")]
    assert rig.host.driver.calls.count("start") == 1


@pytest.mark.parametrize(
    ("op", "detail"), [("domain.destroy", "destroyed"), ("domain.shutdown", "shutdown")]
)
async def test_a_restart_that_waits_is_cancelled_and_the_domain_stays_down(
    rigs: RigFactory, op: str, detail: str
) -> None:
    rig = rigs(60.0)
    await rig.run("domain.define", **looping())
    await rig.run("domain.create", "loop")
    await rig.crash("loop")
    record = await rig.run(op, "loop")
    assert record.state == DomainState.SHUTOFF
    assert not rig.restarts.pending(rig.domain("loop").uuid)
    assert rig.lifecycle() == [("defined", "added"), ("started", "booted"), ("stopped", detail)]
    stopped = rig.events()[-1]
    assert (stopped.origin, stopped.cause) == ("agent", f"cmd-{rig.count}")
    assert rig.host.driver.calls.count("start") == 1
    assert "kill" not in rig.host.driver.calls and "stop" not in rig.host.driver.calls


async def test_a_crash_while_a_destroy_runs_is_not_restarted(rigs: RigFactory) -> None:
    rig = rigs(0.0)
    await rig.run("domain.create_xml", **looping())
    domain = rig.domain("loop")
    assert domain.handle is not None
    gate = rig.host.driver.gates["kill"] = asyncio.Event()
    destroying = asyncio.ensure_future(rig.run("domain.destroy", "loop"))
    await rig.host.driver.wait_calls("kill", 1)
    rig.host.driver.exit(domain.handle, 1)
    gate.set()
    await asyncio.wait_for(destroying, WAIT_S)
    assert rig.lifecycle() == [("started", "booted"), ("stopped", "destroyed")]
    assert not rig.restarts.pending(domain.uuid)
    assert rig.host.driver.calls.count("start") == 1


async def test_a_restart_the_policy_refuses_ends_in_the_crash_stop(rigs: RigFactory) -> None:
    rig = rigs(0.0)
    source = rig.allowed / "x"
    mount = {"source": str(source), "target": "/x", "readonly": True}
    await rig.run("domain.define", **looping(mounts=[mount]))
    await rig.run("domain.create", "loop")
    source.rename(rig.allowed / "x.old")
    source.symlink_to(rig.allowed.parent)
    await rig.crash("loop", exit_code=3)
    await rig.restarted("loop")
    domain = rig.domain("loop")
    assert (domain.state, domain.reason) == (DomainState.SHUTOFF, ShutoffReason.FAILED)
    assert rig.lifecycle() == [("defined", "added"), ("started", "booted"), ("stopped", "failed")]
    stopped = rig.events()[-1]
    assert isinstance(stopped, LifecycleEvent)
    assert (stopped.origin, stopped.exit_code) == ("agent", 3)
    assert rig.host.driver.calls.count("start") == 1


async def test_a_reboot_while_a_restart_waits_restarts_at_once(rigs: RigFactory) -> None:
    rig = rigs(60.0)
    await rig.run("domain.create_xml", **looping())
    await rig.crash("loop")
    await asyncio.wait_for(rig.run("domain.reboot", "loop"), WAIT_S)
    assert rig.domain("loop").state is DomainState.RUNNING
    kinds = [type(e).__name__ for e in rig.events()]
    assert kinds == ["LifecycleEvent", "RebootEvent", "RebootEvent"]


def test_the_back_off_doubles_to_its_ceiling_and_resets_after_a_long_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    restarts, uuid = Restarts(first_delay_s=1.0, max_delay_s=4.0, reset_after_s=10.0), uuid4()
    now = 100.0
    monkeypatch.setattr("agent.host.restarts.time.monotonic", lambda: now)
    delays = []
    for _ in range(4):
        delay = restarts._next_delay(uuid)
        restarts._delays[uuid] = (delay, now)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 4.0]
    now += 10.0
    assert restarts._next_delay(uuid) == 1.0
