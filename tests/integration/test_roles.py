"""Who may do what on the broker: real RabbitMQ users made by ``virtbus provision``, each
tried for what its role allows and for what it does not."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.exceptions import ChannelAccessRefused
from yarl import URL

from agent.admin.provision import (
    Grant,
    Management,
    ProvisionError,
    agent_grant,
    new_password,
    orchestrator_grant,
    subscriber_grant,
)
from agent.client import connect
from agent.host.agent import Agent
from agent.host.config import Config
from schemas.events import LifecycleEvent
from schemas.topology import (
    BROADCAST_EXCHANGE,
    COMMANDS_EXCHANGE,
    DEAD_EXCHANGE,
    EVENTS_EXCHANGE,
    group_key,
    host_queue,
)
from tests.environment import unavailable
from tests.support import EventRecorder
from tests.support.fleet import CLI, Fleet, spec
from tests.support.services import AMQP_URL, new_host

pytestmark = pytest.mark.integration

MANAGEMENT_URL = os.environ.get(
    "VIRTBUS_TEST_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/"
)
WAIT_S = 30.0


@dataclass
class Users:
    """Broker users made for a test; deleted after it."""

    api: Management
    names: list[str] = field(default_factory=list)

    async def add(self, grant: Grant) -> str:
        """A new user with ``grant``; returns its AMQP URL."""
        name = f"vbtest-{uuid.uuid4().hex[:10]}"
        password = new_password()
        self.names.append(name)
        await self.api.provision(name, password, grant)
        return str(URL(AMQP_URL).with_user(name).with_password(password.get_secret_value()))


@pytest.fixture
async def users(services: None) -> AsyncIterator[Users]:
    async with Management(MANAGEMENT_URL) as api:
        try:
            await api.remove(f"vbtest-probe-{uuid.uuid4().hex[:6]}")
        except ProvisionError as error:
            unavailable(f"RabbitMQ's management API ({error})")
        made = Users(api)
        yield made
        for name in made.names:
            await api.remove(name)


async def _login(url: str) -> AbstractRobustConnection:
    return await asyncio.wait_for(aio_pika.connect_robust(url), WAIT_S)


async def _refused(channel: AbstractChannel, exchange: str, routing_key: str) -> None:
    """Publishing (with confirms) must close the channel with ACCESS_REFUSED."""
    target = await channel.get_exchange(exchange, ensure=False)
    with pytest.raises(ChannelAccessRefused):
        await asyncio.wait_for(
            target.publish(aio_pika.Message(b'{"v":1}'), routing_key=routing_key), WAIT_S
        )


async def test_subscriber_reads_events_and_cannot_publish_a_command(users: Users) -> None:
    url = await users.add(subscriber_grant())
    async with await _login(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(await channel.get_exchange(EVENTS_EXCHANGE, ensure=False), "#")
        probe_key = f"{new_host()}.agent.heartbeat"
        async with await aio_pika.connect(AMQP_URL) as publisher:
            events = await (await publisher.channel()).get_exchange(EVENTS_EXCHANGE)
            await events.publish(aio_pika.Message(b'{"probe": 1}'), routing_key=probe_key)
        async with queue.iterator(timeout=WAIT_S) as arrived:
            # other agents on the broker publish too: read until the probe comes
            async for message in arrived:
                await message.ack()
                if message.routing_key == probe_key:
                    break
        assert (message.routing_key, message.body) == (probe_key, b'{"probe": 1}')
        for exchange, key in (
            (COMMANDS_EXCHANGE, "h1"),
            (BROADCAST_EXCHANGE, "all"),
            (EVENTS_EXCHANGE, "h1.agent.online"),
            ("", "virtbus.host.h1"),
        ):
            await _refused(await connection.channel(publisher_confirms=True), exchange, key)


async def test_subscriber_of_some_hosts_cannot_follow_others(users: Users) -> None:
    url = await users.add(subscriber_grant(["h1"]))
    async with await _login(url) as connection:
        channel = await connection.channel()
        events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(events, "h1.#")
        with pytest.raises(ChannelAccessRefused):
            await queue.bind(events, "#")


async def _agent_user(
    users: Users, fleet: Fleet, host: str, groups: list[str], agent_declares: bool
) -> str:
    """An agent user as ``virtbus provision agent`` makes it; the host's queue is removed
    with the fleet."""
    url = await users.add(agent_grant(host, groups, agent_declares))
    fleet.hosts.add(host)
    if not agent_declares:
        await users.api.declare_topology()
        await users.api.declare_host_queue(host, groups, "classic")
    return url


@pytest.mark.parametrize("agent_declares", [False, True], ids=["provisioned", "declares"])
async def test_agent_cannot_touch_another_hosts_queue_or_speak_for_it(
    users: Users, fleet: Fleet, agent_declares: bool
) -> None:
    other = await fleet.start(queue_type="classic")
    url = await _agent_user(users, fleet, new_host(), [new_group()], agent_declares)
    async with await _login(url) as connection:
        for attempt in ("consume", "get", "bind", "purge", "delete"):
            channel = await connection.channel()
            queue = await channel.get_queue(host_queue(other.host), ensure=False)
            with pytest.raises(ChannelAccessRefused):
                await _touch(queue, attempt)
        for exchange, key in (
            (EVENTS_EXCHANGE, f"{other.host}.lifecycle.stopped.destroyed"),
            (COMMANDS_EXCHANGE, other.host),
            (BROADCAST_EXCHANGE, "all"),
        ):
            await _refused(await connection.channel(publisher_confirms=True), exchange, key)


async def test_agent_on_a_provisioned_topology_can_change_nothing(
    users: Users, fleet: Fleet
) -> None:
    host = new_host()
    url = await _agent_user(users, fleet, host, [new_group()], agent_declares=False)
    async with await _login(url) as connection:
        channel = await connection.channel()
        own = await channel.get_queue(host_queue(host))
        assert await own.get(fail=False) is None
        for exchange, key in ((COMMANDS_EXCHANGE, "another-host"), (BROADCAST_EXCHANGE, "all")):
            channel = await connection.channel()
            own = await channel.get_queue(host_queue(host), ensure=False)
            with pytest.raises(ChannelAccessRefused):
                await own.bind(exchange, key)
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused):
            await channel.exchange_delete(COMMANDS_EXCHANGE)
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused):
            await channel.declare_queue(host_queue(host), durable=True)


async def test_agent_that_declares_joins_only_its_own_groups(users: Users, fleet: Fleet) -> None:
    host = new_host()
    blue, red = new_group(), new_group()
    url = await _agent_user(users, fleet, host, [blue], agent_declares=True)
    async with await _login(url) as connection:
        channel = await connection.channel()
        own = await channel.declare_queue(
            host_queue(host),
            durable=True,
            arguments={"x-queue-type": "classic", "x-dead-letter-exchange": DEAD_EXCHANGE},
        )
        broadcast = await channel.get_exchange(BROADCAST_EXCHANGE, ensure=False)
        await own.bind(broadcast, group_key(blue))
        with pytest.raises(ChannelAccessRefused):
            await own.bind(broadcast, group_key(red))


@pytest.mark.parametrize("agent_declares", [False, True], ids=["provisioned", "declares"])
async def test_provisioned_agent_serves_an_orchestrator_and_a_subscriber(
    users: Users, fleet: Fleet, tmp_path: Path, agent_declares: bool
) -> None:
    host = new_host()
    blue = new_group()
    agent_url = await _agent_user(users, fleet, host, [blue], agent_declares)
    orchestrator_url = await users.add(orchestrator_grant())
    subscriber_url = await users.add(subscriber_grant([host]))
    agent = Agent(
        Config(
            host=host,
            amqp_url=agent_url,
            groups=[blue],
            state_dir=tmp_path / "state",
            queue_type="classic",
            declare_topology=agent_declares,
            drain_s=15,
        )
    )
    await asyncio.wait_for(agent.start(), WAIT_S)
    fleet.agents.append(agent)
    async with await _login(subscriber_url) as watching:
        events = await EventRecorder(await watching.channel(), f"{host}.#").start()
        async with connect(orchestrator_url, timeout_s=WAIT_S) as conn:
            assert (await conn.ping(host)).host == host
            domain = await conn.create_xml(host, spec("roles"))
            await domain.destroy()
            gathered = await conn.broadcast(
                "host.ping", group=blue, expect={host}, timeout_s=WAIT_S
            )
            assert set(gathered.replies) == {host}
            assert not gathered.failed
        stopped = await events.wait_for(
            lambda e: isinstance(e, LifecycleEvent) and e.event == "stopped"
        )
        assert isinstance(stopped, LifecycleEvent)
        assert stopped.domain.name == "roles"


async def test_provision_command_prints_a_working_password_once(cli: CLI, users: Users) -> None:
    name = f"vbtest-{uuid.uuid4().hex[:10]}"
    users.names.append(name)
    env = {**cli.env, "VIRTBUS_MANAGEMENT_URL": MANAGEMENT_URL}
    cli.env = env
    made = await cli("provision", "subscriber", name)
    assert made.status == 0, made.err
    password = made.out.strip()
    assert len(password) >= 24
    assert password not in made.err
    assert f"user '{name}' is now a subscriber" in made.err
    url = str(URL(AMQP_URL).with_user(name).with_password(password))
    async with await _login(url) as connection:
        await _refused(await connection.channel(publisher_confirms=True), COMMANDS_EXCHANGE, "h1")
    cli.env = {**env, "VBTEST_PASSWORD": "chosen-Pw-1"}
    reset = await cli("provision", "orchestrator", name, "--password-env", "VBTEST_PASSWORD")
    assert reset.status == 0, reset.err
    assert reset.out == ""
    chosen = str(URL(AMQP_URL).with_user(name).with_password("chosen-Pw-1"))
    async with await _login(chosen) as connection:
        await _refused(await connection.channel(publisher_confirms=True), EVENTS_EXCHANGE, "h1.x")
    removed = await cli("provision", "remove", name)
    assert removed.status == 0, removed.err
    gone = await cli("provision", "remove", name)
    assert (gone.status, gone.err) == (1, f"error: no user '{name}'\n")


async def _ignore(message: AbstractIncomingMessage) -> None:
    return None


async def _touch(queue: AbstractQueue, how: str) -> object:
    if how == "consume":
        return await queue.consume(_ignore)
    if how == "get":
        return await queue.get(fail=False)
    if how == "bind":
        return await queue.bind(COMMANDS_EXCHANGE, "any")
    if how == "purge":
        return await queue.purge()
    return await queue.delete(if_unused=False, if_empty=False)


async def test_provision_agent_declares_its_queue_with_exactly_its_groups(
    cli: CLI, users: Users, fleet: Fleet
) -> None:
    host = new_host()
    user = f"vbtest-{uuid.uuid4().hex[:10]}"
    users.names.append(user)
    fleet.hosts.add(host)
    cli.env = {**cli.env, "VIRTBUS_MANAGEMENT_URL": MANAGEMENT_URL}
    argv = ("provision", "agent", host, "--user", user, "--queue-type", "classic")
    blue, red = new_group(), new_group()
    made = await cli(*argv, "--group", blue)
    assert made.status == 0, made.err
    assert "run the agent with --no-declare-topology" in made.err
    assert await _bindings(host) == {
        (COMMANDS_EXCHANGE, host),
        (BROADCAST_EXCHANGE, "all"),
        (BROADCAST_EXCHANGE, group_key(blue)),
    }
    again = await cli(*argv, "--group", red)
    assert again.status == 0, again.err
    assert await _bindings(host) == {
        (COMMANDS_EXCHANGE, host),
        (BROADCAST_EXCHANGE, "all"),
        (BROADCAST_EXCHANGE, group_key(red)),
    }


def new_group() -> str:
    """A group no other test or agent on the shared broker is in."""
    return f"g{uuid.uuid4().hex[:12]}"


async def _bindings(host: str) -> set[tuple[str, str]]:
    """The host queue's bindings as the management API lists them (publishing to
    ``all`` to find out would reach every agent on the shared broker)."""
    api = URL(MANAGEMENT_URL)
    url = (
        api.with_user(None)
        .with_password(None)
        .with_path(f"/api/queues/%2F/{host_queue(host)}/bindings", encoded=True)
    )
    auth = aiohttp.encode_basic_auth(api.user or "", api.password or "")
    async with (
        aiohttp.ClientSession(headers={"Authorization": auth}) as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=WAIT_S)) as response,
    ):
        assert response.status == 200, await response.text()
        listed = await response.json()
    return {(b["source"], b["routing_key"]) for b in listed if b["source"]}
