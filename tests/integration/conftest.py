"""Fixtures for the integration suite: a real RabbitMQ, a real dockerd, real agents.

Under CI (``CI=true``) a missing service fails the suite instead of skipping it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiodocker
import pytest

from agent.host.driver import HOST_LABEL
from schemas.topology import host_queue
from tests.support import BusPeer, EventRecorder
from tests.support.fleet import CLI, Fleet, Host
from tests.support.services import AMQP_URL


@pytest.fixture
async def fleet(services: None, tmp_path: Path) -> AsyncIterator[Fleet]:
    fleet = Fleet(tmp_path / "state")
    yield fleet
    for agent in fleet.agents:
        if agent.ready.is_set():
            await agent.stop()
    client = aiodocker.Docker()
    try:
        for host in fleet.hosts:
            filters = json.dumps({"label": [f"{HOST_LABEL}={host}"]})
            for container in await client.containers.list(all=True, filters=filters):
                await container.delete(force=True)
            for network in await client.networks.list(filters={"label": [f"{HOST_LABEL}={host}"]}):
                await client._query_json(f"networks/{network['Id']}", method="DELETE")
            # what a failed test left: its volumes and snapshot images
            volumes = await client._query_json("volumes", params={"filters": filters})
            for volume in volumes["Volumes"] or []:
                await client._query_json(f"volumes/{volume['Name']}", method="DELETE")
            for image in await client.images.list(filters={"label": [f"{HOST_LABEL}={host}"]}):
                await client.images.delete(image["Id"], force=True)
    finally:
        await client.close()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for host in fleet.hosts:
            await channel.queue_delete(host_queue(host))


@pytest.fixture
async def peer(services: None) -> AsyncIterator[BusPeer]:
    async with BusPeer(AMQP_URL) as bus_peer:
        yield bus_peer


@pytest.fixture
async def docker(services: None) -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker()
    yield client
    await client.close()


@pytest.fixture
async def host(fleet: Fleet, peer: BusPeer) -> Host:
    agent = await fleet.start()
    recorder = await EventRecorder(peer.channel, f"{agent.host}.#").start()
    return Host(agent.host, peer, recorder, agent)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    """The ``virtbus`` command, with a known-hosts file of its own."""
    return CLI(tmp_path)
