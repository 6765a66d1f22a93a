"""``virtbus dashboard`` in headless Chromium, against real agents, a real broker and
Docker: the page lists the hosts and follows a domain's start through the pushed event;
a broadcast names the host that did not answer; a read-only user gets no buttons and its
forged POST is refused; the feed survives a broker restart (on a private node)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By

from agent.client import Connection, VirtbusError, connect
from agent.host.agent import Agent
from agent.host.config import Config
from schemas.events import AgentEvent
from schemas.topology import EVENTS_EXCHANGE
from tests.faults.cluster import Node, rabbitmqctl
from tests.support.browser import Browser, Dashboard, chromium
from tests.support.fleet import CLI, VIRTBUS, Fleet, spec
from tests.support.services import AMQP_URL, new_host

pytestmark = pytest.mark.integration

PRIVATE_PORT_BASE = 5740
"""The private node of the broker-restart test listens on 5741 (the fault suite's nodes
on 5701-5703, the soak's on 5711-5713)."""


@pytest.fixture
async def driver(services: None, tmp_path: Path) -> AsyncIterator[WebDriver]:
    async with chromium(tmp_path) as browser:
        yield browser


@pytest.fixture
def private_node(services: None) -> Iterator[Node]:
    """A RabbitMQ node of the test's own, to stop and start (never the shared one)."""
    # it runs as the rabbitmq user, who cannot enter pytest's private tmp_path
    root = Path(tempfile.mkdtemp(prefix="virtbus-dashboard-rabbit-"))
    root.chmod(0o755)
    node = Node(1, root, prefix="vbd", base_port=PRIVATE_PORT_BASE)
    try:
        node.start()
        yield node
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def dashboards() -> AsyncIterator[list[Dashboard]]:
    started: list[Dashboard] = []
    yield started
    for dashboard in started:
        await dashboard.stop()


async def test_the_page_lists_hosts_and_a_start_turns_the_row_running(
    fleet: Fleet, driver: WebDriver, dashboards: list[Dashboard]
) -> None:
    group = new_host()
    agent = await fleet.start(groups=(group,))
    async with connect(AMQP_URL) as conn:
        await conn.define(agent.host, spec("web"))
    dashboards.append(dashboard := await Dashboard.start())
    page = Browser(driver, dashboard.base)

    await page.open("/#/")
    await page.text_of(f'tr[data-host="{agent.host}"] .presence', "alive")
    await page.screenshot("dashboard-fleet.png")
    await page.click(f'tr[data-host="{agent.host}"] a')
    row = '#domains tr[data-domain="web"]'
    await page.text_of(f"{row} .state", "shutoff")
    await page.run("window.notReloaded = true;")
    await page.click(f'{row} button[data-action="start"]')
    await page.click("#confirm-ok")
    await page.text_of(f"{row} .state", "running")
    assert await page.run("return window.notReloaded === true;")
    await page.click(f"{row} a")
    await page.element("#domain-events li[data-type='lifecycle.started']")
    await page.until(lambda d: "<domain" in d.find_element(By.ID, "domain-xml").text)
    await page.screenshot("dashboard-domain.png")


async def test_a_group_broadcast_names_the_missing_host(
    fleet: Fleet, driver: WebDriver, dashboards: list[Dashboard]
) -> None:
    group = new_host()
    agent = await fleet.start(groups=(group,))
    async with connect(AMQP_URL) as conn:
        await conn.define(agent.host, spec("web"))
    dashboards.append(dashboard := await Dashboard.start())
    ghost = new_host()
    await _heartbeat(AMQP_URL, ghost, group)  # then silence: an agent that died
    page = Browser(driver, dashboard.base)

    await page.open("/#/")
    await page.text_of(f'tr[data-host="{ghost}"] .presence', "missing")
    await page.run(
        "const s = document.getElementById('bc-group');"
        "s.append(new Option(arguments[0], arguments[0])); s.value = arguments[0];"
        "document.getElementById('bc-domain').value = 'web';",
        group,
    )
    await page.click("#bc-run")
    await page.click("#confirm-ok")
    await page.element(f'#report li[data-missing="{ghost}"]')
    await page.element(f'#report li[data-answered="{agent.host}"]')
    await page.text_of(f'#report li[data-missing="{ghost}"]', f"{ghost}: missing (no answer)")


async def test_a_read_only_user_gets_no_buttons_and_its_forged_post_is_refused(
    fleet: Fleet, driver: WebDriver, dashboards: list[Dashboard], cli: CLI, tmp_path: Path
) -> None:
    agent = await fleet.start()
    async with connect(AMQP_URL) as conn:
        web = await conn.define(agent.host, spec("web"))
    users = tmp_path / "users.toml"
    added = await asyncio.create_subprocess_exec(
        str(VIRTBUS),
        *("dashboard-user", "-f", str(users), "add", "viewer"),
        env=cli.env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(added.communicate(b"s3cret-viewer\n"), 30)
    assert added.returncode == 0, err
    assert "read-only" in users.read_text() and "s3cret" not in users.read_text()
    dashboards.append(dashboard := await Dashboard.start("--users", str(users)))
    page = Browser(driver, dashboard.base)

    await page.open(f"/#/host/{agent.host}")
    await page.type("#login-user", "viewer")
    await page.type("#login-password", "s3cret-viewer")
    await page.click("#login-submit")
    await page.text_of('#domains tr[data-domain="web"] .state', "shutoff")
    shown = await page.run(
        "const all = [...document.querySelectorAll('button[data-action], #broadcast')];"
        "return [all.length, all.filter((e) => e.offsetParent !== null).length];"
    )
    assert shown[0] > 0 and shown[1] == 0  # there, and hidden

    status = await page.run_async(
        "const done = arguments[arguments.length - 1];"
        "const session = await (await fetch('/api/session')).json();"
        "const answer = await fetch('/api/action', {method: 'POST', headers: "
        "{'Content-Type': 'application/json', 'X-CSRF-Token': session.csrf}, "
        "body: JSON.stringify({action: 'start', host: arguments[0], uuid: arguments[1]})});"
        "done([answer.status, (await answer.json()).error]);",
        agent.host,
        str(web.uuid),
    )
    assert status == [403, "access denied: user viewer may not act (read-only)"]
    async with connect(AMQP_URL) as conn:
        assert (await conn.lookup_by_name(agent.host, "web")).record.state == 5


async def test_the_feed_recovers_after_a_broker_restart(
    fleet: Fleet, driver: WebDriver, dashboards: list[Dashboard], private_node: Node
) -> None:
    node = private_node
    try:
        config = Config(host=new_host(), amqp_url=node.url, state_dir=fleet.state_dir)
        agent = Agent(config)
        fleet.hosts.add(config.host)
        await agent.start()
        fleet.agents.append(agent)
        dashboards.append(dashboard := await Dashboard.start(url=node.url))
        page = Browser(driver, dashboard.base)
        await page.open("/#/events")
        async with connect(node.url) as conn:
            await conn.define(agent.host, spec("before"))
        await page.element("#feed li[data-type='lifecycle.defined']")

        await asyncio.to_thread(rabbitmqctl, node.name, "stop_app")
        await page.until(lambda d: "lost" in d.find_element(By.ID, "banner").text)
        await asyncio.to_thread(rabbitmqctl, node.name, "start_app")
        await page.until(lambda d: "Reconnected" in d.find_element(By.ID, "banner").text)
        await asyncio.wait_for(agent.ready.wait(), 60)
        async with connect(node.url) as conn:
            await _until_defined(conn, agent.host, "after")
        await page.until(
            lambda d: any(
                " after " in li.text + " " for li in d.find_elements(By.CSS_SELECTOR, "#feed li")
            )
        )
        assert "connected" in driver.find_element(By.ID, "broker").text
    finally:
        for agent in fleet.agents:
            await agent.stop()
        fleet.agents.clear()


async def _until_defined(conn: Connection, host: str, name: str) -> None:
    """Define ``name``, retrying while the agent is still reconnecting."""
    for _ in range(30):
        try:
            await conn.define(host, spec(name))
            return
        except VirtbusError:
            await asyncio.sleep(1)
    raise AssertionError(f"host {host} never defined {name}")


async def _heartbeat(url: str, host: str, group: str) -> None:
    """One presence heartbeat of ``host`` in ``group``, as an agent sends it."""
    event = AgentEvent(
        host=host,
        time=datetime.now(UTC),
        state="heartbeat",
        agent_version="0.1.0",
        groups=[group],
        capabilities=[],
        heartbeat_s=0.5,
        domains=1,
    )
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        await events.publish(
            aio_pika.Message(event.model_dump_json().encode(), message_id=uuid.uuid4().hex),
            routing_key=event.routing_key,
        )
