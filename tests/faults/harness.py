"""The fault suite's machinery: agents as processes, a client that re-sends until it is
answered, a recorder that outlives the broker, a workload, and the checker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from schemas.events import EVENT_ADAPTER, AgentEvent, DomainEvent, LifecycleEvent
from schemas.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE

VIRTBUS = Path(sys.executable).parent / "virtbus"
IMAGE = "virtbus-test:latest"
RESEND_AFTER_S = 8.0
GIVE_UP_S = 180.0


@dataclass
class AgentProcess:
    host: str
    state_dir: Path
    urls: list[str]
    queue_type: str
    log: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(VIRTBUS),
                "agent",
                "--host",
                self.host,
                "--amqp-url",
                ",".join(self.urls),
                "--queue-type",
                self.queue_type,
                "--state-dir",
                str(self.state_dir),
                "--heartbeat-s",
                "1",
                "--reconcile-s",
                "2",
                "--log-level",
                os.environ.get("VIRTBUS_FAULTS_LOG_LEVEL", "info"),
                env={**os.environ},
                stdout=log,
                stderr=log,
            )

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.returncode is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            await self.kill()
            return -9


class Client:
    """Sends commands and re-sends the same id until a reply comes: at-least-once from
    this side, exactly-once effects from the agent's."""

    def __init__(self, urls: list[str], host: str, queue_type: str) -> None:
        self._urls = urls
        self._host = host
        self._queue_type = queue_type
        self.reply_queue = f"faults.replies.{uuid.uuid4().hex[:8]}"
        self.replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._arrived: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self.sends = 0

    async def _connected(self) -> AbstractChannel:
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            for attempt in range(200):
                url = self._urls[attempt % len(self._urls)]
                try:
                    self._connection = await aio_pika.connect(url, timeout=5)
                    channel = await self._connection.channel()
                    queue = await channel.declare_queue(
                        self.reply_queue,
                        durable=True,
                        arguments={"x-queue-type": self._queue_type},
                    )
                    await queue.consume(self._on_reply, no_ack=True)
                    self._channel = channel
                    return channel
                except (OSError, TimeoutError, aio_pika.exceptions.AMQPError):
                    await asyncio.sleep(0.5)
            raise ConnectionError("no broker answered")

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        reply = json.loads(message.body)
        self.replies[reply["id"]].append(reply)
        self._arrived[reply["id"]].set()

    async def call(
        self, op: str, target: dict[str, Any] | None = None, **args: Any
    ) -> dict[str, Any]:
        command_id = uuid.uuid4().hex
        document: dict[str, Any] = {"v": 1, "id": command_id, "op": op}
        if target is not None:
            document["target"] = target
        if args:
            document["args"] = args
        body = json.dumps(document).encode()
        started = time.monotonic()
        while time.monotonic() - started < GIVE_UP_S:
            try:
                channel = await self._connected()
                exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        message_id=command_id,
                        correlation_id=command_id,
                        reply_to=self.reply_queue,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=self._host,
                )
                self.sends += 1
            except (OSError, aio_pika.exceptions.AMQPError, RuntimeError):
                self._channel = None
                await asyncio.sleep(0.5)
                continue
            try:
                await asyncio.wait_for(self._arrived[command_id].wait(), RESEND_AFTER_S)
                return self.replies[command_id][0]
            except TimeoutError:
                continue
        raise AssertionError(f"command {op} {command_id} got no reply in {GIVE_UP_S} s")

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class Recorder:
    """A durable queue bound to a host's events, read only at the end: what the broker
    holds survives whatever happened in between."""

    def __init__(self, urls: list[str], host: str, queue_type: str) -> None:
        self._urls = urls
        self._host = host
        self._queue_type = queue_type
        self.queue = f"faults.events.{uuid.uuid4().hex[:8]}"

    async def _channel(self) -> tuple[AbstractConnection, AbstractChannel]:
        for attempt in range(200):
            try:
                url = self._urls[attempt % len(self._urls)]
                connection = await aio_pika.connect(url, timeout=5)
                return connection, await connection.channel()
            except (OSError, aio_pika.exceptions.AMQPError):
                await asyncio.sleep(0.5)
        raise ConnectionError("no broker answered")

    async def start(self) -> None:
        connection, channel = await self._channel()
        async with connection:
            exchange = await channel.declare_exchange(
                EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(
                self.queue, durable=True, arguments={"x-queue-type": self._queue_type}
            )
            await queue.bind(exchange, routing_key=f"{self._host}.#")

    async def drain(self, until: Callable[[list[DomainEvent]], bool]) -> list[DomainEvent]:
        """Every domain event in the queue, in order, once ``until`` holds. A broker
        restarted meanwhile costs a reconnection; an event whose ack it lost comes again,
        as the same event."""
        events: list[DomainEvent] = []
        deadline = time.monotonic() + 120
        while True:
            try:
                connection, channel = await self._channel()
                async with connection:
                    queue = await channel.get_queue(self.queue)
                    while not until(events):
                        message = await queue.get(fail=False, timeout=5)
                        if message is None:
                            if time.monotonic() > deadline:
                                raise AssertionError("the events the run implies never arrived")
                            await asyncio.sleep(0.05)
                            continue
                        event = EVENT_ADAPTER.validate_json(message.body)
                        if not isinstance(event, AgentEvent):
                            events.append(event)
                        await message.ack()
                    await queue.delete(if_unused=False, if_empty=False, timeout=5)
                return events
            except (OSError, RuntimeError, aio_pika.exceptions.AMQPError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


SCRIPT = (
    "define",
    "create",
    "suspend",
    "resume",
    "destroy",
    "create",
    "shutdown",
    "create",
    "reboot",
    "suspend",
    "destroy",
    "undefine",
)
EFFECTS: dict[str, tuple[str, ...]] = {
    "define": ("lifecycle", "defined", "added"),
    "create": ("lifecycle", "started", "booted"),
    "suspend": ("lifecycle", "suspended", "paused"),
    "resume": ("lifecycle", "resumed", "unpaused"),
    "destroy": ("lifecycle", "stopped", "destroyed"),
    "shutdown": ("lifecycle", "stopped", "shutdown"),
    "reboot": ("reboot",),
    "undefine": ("lifecycle", "undefined", "removed"),
}


@dataclass
class Sent:
    domain: str
    op: str
    reply: dict[str, Any]


@dataclass
class Run:
    sent: list[Sent] = field(default_factory=list)
    answered: int = 0

    @property
    def total(self) -> int:
        return len(self.sent)


async def workload(
    client: Client,
    domains: int,
    rounds: int,
    fault_at: int,
    fault: Callable[[], Coroutine[Any, Any, None]],
) -> tuple[Run, asyncio.Task[None] | None]:
    """Each domain runs SCRIPT ``rounds`` times, one command after another; domains run
    side by side. ``fault`` starts once ``fault_at`` commands have been answered."""
    run = Run()
    injected: asyncio.Task[None] | None = None

    async def drive(name: str) -> None:
        nonlocal injected
        for _ in range(rounds):
            for op in SCRIPT:
                if op == "define":
                    spec = {"name": name, "image": IMAGE, "command": ["sleep", "3600"]}
                    reply = await client.call("domain.define", spec=spec)
                else:
                    reply = await client.call(f"domain.{op}", {"name": name})
                run.sent.append(Sent(name, op, reply))
                run.answered += 1
                if run.answered == fault_at and injected is None:
                    injected = asyncio.create_task(fault())

    await asyncio.gather(*(drive(f"f{n:02d}") for n in range(domains)))
    return run, injected


@dataclass
class Report:
    scenario: str
    commands: int
    events: int
    lost: list[str]
    duplicated: list[str]
    redelivered: int

    def line(self) -> str:
        return (
            f"{self.scenario}: commands={self.commands} events={self.events} "
            f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"redelivered={self.redelivered}"
        )


def effect(event: DomainEvent) -> tuple[str, ...]:
    if isinstance(event, LifecycleEvent):
        return ("lifecycle", event.event, event.detail)
    return (event.kind,)


STATES = {1: "running", 3: "paused", 5: "shutoff"}
TOLERATED = frozenset({"OPERATION_FAILED", "OPERATION_INVALID", "NO_DOMAIN", "DOM_EXIST"})
"""Errors a command may meet while Docker itself is down or has stopped its domains."""
IDEMPOTENT = frozenset({"suspend", "resume"})
"""Ops that succeed without an effect when the domain is already where they lead."""


def walk(events: list[DomainEvent]) -> tuple[list[str], dict[str, str | None]]:
    """Each domain's events as libvirt's state machine (with transient domains, gone
    once stopped): the impossible steps, and where each domain ends."""
    states: dict[uuid.UUID, tuple[str | None, bool]] = {}
    names: dict[uuid.UUID, str] = {}
    wrong: list[str] = []
    for event in events:
        state, persistent = states.get(event.domain.uuid, (None, True))
        step = effect(event)
        after: tuple[str | None, bool] | None = None
        if step == EFFECTS["define"] and state is None:
            after = ("shutoff", True)
        elif step == EFFECTS["create"] and state == "shutoff":
            after = ("running", persistent)
        elif step == EFFECTS["suspend"] and state == "running":
            after = ("paused", persistent)
        elif (step, state) in ((EFFECTS["resume"], "paused"), (EFFECTS["reboot"], "running")):
            after = ("running", persistent)
        elif step[:2] == ("lifecycle", "stopped") and state in ("running", "paused"):
            after = ("shutoff", True) if persistent else (None, True)
        elif step == EFFECTS["undefine"] and state == "shutoff":
            after = (None, True)
        elif step == EFFECTS["undefine"] and state in ("running", "paused") and persistent:
            after = (state, False)
        if after is None:
            wrong.append(f"{event.domain.name}: {step} from {state} (seq {event.seq})")
            continue
        states[event.domain.uuid] = after
        names[event.domain.uuid] = event.domain.name
    final: dict[str, str | None] = {}
    for domain_uuid, (state, _) in states.items():
        if state is not None or names[domain_uuid] not in final:
            final[names[domain_uuid]] = state
    return wrong, final


def check(
    scenario: str,
    run: Run,
    events: list[DomainEvent],
    listed: dict[str, int],
    external: Counter[str] | None = None,
    tolerant: bool = False,
) -> Report:
    """Losses and duplicates in a run. ``listed`` is the agent's own list at the end.
    ``external`` counts the stopped events the fault itself causes, by domain name. A
    ``tolerant`` check (Docker restarted under the agent) accepts the errors Docker's
    absence causes and checks each domain's events against libvirt's state machine."""
    lost: list[str] = []
    duplicated: list[str] = []
    by_seq: dict[int, DomainEvent] = {}
    redelivered = 0
    for event in events:
        known = by_seq.get(event.seq)
        if known is None:
            by_seq[event.seq] = event
        elif known == event:
            redelivered += 1
        else:
            duplicated.append(f"seq {event.seq} carries two different events")
    seqs = sorted(by_seq)
    if seqs:
        lost += [f"seq {n} missing" for n in range(seqs[0], seqs[-1] + 1) if n not in by_seq]
    unique = [by_seq[n] for n in seqs]
    for sent in run.sent:
        error = sent.reply.get("error")
        if error and not (tolerant and error["code"] in TOLERATED):
            lost.append(f"{sent.domain} {sent.op} failed: {error['message']}")
    wrong, final = walk(unique)
    lost += wrong
    for name, state in final.items():
        if STATES.get(listed.get(name, -1)) != state:
            lost.append(f"{name}: events end in {state}, the agent lists {listed.get(name)}")
    for name, number in listed.items():
        if name not in final:
            lost.append(f"{name}: listed in state {number} without any event")
    caused = Counter(e.cause for e in unique if e.cause)
    duplicated += [f"command {cause} caused {n} events" for cause, n in caused.items() if n > 1]
    extra = Counter(external or {})
    for sent in run.sent:
        uncaused = sent.reply["ok"] and sent.op in EFFECTS and caused[sent.reply["id"]] == 0
        uncaused = uncaused and not (tolerant and sent.op in IDEMPOTENT)
        if uncaused and not any(
            e.origin == "reconcile" and effect(e) == EFFECTS[sent.op] for e in unique
        ):
            lost.append(f"{sent.domain} {sent.op} answered ok with no event")
    if tolerant:
        return Report(scenario, run.total, len(unique), lost, duplicated, redelivered)
    for name in sorted({s.domain for s in run.sent}):
        expected = [EFFECTS[s.op] for s in run.sent if s.domain == name]
        observed = [effect(e) for e in unique if e.domain.name == name]
        if observed == expected:
            continue
        surplus = [
            e for e in observed if e not in expected or observed.count(e) > expected.count(e)
        ]
        if extra[name] and len(surplus) == extra[name] and all(e[1] == "stopped" for e in surplus):
            continue
        lost.append(f"{name}: events {observed} for commands {expected}")
    return Report(scenario, run.total, len(unique), lost, duplicated, redelivered)
