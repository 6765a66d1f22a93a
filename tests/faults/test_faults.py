"""Faults injected for real into a stream of commands: nothing lost, nothing doubled.

Each scenario runs an agent process, drives a few hundred commands over many domains,
injects one fault a third of the way in, and checks every reply and every event.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiodocker
import pytest

from agent.host.bus import Bus
from agent.host.driver import HOST_LABEL
from schemas.topology import DEAD_QUEUE, host_queue
from tests.faults.cluster import Cluster, Node
from tests.faults.harness import AgentProcess, Client, Recorder, workload
from tests.faults.history import TOLERATED, Effect, Report, Sent, check
from tests.faults.proxy import Proxy
from tests.support.services import AMQP_URL, new_host

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

DOMAINS = 16
ROUNDS = 2
FAULT_AT = DOMAINS * ROUNDS * 12 // 3
PROBE_S = 60.0
DIAL_S = 30.0
"""Bound on the agent dialling again: three missed heartbeats, or its open timeout."""
CONNECT_S = 10.0
Fault = Callable[[AgentProcess], Coroutine[Any, Any, None]]


@dataclass
class Stage:
    """Where a scenario runs: the brokers to use and the host queues' type."""

    urls: list[str]
    queue_type: str


@pytest.fixture
def single(services: None) -> Stage:
    return Stage([AMQP_URL], "classic")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmq-server is not installed; run scripts/setup.sh")
    cluster = Cluster(Path("/tmp") / f"virtbus-cluster-{os.getpid()}")
    cluster.start()
    yield cluster
    cluster.stop()


async def run_scenario(
    name: str,
    stage: Stage,
    fault: Fault,
    tmp_path: Path,
    agent_urls: list[str] | None = None,
    before: Callable[[Client], Coroutine[Any, Any, list[Sent]]] | None = None,
    external: dict[str, list[Effect]] | None = None,
    tolerant: bool = False,
    must_interrupt: bool = True,
    through: bool = False,
) -> Report:
    """Run the workload with ``fault`` injected and check its history. ``tolerant``:
    the fault makes Docker refuse calls for a while, so up to half the commands may fail
    with a tolerated code (and cause nothing). ``must_interrupt``: the fault touches the
    agent's own work, so the run must show it (a re-send, redelivery, error or
    reconcile); a fault on a node the agent does not use proves instead that the work
    went on untouched. ``through``: the workload goes on until the fault has ended."""
    host = new_host()
    agent = AgentProcess(
        host, tmp_path / "state", agent_urls or stage.urls, stage.queue_type, tmp_path / "agent.log"
    )
    recorder = Recorder(stage.urls, host, stage.queue_type)
    client = Client(stage.urls, host, stage.queue_type)
    try:
        await recorder.start()
        await agent.start_online(stage.urls[0])
        await client.call("host.ping")
        prelude = await before(client) if before else []
        run, injected = await workload(
            client, DOMAINS, ROUNDS, FAULT_AT, lambda: fault(agent), through=through
        )
        assert injected is not None
        await injected
        run.sent[:0] = prelude
        fence = await client.send(
            "fence",
            "define",
            spec={"name": "fence", "image": "virtbus-test:latest", "command": ["sleep", "9"]},
        )
        assert fence.reply.get("ok"), fence.reply
        run.sent.append(fence)
        listing = await client.call("host.list_domains")
        listed = {d["name"]: d["state"] for d in listing["result"]["domains"]}
        assert await agent.stop() == 0
        events = await recorder.drain(until=lambda seen: any(e.cause == fence.id for e in seen))
        report = check(
            name,
            run,
            events,
            listed,
            external=external,
            tolerated=TOLERATED if tolerant else frozenset(),
            max_tolerated=0.5 if tolerant else 0.25,
            strict=not tolerant,
            must_interrupt=must_interrupt,
            reconnects=agent.reconnects(),
        )
    finally:
        await agent.stop()
        await client.close()
        await cleanup(stage.urls, host, client.reply_queue, recorder.queue)
    print(report.line())
    for problem in report.problems:
        print("  ", problem)
    if report.problems:
        for event in events:
            print(
                "  ",
                event.seq,
                event.domain.name,
                event.kind,
                getattr(event, "event", ""),
                getattr(event, "detail", ""),
                event.origin,
                event.cause,
            )
    assert report.problems == []
    return report


async def cleanup(urls: list[str], host: str, *queues: str) -> None:
    """Remove the host's containers and its queues, the run's own ``queues`` too: a run
    that failed before its recorder drained leaves nothing behind on the broker."""
    docker = aiodocker.Docker()
    try:
        filters = json.dumps({"label": [f"{HOST_LABEL}={host}"]})
        for container in await docker.containers.list(all=True, filters=filters):
            await container.delete(force=True)
    finally:
        await docker.close()
    await cleanup_queues(urls, [host_queue(host), *queues])


async def cleanup_queues(urls: list[str], queues: list[str]) -> None:
    connection = await aio_pika.connect(urls[0], timeout=CONNECT_S)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue, timeout=CONNECT_S)


def ctl(*argv: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *argv], check=True, timeout=120, capture_output=True)


async def test_broker_restarted_mid_stream(single: Stage, tmp_path: Path) -> None:
    async def restart_broker(agent: AgentProcess) -> None:
        await asyncio.to_thread(ctl, "stop_app")
        await asyncio.sleep(2)
        await asyncio.to_thread(ctl, "start_app")
        await asyncio.to_thread(ctl, "await_startup")

    await run_scenario("broker restarted", single, restart_broker, tmp_path)


async def test_dockerd_restarted_mid_stream(single: Stage, tmp_path: Path) -> None:
    async def restart_dockerd(agent: AgentProcess) -> None:
        await asyncio.to_thread(restart_docker_engine)

    await run_scenario("dockerd restarted", single, restart_dockerd, tmp_path, tolerant=True)


def restart_docker_engine() -> None:
    pids = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout
    for pid in pids.split():
        os.kill(int(pid), signal.SIGTERM)
    subprocess.run(
        ["timeout", "60", "sh", "-c", "while pgrep -x dockerd >/dev/null; do sleep 0.2; done"],
        check=True,
    )
    subprocess.Popen(
        ["setsid", "dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false"],
        stdout=subprocess.DEVNULL,
        stderr=open("/var/log/virtbus-dockerd.log", "ab"),  # noqa: SIM115
        start_new_session=True,
    )
    subprocess.run(
        ["timeout", "60", "sh", "-c", "until docker info >/dev/null 2>&1; do sleep 0.2; done"],
        check=True,
    )


async def test_agent_killed_mid_command(single: Stage, tmp_path: Path) -> None:
    async def kill_and_restart(agent: AgentProcess) -> None:
        await agent.kill()
        await asyncio.sleep(1)
        await agent.start()

    await run_scenario("agent SIGKILLed", single, kill_and_restart, tmp_path)


async def test_domain_crashes_while_agent_is_down(single: Stage, tmp_path: Path) -> None:
    async def start_victim(client: Client) -> list[Sent]:
        spec = {
            "name": "victim",
            "image": "virtbus-test:latest",
            "command": ["sh", "-c", "while true; do sleep 1; done"],
        }
        defined = await client.send("victim", "define", spec=spec)
        created = await client.send("victim", "create", {"name": "victim"})
        return [defined, created]

    async def crash_while_down(agent: AgentProcess) -> None:
        await agent.kill()
        docker = aiodocker.Docker()
        try:
            container = await docker.containers.get(f"{agent.host}.victim")
            init = (await container.show())["State"]["Pid"]
            # the shell under Docker's init: a namespace's PID 1 ignores such signals
            children = Path(f"/proc/{init}/task/{init}/children")
            shell = (await asyncio.to_thread(children.read_text)).split()[0]
            os.kill(int(shell), signal.SIGSEGV)
            await asyncio.wait_for(container.wait(), 30)
        finally:
            await docker.close()
        await agent.start()

    await run_scenario(
        "domain crashed while agent down",
        single,
        crash_while_down,
        tmp_path,
        before=start_victim,
        external={"victim": [("lifecycle", "stopped", "crashed")]},
    )


@pytest.mark.parametrize("role", ["agent's node", "dead-letter leader", "follower"])
async def test_cluster_node_stopped_and_started(
    cluster: Cluster, role: str, tmp_path: Path
) -> None:
    """The node stopped is the one the agent is connected to (it also leads the new host
    queue), the leader of the dead-letter queue, or one with neither role. While it is
    down the agent answers through the other two."""
    stage = Stage(cluster.urls, "quorum")

    def choose(host: str) -> Node:
        connected = cluster.serving(f"virtbus-agent {host}")
        dead = cluster.leader(DEAD_QUEUE)
        chosen = {"agent's node": connected, "dead-letter leader": dead}.get(role)
        return chosen or next(n for n in cluster.nodes if n not in (connected, dead))

    async def bounce(agent: AgentProcess) -> None:
        node = await asyncio.to_thread(choose, agent.host)
        print(f"stopping {node.name}, the {role}")
        await asyncio.to_thread(node.stop)
        await answers([n.url for n in cluster.nodes if n != node], agent.host)
        await asyncio.to_thread(node.start)

    await run_scenario(
        f"cluster node stopped ({role})",
        stage,
        bounce,
        tmp_path,
        must_interrupt=role == "agent's node",
        # a node takes seconds to stop: without more rounds the workload could be over
        through=role == "agent's node",
    )


async def test_classic_dead_letter_queue_on_a_stopped_node(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker from before the quorum dead-letter queue keeps its classic one. With that
    queue's node down, the agent still connects through another node and publishes."""
    home, other = cluster.nodes[-1], cluster.nodes[0]
    await cleanup_queues([home.url], [DEAD_QUEUE])
    connection = await aio_pika.connect(home.url, timeout=CONNECT_S)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(DEAD_QUEUE, durable=True)
    host = new_host()
    await asyncio.to_thread(home.stop)
    try:
        async with asyncio.timeout(PROBE_S), Bus([other.url], host, [], "quorum") as bus:
            await bus.publish_event(f"{host}.agent.heartbeat", b"{}", message_id=None)
    finally:
        await asyncio.to_thread(home.start)
        await cleanup_queues([other.url], [DEAD_QUEUE, host_queue(host)])
    assert "NOT_FOUND" in caplog.text, caplog.text


async def answers(urls: list[str], host: str) -> None:
    """The agent answers a ping sent through ``urls`` within a bound."""
    probe = Client(urls, host, "quorum")
    try:
        reply = await asyncio.wait_for(probe.call("host.ping"), PROBE_S)
        assert reply["ok"], reply
    finally:
        await probe.close()
        await cleanup_queues(urls, [probe.reply_queue])


@pytest.fixture
async def proxy(services: None) -> AsyncIterator[Proxy]:
    proxy = await Proxy(5672).start()
    yield proxy
    await proxy.stop()


async def test_network_cut_longer_than_heartbeat(
    single: Stage, proxy: Proxy, tmp_path: Path
) -> None:
    """The line stays silent until the agent has given up on its connection by itself
    (missed heartbeats) and then on a reconnection whose handshake never completes."""
    heartbeat_s = 2

    async def cut_and_restore(agent: AgentProcess) -> None:
        proxy.cut()
        for _ in range(2):
            await asyncio.wait_for(proxy.dialled.wait(), DIAL_S)
            proxy.dialled.clear()
        proxy.restore()

    await run_scenario(
        "network cut",
        single,
        cut_and_restore,
        tmp_path,
        agent_urls=[proxy.url(heartbeat_s)],
    )
