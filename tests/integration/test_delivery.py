"""Delivery guarantees seen from the wire: ordering on one domain, command ids, dead
letters and deadlines (docs/delivery.md)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from tests.integration.conftest import Host, spec
from tests.support import DeadLetters

pytestmark = pytest.mark.integration

DOMAINS = 4
SEQUENTIAL = 300
PIPELINED = 201
BUDGET_S = 30.0


async def _running(host: Host, name: str) -> None:
    await host.ok("domain.define", args={"spec": spec(name)})
    await host.ok("domain.create", name)


async def test_strictly_sequential_suspend_resume_never_fails(host: Host) -> None:
    """Each command sent after the previous reply: libvirt's job lock never fails it, so
    neither may the agent (the reply comes at Docker's event, before Docker's call ends).
    Several domains at once, each strictly sequential, keep Docker busy enough for the
    race to show within the budget."""
    names = [f"seq-{n}" for n in range(DOMAINS)]
    for name in names:
        await _running(host, name)

    async def alternate(name: str) -> list[dict[str, object]]:
        failures = []
        for i in range(SEQUENTIAL):
            op = "domain.suspend" if i % 2 == 0 else "domain.resume"
            reply = await host.call(op, name)
            if not reply["ok"]:
                failures.append(reply)
        return failures

    started = time.monotonic()
    failures = await asyncio.wait_for(asyncio.gather(*map(alternate, names)), BUDGET_S)
    print(f"{DOMAINS} x {SEQUENTIAL} commands in {time.monotonic() - started:.1f} s")
    assert failures == [[] for _ in names]
    for name in names:
        assert (await host.ok("domain.get_state", name))["state"] == 1


async def test_pipelined_suspend_resume_all_succeed_in_order(host: Host) -> None:
    """A burst sent without waiting runs in arrival order, each after Docker finished the
    one before it."""
    await _running(host, "burst")
    futures = []
    for i in range(PIPELINED):
        op = "domain.suspend" if i % 2 == 0 else "domain.resume"
        command_id = uuid.uuid4().hex
        body = {"v": 1, "id": command_id, "op": op, "target": {"name": "burst"}}
        futures.append(
            await host.peer.send(host.name, json.dumps(body).encode(), message_id=command_id)
        )
    replies = await asyncio.wait_for(asyncio.gather(*futures), BUDGET_S)
    assert [r for r in replies if not r["ok"]] == []
    state = await host.ok("domain.get_state", "burst")
    assert state["state"] == 3


async def test_a_reused_command_id_is_refused_and_the_domain_keeps_running(host: Host) -> None:
    await _running(host, "kept")
    first = await host.peer.call(host.name, "host.ping", id="job-1")
    assert first["ok"]
    letters = await DeadLetters(host.peer.channel).start()
    reply = await host.peer.call(host.name, "domain.destroy", {"name": "kept"}, id="job-1")
    assert not reply["ok"]
    assert reply["error"]["code"] == "INVALID_ARG" and reply["error"]["vir_error"] == 8
    assert reply["error"]["message"] == (
        "invalid argument: command id 'job-1' was already used with op host.ping, "
        "not domain.destroy"
    )
    letter = await letters.next()
    assert letter.message_id == "job-1" and b"domain.destroy" in letter.body
    assert (await host.ok("domain.get_state", "kept"))["state"] == 1
    again = await host.peer.call(host.name, "host.ping", id="job-1")
    assert again == first
