"""The orchestrator's side of the bus: typed, libvirt-shaped and async.

    async with connect("amqp://guest:guest@127.0.0.1:5672/") as conn:
        web = await conn.lookup_by_name("h1", "web")
        await web.suspend()
        async with conn.events(host="h1", event="stopped") as stream:
            async for event in stream: ...

Every failure is one exception type, as libvirt-python's ``libvirtError``:

    VirtbusError            code name, ``vir_error`` number, message, host
                            (a reply that does not come in time is OPERATION_TIMEOUT)

A call's timeout is also the command's ``deadline`` and its AMQP ``expiration``: an
agent that gets the command after the caller gave up does not run it, and a command no
agent took by then leaves the host queue (dead-lettered as expired).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from pydantic import ValidationError

from agent.signing import SigningKey
from schemas.codes import ErrorCode, EventId
from schemas.commands import COMMAND_ADAPTER, Command, ListFlag
from schemas.domain import DomainRecord, DomainSpec
from schemas.events import (
    EVENT_ADAPTER,
    AgentEvent,
    DomainEventBase,
    Event,
    LifecycleEvent,
    Presence,
    RebootEvent,
    TunableEvent,
)
from schemas.replies import (
    DomainInfo,
    DomainList,
    DomainStateInfo,
    DomainXml,
    HostInfo,
    Pong,
    Reply,
    Result,
)
from schemas.topology import (
    BROADCAST_ALL,
    BROADCAST_EXCHANGE,
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    group_key,
)
from schemas.xmldoc import XmlError

DEFAULT_TIMEOUT_S = 30.0
log = logging.getLogger(__name__)
EventKind = Literal["lifecycle", "reboot", "tunable", "agent"]
R = TypeVar("R", bound=Result)
_KINDS: dict[EventId, EventKind] = {
    EventId.LIFECYCLE: "lifecycle",
    EventId.REBOOT: "reboot",
    EventId.TUNABLE: "tunable",
}


class VirtbusError(Exception):
    """A command failed, or its reply did not come: libvirt's code, number and message."""

    def __init__(self, code: str, vir_error: int, message: str, host: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.vir_error = vir_error
        self.message = message
        self.host = host

    def __str__(self) -> str:
        return self.message

    def get_error_code(self) -> int:
        return self.vir_error

    def get_error_message(self) -> str:
        return self.message

    @classmethod
    def of(cls, code: ErrorCode, detail: str, host: str | None = None) -> VirtbusError:
        return cls(code.name, int(code), f"{code.prefix}: {detail}", host)


def _result(reply: Reply, expected: type[R]) -> R:
    if reply.error is not None:
        error = reply.error
        raise VirtbusError(error.code, error.vir_error, error.message, reply.host)
    if not isinstance(reply.result, expected):
        raise VirtbusError.of(
            ErrorCode.INTERNAL_ERROR,
            f"host {reply.host} answered {type(reply.result).__name__}, "
            f"expected {expected.__name__}",
            reply.host,
        )
    return reply.result


@dataclass(frozen=True)
class BroadcastResult:
    """The replies to one fleet-wide command, by host, and who stayed silent."""

    replies: dict[str, Reply]
    expected: frozenset[str] | None
    elapsed_s: float

    @property
    def missing(self) -> frozenset[str]:
        """Expected hosts that did not answer in time."""
        return (self.expected or frozenset()) - self.replies.keys()

    @property
    def failed(self) -> dict[str, Reply]:
        return {host: reply for host, reply in self.replies.items() if not reply.ok}


Progress = Callable[[str, int, int | None], None]
"""Called as each host answers: (host, answered so far, expected or None)."""


class Connection:
    """One connection to the broker and one reply queue, shared by every call."""

    def __init__(
        self,
        url: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        signing_key: SigningKey | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._url = url
        self._ssl_context = ssl_context
        self.timeout_s = timeout_s
        self._signing_key = signing_key
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._reply_queue: AbstractQueue | None = None
        self._waiting: dict[str, asyncio.Queue[Reply]] = {}
        self._callbacks: dict[int, asyncio.Task[None]] = {}
        self._next_callback = 1

    async def __aenter__(self) -> Connection:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        try:
            self._connection = await aio_pika.connect_robust(
                self._url,
                ssl_context=self._ssl_context,
                client_properties={"connection_name": "virtbus client"},
            )
        except (OSError, aio_pika.exceptions.AMQPError) as error:
            raise VirtbusError.of(
                ErrorCode.OPERATION_FAILED, f"cannot reach the broker: {error}"
            ) from None
        self._channel = await self._connection.channel()
        self._reply_queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._reply_queue.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        for task in self._callbacks.values():
            task.cancel()
        await asyncio.gather(*self._callbacks.values(), return_exceptions=True)
        self._callbacks.clear()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("connection is not open")
        return self._channel

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiting = self._waiting.get(message.correlation_id or "")
        if waiting is None:
            return
        try:
            waiting.put_nowait(Reply.model_validate_json(message.body))
        except ValidationError:
            return

    def command(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Command:
        """Build and validate a command; bad input raises INVALID_ARG here, not on a host."""
        document: dict[str, Any] = {
            "v": 1,
            "id": uuid.uuid4().hex,
            "op": op,
            "deadline": datetime.now(UTC) + timedelta(seconds=timeout_s or self.timeout_s),
        }
        if args is not None:
            document["args"] = args
        if target is not None:
            document["target"] = target
        try:
            return COMMAND_ADAPTER.validate_python(document)
        except XmlError as error:
            raise VirtbusError.of(error.code, error.detail) from None
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc'][1:]) or 'command'}: {item['msg']}"
                for item in error.errors(include_url=False, include_input=False)
            )
            raise VirtbusError.of(ErrorCode.INVALID_ARG, problems) from None

    async def _publish(self, command: Command, exchange: str, routing_key: str) -> None:
        if self._reply_queue is None:
            raise RuntimeError("connection is not open")
        target = await self.channel.get_exchange(exchange, ensure=False)
        body = command.model_dump_json(exclude_none=True).encode()
        headers: dict[str, Any] = {}
        if self._signing_key is not None:
            headers = self._signing_key.headers(body, exchange, routing_key, command.id, command.id)
        await target.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                message_id=command.id,
                correlation_id=command.id,
                reply_to=self._reply_queue.name,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=headers,
                # the deadline as the broker's TTL too: a command nobody took in time
                # leaves the queue (dead-lettered as expired) instead of waiting there
                expiration=_until(command.deadline),
                timestamp=datetime.now(UTC),
            ),
            routing_key=routing_key,
        )

    async def request(self, host: str, command: Command, timeout_s: float | None = None) -> Reply:
        """Send one command to one host and return its reply, error or not."""
        timeout = timeout_s or self.timeout_s
        replies: asyncio.Queue[Reply] = asyncio.Queue()
        self._waiting[command.id] = replies
        try:
            await self._publish(command, COMMANDS_EXCHANGE, host)
            try:
                return await asyncio.wait_for(replies.get(), timeout)
            except TimeoutError:
                raise VirtbusError.of(
                    ErrorCode.OPERATION_TIMEOUT,
                    f"no reply from host {host} to {command.op} within {timeout:g} s",
                    host,
                ) from None
        finally:
            del self._waiting[command.id]

    async def call(
        self,
        host: str,
        op: str,
        args: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Result:
        reply = await self.request(host, self.command(op, args, target, timeout_s), timeout_s)
        if reply.error is not None:
            raise VirtbusError(
                reply.error.code, reply.error.vir_error, reply.error.message, reply.host
            )
        assert reply.result is not None
        return reply.result

    async def _call(
        self,
        expected: type[R],
        host: str,
        op: str,
        args: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
    ) -> R:
        reply = await self.request(host, self.command(op, args, target))
        return _result(reply, expected)

    async def broadcast(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        target: dict[str, Any] | None = None,
        group: str | None = None,
        expect: Iterable[str] | None = None,
        timeout_s: float = 5.0,
        progress: Progress | None = None,
    ) -> BroadcastResult:
        """Send one command to every agent (or one group) and gather the replies.

        Returns when every host in ``expect`` has answered, or when ``timeout_s`` has
        passed; without ``expect`` it gathers for the whole ``timeout_s``.
        """
        expected = frozenset(expect) if expect is not None else None
        command = self.command(op, args, target, timeout_s)
        replies: asyncio.Queue[Reply] = asyncio.Queue()
        gathered: dict[str, Reply] = {}
        started = time.monotonic()
        self._waiting[command.id] = replies
        try:
            await self._publish(
                command, BROADCAST_EXCHANGE, group_key(group) if group else BROADCAST_ALL
            )
            while expected is None or not expected <= gathered.keys():
                left = timeout_s - (time.monotonic() - started)
                if left <= 0:
                    break
                try:
                    reply = await asyncio.wait_for(replies.get(), left)
                except TimeoutError:
                    break
                gathered[reply.host] = reply
                if progress is not None:
                    progress(reply.host, len(gathered), len(expected) if expected else None)
        finally:
            del self._waiting[command.id]
        return BroadcastResult(gathered, expected, time.monotonic() - started)

    async def lookup_by_name(self, host: str, name: str) -> Domain:
        return await self._lookup(host, {"name": name})

    async def lookup_by_uuid(self, host: str, domain_uuid: uuid.UUID | str) -> Domain:
        return await self._lookup(host, {"uuid": str(domain_uuid)})

    async def lookup_by_id(self, host: str, domain_id: int) -> Domain:
        return await self._lookup(host, {"id": domain_id})

    async def _lookup(self, host: str, target: dict[str, Any]) -> Domain:
        record = await self._call(DomainRecord, host, "domain.lookup", target=target)
        return Domain(self, host, record)

    async def define(self, host: str, spec: DomainSpec | dict[str, Any]) -> Domain:
        record = await self._call(DomainRecord, host, "domain.define", {"spec": _spec(spec)})
        return Domain(self, host, record)

    async def create_xml(
        self, host: str, spec: DomainSpec | dict[str, Any], start_paused: bool = False
    ) -> Domain:
        args = {"spec": _spec(spec), "start_paused": start_paused}
        record = await self._call(DomainRecord, host, "domain.create_xml", args)
        return Domain(self, host, record)

    async def list_all_domains(self, host: str, flags: Iterable[ListFlag] = ()) -> list[Domain]:
        listed = await self._call(DomainList, host, "host.list_domains", {"flags": list(flags)})
        return [Domain(self, host, record) for record in listed.domains]

    async def host_info(self, host: str) -> HostInfo:
        return await self._call(HostInfo, host, "host.get_info")

    async def ping(self, host: str) -> Pong:
        return await self._call(Pong, host, "host.ping")

    def events(
        self,
        host: str = "*",
        domain: str | None = None,
        kind: EventKind | None = None,
        event: str | None = None,
    ) -> EventStream:
        """Events filtered by host, domain name, kind and lifecycle event: what routing
        keys can say is filtered by the broker, the domain here."""
        return EventStream(self.channel, host, domain, kind, event)

    def hosts(self, misses: int = 3, discover_s: float = 1.0) -> HostRegistry:
        """A live registry of the fleet, fed by presence events."""
        return HostRegistry(self, misses, discover_s)

    async def domain_event_register_any(
        self,
        host: str,
        domain: str | None,
        event_id: EventId,
        callback: Callable[[Event], Awaitable[None] | None],
    ) -> int:
        """Call ``callback`` for each event of ``event_id`` (as libvirt's
        virConnectDomainEventRegisterAny); returns the id to deregister with."""
        stream = self.events(host, domain, _KINDS[event_id])
        await stream.start()

        async def deliver() -> None:
            async with contextlib.AsyncExitStack() as stack:
                stack.push_async_callback(stream.stop)
                async for item in stream:
                    try:
                        outcome = callback(item)
                        if outcome is not None:
                            await outcome
                    except Exception:
                        log.exception("event callback %d failed on %s", callback_id, item)

        callback_id = self._next_callback
        self._next_callback += 1
        self._callbacks[callback_id] = asyncio.create_task(deliver())
        return callback_id

    async def domain_event_deregister_any(self, callback_id: int) -> None:
        task = self._callbacks.pop(callback_id, None)
        if task is None:
            raise VirtbusError.of(
                ErrorCode.INVALID_ARG, f"callback {callback_id} is not registered"
            )
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def connect(
    url: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    signing_key: SigningKey | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Connection:
    """``async with connect(url) as conn``: one connection for every call. With a
    ``signing_key`` (``SigningKey.parse("orch1=ed25519:/path/key.pem")``), every command
    is signed with it; for ``amqps`` URLs, ``ssl_context`` (``agent.tls.client_context``)
    sets the CA and client certificate."""
    return Connection(url, timeout_s, signing_key, ssl_context)


def _until(deadline: datetime | None) -> float | None:
    """Seconds left before ``deadline``, never below 0 (an expiration of 0 lets only a
    consumer that is ready take the message)."""
    return None if deadline is None else max(0.0, (deadline - datetime.now(UTC)).total_seconds())


def _spec(spec: DomainSpec | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec, DomainSpec):
        return spec.model_dump(mode="json", exclude_none=True)
    return spec


class Domain:
    """A domain on one host, as virDomainPtr: its methods send commands by UUID, so a
    rename does not lose it. ``record`` is the domain as the last reply described it."""

    def __init__(self, conn: Connection, host: str, record: DomainRecord) -> None:
        self._conn = conn
        self.host = host
        self.record = record

    def __repr__(self) -> str:
        return f"Domain(host={self.host!r}, name={self.name!r}, uuid='{self.uuid}')"

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def uuid(self) -> uuid.UUID:
        return self.record.uuid

    @property
    def id(self) -> int:
        return self.record.id

    async def _record(self, op: str, args: dict[str, Any] | None = None) -> DomainRecord:
        self.record = await self._conn._call(
            DomainRecord, self.host, op, args, {"uuid": str(self.uuid)}
        )
        return self.record

    async def refresh(self) -> DomainRecord:
        return await self._record("domain.lookup")

    async def create(self, start_paused: bool = False) -> DomainRecord:
        return await self._record("domain.create", {"start_paused": start_paused})

    async def shutdown(self, timeout_s: int = 10) -> DomainRecord:
        return await self._record("domain.shutdown", {"timeout_s": timeout_s})

    async def destroy(self) -> DomainRecord:
        return await self._record("domain.destroy")

    async def reboot(self) -> DomainRecord:
        return await self._record("domain.reboot")

    async def suspend(self) -> DomainRecord:
        return await self._record("domain.suspend")

    async def resume(self) -> DomainRecord:
        return await self._record("domain.resume")

    async def undefine(self) -> DomainRecord:
        return await self._record("domain.undefine")

    async def set_autostart(self, autostart: bool) -> DomainRecord:
        return await self._record("domain.set_autostart", {"autostart": autostart})

    async def set_memory(self, memory_kib: int) -> DomainRecord:
        return await self._record("domain.set_memory", {"memory_kib": memory_kib})

    async def set_vcpus(self, vcpus: int) -> DomainRecord:
        return await self._record("domain.set_vcpus", {"vcpus": vcpus})

    async def rename(self, new_name: str) -> DomainRecord:
        return await self._record("domain.rename", {"new_name": new_name})

    async def info(self) -> DomainInfo:
        target = {"uuid": str(self.uuid)}
        return await self._conn._call(DomainInfo, self.host, "domain.get_info", target=target)

    async def state(self) -> DomainStateInfo:
        target = {"uuid": str(self.uuid)}
        return await self._conn._call(DomainStateInfo, self.host, "domain.get_state", target=target)

    async def xml_desc(self, inactive: bool = False) -> str:
        """virDomainGetXMLDesc: the domain's libvirt domain XML; ``inactive`` for the
        definition it will have at its next start."""
        args, target = {"inactive": inactive}, {"uuid": str(self.uuid)}
        described = await self._conn._call(
            DomainXml, self.host, "domain.get_xml_desc", args, target
        )
        return described.xml


def binding_keys(host: str, kind: EventKind | None, event: str | None) -> list[str]:
    """The routing-key patterns that select the events asked for."""
    if event is not None:
        return [f"{host}.lifecycle.{event}.*"]
    by_kind = {
        "lifecycle": f"{host}.lifecycle.#",
        "reboot": f"{host}.reboot",
        "tunable": f"{host}.tunable",
        "agent": f"{host}.agent.*",
    }
    if kind is not None:
        return [by_kind[kind]]
    return [by_kind["lifecycle"], by_kind["reboot"], by_kind["tunable"]]


class EventStream:
    """Events as they arrive, from the moment ``start`` returns (or ``async with``)."""

    def __init__(
        self,
        channel: AbstractChannel,
        host: str,
        domain: str | None,
        kind: EventKind | None,
        event: str | None,
    ) -> None:
        if event is not None and kind not in (None, "lifecycle"):
            raise VirtbusError.of(ErrorCode.INVALID_ARG, "an event name needs kind lifecycle")
        self._channel = channel
        self._keys = binding_keys(host, kind, event)
        self._domain = domain
        self._arrived: asyncio.Queue[Event] = asyncio.Queue()
        self._queue: AbstractQueue | None = None
        self._consumer = ""

    async def __aenter__(self) -> EventStream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        exchange = await self._channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self._keys:
            await self._queue.bind(exchange, routing_key=key)
        self._consumer = await self._queue.consume(self._on_event, no_ack=True)

    async def stop(self) -> None:
        """Stop listening; the stream's queue goes with it."""
        queue, self._queue = self._queue, None
        if queue is not None and not self._channel.is_closed:
            with contextlib.suppress(aio_pika.exceptions.AMQPError, RuntimeError):
                await queue.cancel(self._consumer)
                await queue.delete(if_unused=False, if_empty=False)

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        try:
            event = EVENT_ADAPTER.validate_json(message.body)
        except ValidationError:
            return
        if self._domain is None or (
            isinstance(event, DomainEventBase) and event.domain.name == self._domain
        ):
            self._arrived.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._arrived.get()

    async def next(self, timeout_s: float) -> Event:
        """The next event, or OPERATION_TIMEOUT."""
        try:
            return await asyncio.wait_for(self._arrived.get(), timeout_s)
        except TimeoutError:
            raise VirtbusError.of(
                ErrorCode.OPERATION_TIMEOUT, f"no event within {timeout_s:g} s"
            ) from None


HostState = Literal["alive", "offline", "lost"]


@dataclass
class HostStatus:
    host: str
    state: HostState
    last_seen: datetime
    agent_version: str = ""
    groups: list[str] = field(default_factory=list)
    heartbeat_s: float = 10.0
    domains: int = 0


class HostRegistry:
    """The fleet as presence events tell it: a host that misses ``misses`` heartbeats in
    a row is lost; one that said goodbye is offline. ``async with conn.hosts() as fleet``
    also asks every agent to introduce itself, for ``discover_s``."""

    def __init__(self, conn: Connection, misses: int, discover_s: float) -> None:
        self._conn = conn
        self._misses = misses
        self._discover_s = discover_s
        self.hosts: dict[str, HostStatus] = {}
        self._changed = asyncio.Condition()
        self._stream = conn.events(kind="agent")
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> HostRegistry:
        await self._stream.start()
        self._tasks = [
            asyncio.create_task(self._follow()),
            asyncio.create_task(self._watch()),
        ]
        if self._discover_s > 0:
            await self.discover(self._discover_s)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stream.stop()

    async def discover(self, timeout_s: float) -> None:
        """Ask every agent for its host facts; the answers join the registry."""
        result = await self._conn.broadcast("host.get_info", timeout_s=timeout_s)
        now = datetime.now(UTC)
        async with self._changed:
            for host, reply in result.replies.items():
                if isinstance(reply.result, HostInfo):
                    info = reply.result
                    self.hosts[host] = HostStatus(
                        host=host,
                        state="alive",
                        last_seen=now,
                        agent_version=info.agent_version,
                        groups=list(info.groups),
                        heartbeat_s=info.heartbeat_s,
                        domains=info.domains.total,
                    )
            self._changed.notify_all()

    def alive(self, group: str | None = None) -> set[str]:
        return {
            s.host
            for s in self.hosts.values()
            if s.state == "alive" and (group is None or group in s.groups)
        }

    async def wait_for(
        self, predicate: Callable[[dict[str, HostStatus]], bool], timeout_s: float
    ) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.hosts)), timeout_s)

    async def _follow(self) -> None:
        async for event in self._stream:
            if isinstance(event, AgentEvent):
                await self._seen(event)

    async def _seen(self, event: AgentEvent) -> None:
        states: dict[Presence, HostState] = {
            "online": "alive",
            "heartbeat": "alive",
            "offline": "offline",
        }
        async with self._changed:
            self.hosts[event.host] = HostStatus(
                host=event.host,
                state=states[event.state],
                last_seen=event.time,
                agent_version=event.agent_version,
                groups=list(event.groups),
                heartbeat_s=event.heartbeat_s,
                domains=event.domains,
            )
            self._changed.notify_all()

    async def _watch(self) -> None:
        while True:
            beats = [s.heartbeat_s for s in self.hosts.values()]
            await asyncio.sleep(max(min(beats, default=1.0) / 2, 0.05))
            now = datetime.now(UTC)
            async with self._changed:
                for status in self.hosts.values():
                    silent_s = (now - status.last_seen).total_seconds()
                    if status.state == "alive" and silent_s > self._misses * status.heartbeat_s:
                        status.state = "lost"
                        self._changed.notify_all()


__all__ = [
    "BroadcastResult",
    "Connection",
    "Domain",
    "EventStream",
    "HostRegistry",
    "HostStatus",
    "LifecycleEvent",
    "RebootEvent",
    "TunableEvent",
    "VirtbusError",
    "connect",
]
