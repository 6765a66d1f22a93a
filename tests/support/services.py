"""The real services the integration, security and fault suites use, and fresh names
on them."""

from __future__ import annotations

import asyncio
import os
import uuid

import aio_pika

from schemas.topology import host_queue

AMQP_URL = os.environ.get("VIRTBUS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
IMAGE = "virtbus-test:latest"


def new_host() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def drop_host_queue(host: str) -> None:
    """Delete a host's command queue, for a test that ran an agent outside the ``fleet``
    fixture (which deletes its hosts' queues): from synchronous code only."""

    async def drop() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await (await connection.channel()).queue_delete(host_queue(host))

    asyncio.run(drop())
