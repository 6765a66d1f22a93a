"""B8's floor, ``bench.echo.BareHost``, stands where an agent would: it answers the
client library's broadcast from a queue declared exactly as the agent's."""

from __future__ import annotations

import aio_pika
import pytest

from agent.client import Connection
from agent.host.bus import Declarer
from bench.echo import BareHost
from schemas.topology import command_queue
from tests.support.fleet import Fleet
from tests.support.services import AMQP_URL, new_host

pytestmark = pytest.mark.integration

WAIT_S = 15.0


async def test_a_bare_host_answers_a_broadcast_from_the_queue_its_agent_would_have(
    fleet: Fleet,
) -> None:
    host, group = new_host(), new_host()
    bare = BareHost(AMQP_URL, host, group, "quorum")
    fleet.hosts.add(host)
    await bare.start()
    try:
        async with Connection(AMQP_URL) as conn:
            gathered = await conn.broadcast(
                "host.ping", group=group, expect=[host], timeout_s=WAIT_S
            )
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            # a declaration with other arguments than the queue's closes the channel
            await Declarer(await connection.channel()).queue(command_queue(host, "quorum"))
    finally:
        await bare.stop()
    assert gathered.succeeded == {host}
    assert gathered.replies[host].ok
