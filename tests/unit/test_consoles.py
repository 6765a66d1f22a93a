"""The agent's console sessions (agent/host/console.py): one per domain, taken over
with force, ended by the domain's terminal, the peer, or the agent."""

from __future__ import annotations

import asyncio
import uuid
from typing import cast

import pytest
from aio_pika.abc import AbstractChannel

from agent.errors import VirtError
from agent.host.console import Consoles
from agent.streams import BusStream, StreamError
from schemas.codes import ErrorCode
from tests.fakes import FakeTerminal
from tests.unit.test_streams import WAIT_S, FakeBroker

DOMAIN = uuid.UUID(int=1)


async def setup() -> tuple[Consoles, FakeBroker, BusStream]:
    broker = FakeBroker()
    channel = cast(AbstractChannel, broker)

    async def open_stream(session: str) -> BusStream:
        return await BusStream.open(channel, session)

    peer = await BusStream.open(channel, "pending")
    return Consoles(open_stream), broker, peer


async def test_keys_reach_the_terminal_and_its_output_comes_back() -> None:
    consoles, _, peer = await setup()
    terminal = FakeTerminal()
    agent_end = await consoles.open(DOMAIN, terminal, peer.queue, force=False)
    peer.session = agent_end.session
    peer.connect(agent_end.queue)
    await peer.send(b"echo me")
    assert await asyncio.wait_for(peer.recv(), WAIT_S) == b"echo me"
    terminal.hang_up()  # the domain stopped
    assert await asyncio.wait_for(peer.recv(), WAIT_S) is None
    await consoles.wait(lambda n: n == 0, WAIT_S)
    assert terminal.closed


async def test_one_session_per_domain_unless_forced() -> None:
    consoles, _, peer = await setup()
    first = await consoles.open(DOMAIN, FakeTerminal(), peer.queue, force=False)
    peer.session = first.session
    peer.connect(first.queue)
    with pytest.raises(VirtError) as refused:
        await consoles.open(DOMAIN, FakeTerminal(), peer.queue, force=False)
    assert refused.value.code is ErrorCode.OPERATION_INVALID
    await consoles.open(DOMAIN, FakeTerminal(), "elsewhere", force=True)
    with pytest.raises(StreamError) as taken:
        await asyncio.wait_for(peer.recv(), WAIT_S)
    assert taken.value.code is ErrorCode.OPERATION_ABORTED
    assert len(consoles) == 1


async def test_the_peer_finishing_or_the_agent_stopping_ends_sessions() -> None:
    consoles, broker, peer = await setup()
    terminal = FakeTerminal()
    agent_end = await consoles.open(DOMAIN, terminal, peer.queue, force=False)
    peer.session = agent_end.session
    peer.connect(agent_end.queue)
    await peer.finish()
    await consoles.wait(lambda n: n == 0, WAIT_S)
    assert terminal.closed
    assert agent_end.queue not in broker.queues

    other = await consoles.open(DOMAIN, FakeTerminal(), peer.queue, force=False)
    peer.session = other.session
    await consoles.close()
    assert len(consoles) == 0
    with pytest.raises(StreamError) as stopped:
        await asyncio.wait_for(peer.recv(), WAIT_S)
    assert "the host agent stopped" in str(stopped.value)
