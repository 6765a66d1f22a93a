"""The chaos soak: orchestrators drive 50 domains while faults hit everything under them.

Five orchestrators, each with a client of its own that re-sends until answered, drive
ten domains each through random lifecycle ops, one command at a time per domain. A
seeded random schedule meanwhile SIGKILLs and restarts nodes of a private 3-node
RabbitMQ cluster, restarts the soak's own dockerd, SIGKILLs and restarts the agent,
cuts the agent's network (a proxy), fills the agent's state disk (a small tmpfs) and
lets a domain be OOM-killed. The history checker then proves every command answered
exactly once with its effect applied at most once, each domain's events a legal path of
libvirt's state machine with libvirt's codes, no ``seq`` gap, and the final state equal to
Docker's.

``VIRTBUS_SOAK_S`` sets the length (0 by default, the test suite's run: every fault once;
a longer run adds random ones until the time is up),
``VIRTBUS_SOAK_SEED`` replays a schedule (the seed is printed at the start),
``VIRTBUS_SOAK_FAULTS`` narrows the faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.host.driver import HOST_LABEL
from schemas.events import DomainEvent
from tests.faults.cluster import Cluster
from tests.faults.harness import AgentProcess, Client, Recorder
from tests.faults.history import REMOVING, TOLERATED, Effect, Report, Run, check, effect
from tests.faults.proxy import Proxy
from tests.soak.engine import Engine
from tests.support.services import IMAGE, new_host

SOAK_S = float(os.environ.get("VIRTBUS_SOAK_S", "0"))
"""Every fault runs once whatever the length (about 60-80 s): the default run is that one
round, about two minutes with setup."""
SEED = int(os.environ.get("VIRTBUS_SOAK_SEED") or random.randrange(2**32))
DOMAINS = 50
ORCHESTRATORS = 5
HEARTBEAT_S = 2
DISK = "16m"
OOM_LIMIT_KIB = 16384
ALL_FAULTS = ("broker node", "dockerd", "agent", "network", "disk", "oom")
FAULTS = tuple(
    kind.strip()
    for kind in os.environ.get("VIRTBUS_SOAK_FAULTS", ",".join(ALL_FAULTS)).split(",")
    if kind.strip()
)
"""The fault kinds scheduled; ``VIRTBUS_SOAK_FAULTS`` (comma-separated) chooses them."""
MAX_TOLERATED = 0.5
"""Refusals the soak accepts (a domain a fault moved behind its orchestrator's back,
Docker away): at most half of all commands, none of them with an effect."""
DIAL_S = 30.0
GAP_S = (2.0, 8.0)
LOGS = Path("/tmp/virtbus-soak-logs")
"""Where a failed run leaves the agent's and dockerd's logs."""

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SOAK_S + 900)]

DOCKER_STATES = {"running": "running", "paused": "paused", "removing": REMOVING, "dead": REMOVING}
"""Docker's state → the domain's; anything else is shut off. A container Docker is
removing, or failed to remove (Docker's own overlay mount still busy after an engine
restart: it marks the container dead), is a domain shut off or gone (history.REMOVING);
the agent tries its removal again at each chance (the next define or undefine of the
name, a re-list)."""


@dataclass
class Stage:
    root: Path
    engine: Engine
    cluster: Cluster
    disk: Path


@pytest.fixture
def stage() -> Iterator[Stage]:
    unknown = set(FAULTS) - set(ALL_FAULTS)
    if unknown or not FAULTS:
        pytest.fail(f"VIRTBUS_SOAK_FAULTS: unknown {sorted(unknown)}; known: {ALL_FAULTS}")
    for tool in ("rabbitmqctl", "dockerd", "mount"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; run scripts/setup.sh")
    root = Path("/tmp") / f"virtbus-soak-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    engine = Engine(root / "engine")
    cluster = Cluster(root / "cluster", prefix="vbs", base_port=5710)
    disk = root / "state"
    disk.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(disk)],
            check=True,
            timeout=30,
        )
        # the engine and the cluster come up side by side: setup is most of a CI run
        with ThreadPoolExecutor(2) as pool:
            starting = [pool.submit(engine.start_with, IMAGE), pool.submit(cluster.start)]
            for started in starting:
                started.result()
        yield Stage(root, engine, cluster, disk)
    finally:
        engine.destroy()
        cluster.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Orchestrator:
    """Drives its own domains: picks one, picks an op its belief makes sensible, and
    after a refusal looks the domain up to learn where it really is."""

    client: Client
    names: list[str]
    rng: random.Random
    run: Run
    belief: dict[str, tuple[str | None, bool]] = field(default_factory=dict)

    def choose(self, name: str) -> str:
        state, persistent = self.belief.get(name, (None, True))
        choices: dict[str | None, dict[str, float]] = {
            None: {"define": 1},
            "shutoff": {"create": 0.75, "undefine": 0.25},
            "running": {
                "suspend": 0.3,
                "destroy": 0.15,
                "shutdown": 0.15,
                "reboot": 0.25,
                "undefine": 0.15 if persistent else 0,
            },
            "paused": {"resume": 0.55, "destroy": 0.25, "shutdown": 0.1, "suspend": 0.1},
        }
        weights = choices[state]
        return self.rng.choices(list(weights), list(weights.values()))[0]

    async def drive(self, until: Callable[[], bool]) -> None:
        while not until():
            name = self.rng.choice(self.names)
            op = self.choose(name)
            if op == "define":
                spec = {"name": name, "image": IMAGE, "command": ["sleep", "3600"]}
                sent = await self.client.send(name, op, spec=spec)
            elif op == "shutdown":
                sent = await self.client.send(name, op, {"name": name}, timeout_s=5)
            else:
                sent = await self.client.send(name, op, {"name": name})
            self.run.sent.append(sent)
            if sent.reply.get("ok"):
                self.learn(name, op)
            else:
                await self.look_up(name)

    def learn(self, name: str, op: str) -> None:
        state, persistent = self.belief.get(name, (None, True))
        after: dict[str, tuple[str | None, bool]] = {
            "define": ("shutoff", True),
            "create": ("running", persistent),
            "suspend": ("paused", persistent),
            "resume": ("running", persistent),
            "reboot": ("running", persistent),
            "destroy": ("shutoff", True) if persistent else (None, True),
            "shutdown": ("shutoff", True) if persistent else (None, True),
            "undefine": (None, True) if state == "shutoff" else (state, False),
        }
        self.belief[name] = after[op]

    async def look_up(self, name: str) -> None:
        sent = await self.client.send(name, "lookup", {"name": name})
        self.run.sent.append(sent)
        record = sent.reply.get("result")
        if sent.reply.get("ok") and isinstance(record, dict):
            states = {1: "running", 3: "paused", 5: "shutoff"}
            self.belief[name] = (states.get(record["state"]), bool(record["persistent"]))
        elif (sent.reply.get("error") or {}).get("code") == "NO_DOMAIN":
            self.belief[name] = (None, True)


@dataclass
class Injected:
    kind: str
    started: float
    took: float
    detail: str
    resent: int


@dataclass
class Chaos:
    """The fault schedule: every kind once in a seeded order, then seeded random picks,
    with seeded gaps, until the soak's time is up."""

    stage: Stage
    agent: AgentProcess
    proxies: list[Proxy]
    client: Client
    clients: list[Client]
    run: Run
    rng: random.Random
    external: dict[str, list[Effect]] = field(default_factory=dict)
    done: list[Injected] = field(default_factory=list)

    async def play(self, deadline: float) -> None:
        order = list(FAULTS)
        self.rng.shuffle(order)
        while order or time.monotonic() < deadline:
            await asyncio.sleep(self.rng.uniform(*GAP_S))
            kind = order.pop(0) if order else self.rng.choice(FAULTS)
            faults: dict[str, Callable[[], Awaitable[str]]] = {
                "broker node": self.kill_node,
                "dockerd": self.restart_dockerd,
                "agent": self.kill_agent,
                "network": self.cut_network,
                "disk": self.fill_disk,
                "oom": self.oom_kill,
            }
            resent = sum(c.sends for c in self.clients)
            started = time.monotonic()
            detail = await faults[kind]()
            took = time.monotonic() - started
            resent = sum(c.sends for c in self.clients) - resent
            print(f"  fault {kind}: {detail} ({took:.1f} s)", flush=True)
            self.done.append(Injected(kind, started, took, detail, resent))

    async def kill_node(self) -> str:
        node = self.rng.choice(self.stage.cluster.nodes)
        await asyncio.to_thread(node.kill)
        await asyncio.sleep(self.rng.uniform(3, 8))
        await asyncio.to_thread(node.start)
        return f"{node.name} SIGKILLed and started"

    async def restart_dockerd(self) -> str:
        await asyncio.to_thread(self.stage.engine.restart)
        return "the soak's dockerd restarted"

    async def kill_agent(self) -> str:
        await self.agent.kill()
        await asyncio.sleep(self.rng.uniform(0.5, 3))
        await self.agent.start()
        return "agent SIGKILLed and started"

    async def cut_network(self) -> str:
        for proxy in self.proxies:
            proxy.cut()
        held = self.rng.uniform(3, 10)
        dialled = [asyncio.create_task(p.dialled.wait()) for p in self.proxies]
        started = time.monotonic()
        try:
            await asyncio.wait(dialled, timeout=DIAL_S, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(max(0.0, held - (time.monotonic() - started)))
        finally:
            for task in dialled:
                task.cancel()
            for proxy in self.proxies:
                proxy.restore()
        gave_up = any(p.dialled.is_set() for p in self.proxies)
        return f"cut {time.monotonic() - started:.1f} s, agent re-dialled: {gave_up}"

    async def fill_disk(self) -> str:
        filler = self.stage.disk / "filler"

        def fill() -> int:
            written = 0
            try:
                # the open itself fails when the agent's own writes filled the disk
                with filler.open("wb") as sink:
                    while True:
                        written += sink.write(b"\0" * 65536)
                        sink.flush()
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
            return written

        written = await asyncio.to_thread(fill)
        await asyncio.sleep(self.rng.uniform(3, 8))
        filler.unlink(missing_ok=True)
        return f"state disk full ({written // 1024} KiB written), then freed"

    async def oom_kill(self) -> str:
        name = f"oom{sum(f.kind == 'oom' for f in self.done)}"
        spec = {
            "name": name,
            "image": IMAGE,
            "memory_kib": OOM_LIMIT_KIB,
            "command": ["sh", "-c", "sleep 1; x=$(head -c 400000000 /dev/zero | tr '\\0' a)"],
        }
        for sent in (
            await self.client.send(name, "define", spec=spec),
            await self.client.send(name, "create", {"name": name}),
        ):
            self.run.sent.append(sent)
            if not sent.reply.get("ok"):
                return f"{name} not started: {sent.reply.get('error')}"
        self.external[name] = [("lifecycle", "stopped", "crashed")]
        handle = f"{self.agent.host}.{name}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                status = await asyncio.to_thread(
                    self.stage.engine.docker,
                    "inspect",
                    "-f",
                    "{{.State.Status}} {{.State.OOMKilled}}",
                    handle,
                )
                if status.split()[0] == "exited":
                    return f"{name} exited, OOMKilled {status.split()[1]}"
            await asyncio.sleep(0.5)
        return f"{name} still not dead after 60 s"


def docker_states(engine: Engine, host: str) -> dict[str, str | None]:
    listed = engine.docker(
        "ps", "-a", "--filter", f"label={HOST_LABEL}={host}", "--format", "{{.Names}}\t{{.State}}"
    )
    states: dict[str, str | None] = {}
    for line in listed.splitlines():
        handle, _, state = line.partition("\t")
        domain_state = DOCKER_STATES.get(state, "shutoff")
        if domain_state == REMOVING:
            print(f"Docker has not removed {handle} yet ({state})")
        states[handle.removeprefix(f"{host}.")] = domain_state
    return states


def summary(run: Run, events: list[DomainEvent], chaos: Chaos, report: Report) -> list[str]:
    ops = Counter(s.op for s in run.sent)
    ok = sum(bool(s.reply.get("ok")) for s in run.sent)
    kinds = Counter("/".join(effect(e)[1:]) or e.kind for e in {e.seq: e for e in events}.values())
    faults = Counter(f.kind for f in chaos.done)
    return [
        f"soak seed {SEED}, {SOAK_S:.0f} s, {DOMAINS} domains, {ORCHESTRATORS} orchestrators",
        "faults: " + ", ".join(f"{kind} {n}" for kind, n in sorted(faults.items())),
        "commands: " + ", ".join(f"{op} {n}" for op, n in sorted(ops.items())) + f"; ok {ok}",
        "events: " + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())),
        report.line(),
        *(f"   {problem}" for problem in report.problems),
    ]


def example(run: Run, events: list[DomainEvent], problems: list[str]) -> None:
    """The history of the first domains a problem names: commands and events."""
    names = {s.domain for s in run.sent}
    owners = {s.id: s.domain for s in run.sent}
    shown = 0
    for problem in problems:
        words = problem.split(":")[0].split()
        name = owners.get(words[1], "") if words[0] == "command" else words[0]
        if name not in names or shown == 3:
            continue
        names.discard(name)
        shown += 1
        print(f"history of {name}:")
        for sent in run.sent:
            if sent.domain == name:
                error = (sent.reply.get("error") or {}).get("code", "")
                print(f"   command {sent.id} {sent.op} ok={sent.reply.get('ok')} {error}")
        for event in sorted({e.seq: e for e in events}.values(), key=lambda e: e.seq):
            if event.domain.name == name:
                print(
                    f"   event seq {event.seq} {'/'.join(effect(event))} {event.origin} "
                    f"cause={event.cause}"
                )


async def test_chaos_soak(stage: Stage, request: pytest.FixtureRequest) -> None:
    print(f"\nsoak seed {SEED} (VIRTBUS_SOAK_SEED={SEED} replays it), {SOAK_S:.0f} s", flush=True)
    rng = random.Random(SEED)
    host = new_host()
    logs = LOGS / f"{SEED}-{host}"
    logs.mkdir(parents=True, exist_ok=True)
    urls = stage.cluster.urls
    proxies = [await Proxy(node.port).start() for node in stage.cluster.nodes]
    agent = AgentProcess(
        host,
        stage.disk,
        [p.url(HEARTBEAT_S) for p in proxies],
        "quorum",
        logs / "agent.log",
        ["--docker-url", stage.engine.url],
    )
    recorder = Recorder(urls, host, "quorum")
    clients = [Client(urls, host, "quorum", give_up_s=240) for _ in range(ORCHESTRATORS + 1)]
    run = Run()
    try:
        await recorder.start()
        await agent.start_online(urls[0])
        await clients[0].call("host.ping")
        names = [f"s{n:02d}" for n in range(DOMAINS)]
        share = DOMAINS // ORCHESTRATORS
        orchestrators = [
            Orchestrator(c, names[i * share : (i + 1) * share], random.Random(rng.random()), run)
            for i, c in enumerate(clients[:ORCHESTRATORS])
        ]
        chaos = Chaos(stage, agent, proxies, clients[-1], clients, run, random.Random(rng.random()))
        playing = asyncio.create_task(chaos.play(time.monotonic() + SOAK_S))
        await asyncio.gather(playing, *(o.drive(playing.done) for o in orchestrators))
        fence = await clients[-1].send("fence", "define", spec={"name": "fence", "image": IMAGE})
        run.sent.append(fence)
        assert fence.reply.get("ok"), fence.reply
        listing = await clients[-1].call("host.list_domains")
        listed = {d["name"]: d["state"] for d in listing["result"]["domains"]}
        docker = await asyncio.to_thread(docker_states, stage.engine, host)
        assert await agent.stop() == 0
        events = await recorder.drain(until=lambda seen: any(e.cause == fence.id for e in seen))
        report = check(
            "soak",
            run,
            events,
            listed,
            external=chaos.external,
            tolerated=TOLERATED,
            max_tolerated=MAX_TOLERATED,
            strict=False,
            docker=docker,
        )
        # the counts are the soak's result: on the terminal in every run, captured or not
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print("\n" + "\n".join(summary(run, events, chaos, report)), flush=True)
        example(run, events, report.problems)
        assert report.problems == []
        assert {f.kind for f in chaos.done} == set(FAULTS)
    except BaseException:
        shutil.copy(stage.engine.log, logs / "dockerd.log")
        print(f"logs kept in {logs}; seed {SEED}")
        raise
    else:
        shutil.rmtree(logs, ignore_errors=True)
    finally:
        await agent.stop()
        for client in clients:
            await client.close()
        for proxy in proxies:
            await proxy.stop()
        await settled()


async def settled() -> None:
    """Let the tasks the closed connections left (aio-pika's close callbacks) run while
    the loop lives: destroyed pending at the loop's close, their coroutines would be
    finalized later, anywhere in the session (once inside CPython's compiler, which
    failed on it)."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=10)
    gc.collect()
