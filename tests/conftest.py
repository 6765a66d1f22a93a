"""Fixtures shared by the integration and fault suites: the real services.

Under CI (``CI=true``) a missing service fails the suite instead of skipping it.
"""

from __future__ import annotations

import asyncio

import aio_pika
import aiodocker
import pytest

from tests.environment import unavailable
from tests.support.services import AMQP_URL, IMAGE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The container image's tests run last: scripts/test.sh makes the image's base in
    the background meanwhile (its download overlaps the rest of the suite)."""
    items.sort(key=lambda item: item.get_closest_marker("image") is not None)


async def _probe() -> tuple[str | None, str | None]:
    broker = docker = None
    try:
        connection = await asyncio.wait_for(aio_pika.connect(AMQP_URL), 10)
        await connection.close()
    except Exception as error:
        broker = f"RabbitMQ at {AMQP_URL} ({error!r})"
    client = aiodocker.Docker()
    try:
        await asyncio.wait_for(client.images.inspect(IMAGE), 10)
    except Exception as error:
        docker = f"dockerd with image {IMAGE} ({error!r})"
    finally:
        await client.close()
    return broker, docker


@pytest.fixture(scope="session")
def services() -> None:
    broker, docker = asyncio.run(_probe())
    for missing in (broker, docker):
        if missing:
            unavailable(missing)
