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

from agent.host.bus import BROKER_LOST
from schemas.events import (
    EVENT_ADAPTER,
    AgentEvent,
    DomainEvent,
    ImagePullEvent,
    NetworkEvent,
)
from schemas.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE
from tests.faults.history import Run, Sent

VIRTBUS = Path(sys.executable).parent / "virtbus"
IMAGE = "virtbus-test:latest"
RESEND_AFTER_S = 8.0
GIVE_UP_S = 180.0
ONLINE_S = 60.0
"""How long a started agent may take to say it is online."""


@dataclass
class AgentProcess:
    host: str
    state_dir: Path
    urls: list[str]
    queue_type: str
    log: Path
    args: list[str] = field(default_factory=list)
    """More command-line flags, e.g. ``--docker-url``."""
    process: asyncio.subprocess.Process | None = None

    def reconnects(self) -> int:
        """How many times the agent's log says it lost its broker connection."""
        return self.log.read_text(errors="replace").count(BROKER_LOST)

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
                *self.args,
                env={**os.environ},
                stdout=log,
                stderr=log,
            )

    async def start_online(self, url: str) -> None:
        """Start the agent and return once it says it is online: its command queue is
        declared by then, so a command sent after is queued, where one sent before would
        be dropped as unroutable and re-sent only RESEND_AFTER_S later."""
        connection = await aio_pika.connect(url, timeout=5)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(exchange, routing_key=f"{self.host}.agent.online")
            online = asyncio.Event()

            async def announced(message: AbstractIncomingMessage) -> None:
                online.set()

            await queue.consume(announced, no_ack=True)
            await self.start()
            await asyncio.wait_for(online.wait(), ONLINE_S)

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

    def __init__(
        self, urls: list[str], host: str, queue_type: str, give_up_s: float = GIVE_UP_S
    ) -> None:
        self._urls = urls
        self._host = host
        self._queue_type = queue_type
        self._give_up_s = give_up_s
        self.reply_queue = f"faults.replies.{uuid.uuid4().hex[:8]}"
        self.replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        """Every reply by command id, including those after the first."""
        self.sent: Counter[str] = Counter()
        """How often each command id was published."""
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

    async def send(
        self, domain: str, op: str, target: dict[str, Any] | None = None, **args: Any
    ) -> Sent:
        """``domain.<op>`` as the history records it; a command never answered is kept
        with no reply instead of failing the caller."""
        command_id = uuid.uuid4().hex
        try:
            reply = await self.call(f"domain.{op}", target, command_id=command_id, **args)
        except TimeoutError:
            reply = {}
        return Sent(domain, op, reply, self.replies[command_id], self.sent[command_id])

    async def call(
        self,
        op: str,
        target: dict[str, Any] | None = None,
        command_id: str | None = None,
        **args: Any,
    ) -> dict[str, Any]:
        """The first reply to ``op``, re-sent with the same id every RESEND_AFTER_S;
        TimeoutError when none comes within the client's budget."""
        command_id = command_id or uuid.uuid4().hex
        document: dict[str, Any] = {"v": 1, "id": command_id, "op": op}
        if target is not None:
            document["target"] = target
        if args:
            document["args"] = args
        body = json.dumps(document).encode()
        started = time.monotonic()
        while time.monotonic() - started < self._give_up_s:
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
                self.sent[command_id] += 1
            except (OSError, aio_pika.exceptions.AMQPError, RuntimeError):
                self._channel = None
                await asyncio.sleep(0.5)
                continue
            try:
                await asyncio.wait_for(self._arrived[command_id].wait(), RESEND_AFTER_S)
                return self.replies[command_id][0]
            except TimeoutError:
                continue
        raise TimeoutError(f"command {op} {command_id} got no reply in {self._give_up_s} s")

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
        """Every domain event in the queue, in order, once ``until`` holds and the queue
        is empty: call it once the agent is stopped, and nothing published is left
        behind. A broker restarted meanwhile costs a reconnection; an event whose ack it
        lost comes again, as the same event."""
        events: list[DomainEvent] = []
        deadline = time.monotonic() + 120
        while True:
            try:
                connection, channel = await self._channel()
                async with connection:
                    queue = await channel.get_queue(self.queue)
                    while True:
                        message = await queue.get(fail=False, timeout=5)
                        if message is None:
                            if until(events):
                                break
                            if time.monotonic() > deadline:
                                last = [
                                    (e.seq, e.domain.name, e.kind, e.origin, e.cause)
                                    for e in events[-8:]
                                ]
                                raise AssertionError(
                                    f"the events the run implies never arrived; the last: {last}"
                                )
                            await asyncio.sleep(0.05)
                            continue
                        event = EVENT_ADAPTER.validate_json(message.body)
                        if not isinstance(event, AgentEvent | NetworkEvent | ImagePullEvent):
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


async def workload(
    client: Client,
    domains: int,
    rounds: int,
    fault_at: int,
    fault: Callable[[], Coroutine[Any, Any, None]],
    through: bool = False,
) -> tuple[Run, asyncio.Task[None] | None]:
    """Each domain runs SCRIPT ``rounds`` times, one command after another; domains run
    side by side. ``fault`` starts once ``fault_at`` commands have been answered. With
    ``through``, each domain goes on with more rounds until the fault has ended, so that
    commands are in flight however long the fault takes to strike."""
    run = Run()
    injected: asyncio.Task[None] | None = None

    def more(done: int) -> bool:
        return done < rounds or (through and injected is not None and not injected.done())

    async def drive(name: str) -> None:
        nonlocal injected
        done = 0
        while more(done):
            done += 1
            for op in SCRIPT:
                if op == "define":
                    spec = {"name": name, "image": IMAGE, "command": ["sleep", "3600"]}
                    sent = await client.send(name, op, spec=spec)
                else:
                    sent = await client.send(name, op, {"name": name})
                run.sent.append(sent)
                run.answered += 1
                if run.answered == fault_at and injected is None:
                    injected = asyncio.create_task(fault())

    await asyncio.gather(*(drive(f"f{n:02d}") for n in range(domains)))
    return run, injected
