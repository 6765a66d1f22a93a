"""One connection to the broker: commands out, replies back, to one host or the fleet."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from types import TracebackType
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
)
from aiormq.abc import DeliveredMessage
from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from agent.client.domain import Domain, spec_args
from agent.client.events import KINDS, EventKind, EventStream
from agent.client.history import EventHistory, Since, StateListener
from agent.client.network import Network, network_args
from agent.client.registry import HostRegistry
from agent.client.replies import parse_reply
from agent.client.storage import StoragePool
from agent.client.streams import Console, open_console
from agent.client.wire import command_message, seconds_until
from agent.errors import (
    BrokerUnreachable,
    NoHost,
    NotConnected,
    OperationTimeout,
    ReplyError,
    VirtbusError,
)
from agent.signing import SigningKey
from schemas.codes import ErrorCode, EventId
from schemas.commands import (
    COMMAND_ADAPTER,
    Command,
    CommandBase,
    CreateXml,
    Define,
    GetAllDomainStats,
    GetCapabilities,
    GetHostInfo,
    GetNodeStats,
    ListDomains,
    ListFlag,
    ListNetworks,
    ListPools,
    Lookup,
    NetworkDefine,
    NetworkListFlag,
    NetworkLookup,
    Ping,
    PoolLookup,
    StatGroup,
    op_of,
)
from schemas.domain import DomainRecord, DomainSpec
from schemas.events import Event, ImagePullEvent
from schemas.network import NetworkRecord, NetworkSpec
from schemas.problems import explain, where
from schemas.replies import (
    DomainList,
    DomainStatsList,
    HostCapabilities,
    HostInfo,
    NetworkList,
    NodeStats,
    Pong,
    Reply,
    Result,
)
from schemas.storage import PoolList, PoolRecord
from schemas.topology import (
    BROADCAST_ALL,
    BROADCAST_EXCHANGE,
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    group_key,
)

DEFAULT_TIMEOUT_S = 30.0
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
"""RabbitMQ's direct reply-to pseudo-queue: replies reach this channel's consumer with
no reply queue in between, and the broker puts a name of this channel in ``reply_to``
(an agent publishes to it through the default exchange, as to any queue)."""
log = logging.getLogger(__name__)
R = TypeVar("R", bound=Result)
Op = type[CommandBase] | str
"""A command model (``Suspend``), or its op name for callers that have one as text."""


def _result(reply: Reply, expected: type[R]) -> R:
    if reply.error is not None:
        raise ReplyError(reply.error, reply.host)
    if not isinstance(reply.result, expected):
        raise VirtbusError.of(
            ErrorCode.INTERNAL_ERROR,
            f"host {reply.host} answered {type(reply.result).__name__}, "
            f"expected {expected.__name__}",
            reply.host,
        )
    return reply.result


class _Envelope(TypedDict):
    host: str
    ok: bool


_ENVELOPE = TypeAdapter(_Envelope)
"""What a gather reads of each reply: who answered, and whether it failed."""


@dataclass(frozen=True)
class BroadcastResult:
    """The replies to one fleet-wide command, by host, and who stayed silent.

    Gathering reads only each reply's host and outcome; ``replies`` validates them into
    ``Reply`` models when first read (one that does not validate is left out and logged),
    ``failed`` only the failed ones."""

    bodies: dict[str, bytes]
    """Each host's reply as it arrived (the last one, if a host answered twice)."""
    succeeded: frozenset[str]
    expected: frozenset[str] | None
    elapsed_s: float

    @property
    def missing(self) -> frozenset[str]:
        """Expected hosts that did not answer in time."""
        return (self.expected or frozenset()) - self.bodies.keys()

    @cached_property
    def replies(self) -> dict[str, Reply]:
        return self._parse(self.bodies)

    @property
    def failed(self) -> dict[str, Reply]:
        return self._parse({h: b for h, b in self.bodies.items() if h not in self.succeeded})

    def _parse(self, bodies: dict[str, bytes]) -> dict[str, Reply]:
        if "replies" in self.__dict__:
            return {host: self.replies[host] for host in bodies if host in self.replies}
        parsed: dict[str, Reply] = {}
        for host, body in bodies.items():
            try:
                parsed[host] = Reply.model_validate_json(body)
            except ValidationError as error:
                log.warning("host %s answered with an invalid reply: %s", host, _in_words(error))
        return parsed


Progress = Callable[[str, int, int | None], None]
"""Called as each host answers: (host, answered so far, expected or None)."""
PullWatcher = Callable[[ImagePullEvent], None]
"""Called with each progress event of the image pull a command started."""
PULLING_OPS: frozenset[type[CommandBase]] = frozenset({Define, CreateXml})
"""The ops whose host may pull an image before answering."""


class Connection:
    """One connection to the broker and one channel, shared by every call; replies come
    back by RabbitMQ's direct reply-to, on that channel."""

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
        self._replies_ready = asyncio.Event()
        """Set while the channel has its reply consumer (cleared while it is reopened)."""
        self._waiting: dict[str, Callable[[bytes], None]] = {}
        self._pull_queue: AbstractQueue | None = None
        self._pull_hosts: set[str] = set()
        self._pull_watchers: dict[str, PullWatcher] = {}
        self._callbacks: dict[int, asyncio.Task[None] | None] = {}
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
        """Connect and start listening for replies; BrokerUnreachable if the broker
        cannot be reached or refuses."""
        try:
            self._connection = await aio_pika.connect_robust(
                self._url,
                ssl_context=self._ssl_context,
                client_properties={"connection_name": "virtbus client"},
            )
            # a command nobody's queue takes comes back (mandatory), and raises
            channel = await self._connection.channel(on_return_raises=True)
            self._channel = channel
            await self._consume_replies()
            if isinstance(channel, AbstractRobustChannel):
                # a reopened channel has a new direct reply-to name and no consumer
                channel.close_callbacks.add(lambda *_: self._replies_ready.clear())
                channel.reopen_callbacks.add(self._consume_replies)
        except (OSError, aio_pika.exceptions.AMQPError) as error:
            await self.close()
            raise BrokerUnreachable(f"cannot reach the broker: {error}") from None

    async def close(self) -> None:
        tasks = [task for task in self._callbacks.values() if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._callbacks.clear()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise NotConnected()
        return self._channel

    async def _consume_replies(self, _: object = None) -> None:
        """Consume direct replies (no ack, as the broker requires) on the channel the
        commands are published on. On the underlying channel: a reply costs no
        ``IncomingMessage`` and no second task."""
        self._replies_ready.clear()
        underlay = await self.channel.get_underlay_channel()
        await underlay.basic_consume(DIRECT_REPLY_TO, self._on_reply, no_ack=True)
        self._replies_ready.set()

    async def _on_reply(self, message: DeliveredMessage) -> None:
        waiting = self._waiting.get(message.header.properties.correlation_id or "")
        if waiting is not None:
            waiting(message.body)

    async def _on_pull(self, message: AbstractIncomingMessage) -> None:
        try:
            progress = ImagePullEvent.model_validate_json(message.body)
        except ValidationError:
            return
        watcher = self._pull_watchers.get(progress.cause or "")
        if watcher is not None:
            watcher(progress)

    async def _follow_pulls(self, host: str) -> None:
        """Have ``host``'s pull progress events come to this connection: a queue of its
        own, declared the first time a command may pull (direct reply-to takes replies
        only)."""
        if host in self._pull_hosts:
            return
        try:
            if self._pull_queue is None:
                self._pull_queue = await self.channel.declare_queue(
                    exclusive=True, auto_delete=True
                )
                await self._pull_queue.consume(self._on_pull, no_ack=True)
            exchange = await self.channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
            await self._pull_queue.bind(exchange, routing_key=f"{host}.image.pull")
        except (OSError, aio_pika.exceptions.AMQPError) as error:
            raise BrokerUnreachable(f"cannot bind to the broker's events: {error}") from None
        self._pull_hosts.add(host)

    def command(
        self,
        op: Op,
        args: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Command:
        """Build and validate a command; bad input raises INVALID_ARG here (domain XML
        that cannot be read, its XmlError), not on a host."""
        document: dict[str, Any] = {
            "v": 1,
            "id": uuid.uuid4().hex,
            "op": op if isinstance(op, str) else op_of(op),
            "deadline": datetime.now(UTC) + timedelta(seconds=timeout_s or self.timeout_s),
        }
        if args is not None:
            document["args"] = args
        if target is not None:
            document["target"] = target
        try:
            return COMMAND_ADAPTER.validate_python(document)
        except ValidationError as error:
            raise VirtbusError.of(ErrorCode.INVALID_ARG, _in_words(error)) from None

    async def _publish(
        self, command: Command, exchange: str, routing_key: str, unroutable: str
    ) -> None:
        """Publish ``command``, mandatory: NoHost with ``unroutable`` as its detail if no
        queue takes it (the broker returns it at once)."""
        if self._channel is None:
            raise NotConnected()
        if not self._replies_ready.is_set():
            try:
                # a lost channel being reopened: wait as long as the command may wait
                await asyncio.wait_for(self._replies_ready.wait(), seconds_until(command.deadline))
            except TimeoutError:
                raise BrokerUnreachable("the channel to the broker was not reopened") from None
        target = await self.channel.get_exchange(exchange, ensure=False)
        body = command.model_dump_json(exclude_none=True).encode()
        headers: dict[str, Any] = {}
        if self._signing_key is not None:
            headers = self._signing_key.headers(body, exchange, routing_key, command.id, command.id)
        try:
            message = command_message(
                body,
                command.id,
                DIRECT_REPLY_TO,
                command.deadline,
                headers,
                # a broadcast is answered now or never (its replies go to this channel):
                # transient, it touches no host queue's disk
                persistent=exchange != BROADCAST_EXCHANGE,
            )
            await target.publish(
                message,
                routing_key=routing_key,
                mandatory=True,
            )
        except aio_pika.exceptions.PublishError:
            host = None if exchange == BROADCAST_EXCHANGE else routing_key
            raise NoHost(unroutable, host) from None
        except (OSError, aio_pika.exceptions.AMQPError) as error:
            raise BrokerUnreachable(f"cannot publish to the broker: {error}") from None

    async def request(
        self,
        host: str,
        command: Command,
        timeout_s: float | None = None,
        on_pull: PullWatcher | None = None,
    ) -> Reply:
        """Send one command to one host and return its reply, error or not. NoHost at
        once if the broker has no queue for ``host`` (no agent of that name ever started
        on it); OperationTimeout if no reply comes in time.

        A command that makes its host pull an image (``PULLING_OPS``) gets its reply
        when the pull and the command are done, however long that takes: each progress
        event of the pull (given to ``on_pull``) starts the timeout again, so only
        ``timeout_s`` without a reply or any progress is a timeout."""
        timeout = timeout_s or self.timeout_s
        answers: asyncio.Queue[Reply | ImagePullEvent] = asyncio.Queue()

        def take(body: bytes) -> None:
            try:
                answers.put_nowait(parse_reply(body))
            except ValidationError:
                return

        self._waiting[command.id] = take
        if type(command) in PULLING_OPS:
            self._pull_watchers[command.id] = answers.put_nowait
        try:
            await self._publish(
                command,
                COMMANDS_EXCHANGE,
                host,
                f"host '{host}' has no queue on the broker: no agent of that name has started",
            )
            if type(command) in PULLING_OPS:
                await self._follow_pulls(host)
            while True:
                try:
                    answer = await asyncio.wait_for(answers.get(), timeout)
                except TimeoutError:
                    raise OperationTimeout(
                        f"no reply from host {host} to {command.op} within {timeout:g} s", host
                    ) from None
                if isinstance(answer, Reply):
                    return answer
                if on_pull is not None:
                    on_pull(answer)
        finally:
            del self._waiting[command.id]
            self._pull_watchers.pop(command.id, None)

    async def call(
        self,
        host: str,
        op: Op,
        args: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        on_pull: PullWatcher | None = None,
    ) -> Result:
        """The result of one command on one host; an error reply raises ReplyError.
        ``on_pull``: as ``request``'s."""
        command = self.command(op, args, target, timeout_s)
        reply = await self.request(host, command, timeout_s, on_pull)
        if reply.error is not None:
            raise ReplyError(reply.error, reply.host)
        assert reply.result is not None
        return reply.result

    async def _call(
        self,
        expected: type[R],
        host: str,
        op: type[CommandBase],
        args: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
    ) -> R:
        reply = await self.request(host, self.command(op, args, target))
        return _result(reply, expected)

    async def broadcast(
        self,
        op: Op,
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
        passed; without ``expect`` it gathers for the whole ``timeout_s``. NoHost at once
        if no host is in ``group`` (or, without a group, no host at all).
        """
        expected = frozenset(expect) if expect is not None else None
        command = self.command(op, args, target, timeout_s)
        gathered: dict[str, bytes] = {}
        succeeded: set[str] = set()
        complete: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outstanding = set(expected) if expected is not None else None

        def take(body: bytes) -> None:
            try:
                reply = _ENVELOPE.validate_json(body)
            except ValidationError:
                return
            host = reply["host"]
            gathered[host] = body
            if reply["ok"]:
                succeeded.add(host)
            else:
                succeeded.discard(host)
            if progress is not None:
                try:
                    progress(host, len(gathered), len(expected) if expected else None)
                except Exception as error:  # fails the broadcast, in its caller
                    if not complete.done():
                        complete.set_exception(error)
                    return
            if outstanding is not None:
                outstanding.discard(host)
                if not outstanding and not complete.done():
                    complete.set_result(None)

        started = time.monotonic()
        self._waiting[command.id] = take
        try:
            await self._publish(
                command,
                BROADCAST_EXCHANGE,
                group_key(group) if group else BROADCAST_ALL,
                f"no host is in group '{group}'" if group else "no host is on the broker",
            )
            if outstanding is None or outstanding or complete.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(complete, timeout_s - (time.monotonic() - started))
        finally:
            del self._waiting[command.id]
        return BroadcastResult(gathered, frozenset(succeeded), expected, time.monotonic() - started)

    async def lookup_by_name(self, host: str, name: str) -> Domain:
        return await self._lookup(host, {"name": name})

    async def lookup_by_uuid(self, host: str, domain_uuid: uuid.UUID | str) -> Domain:
        return await self._lookup(host, {"uuid": str(domain_uuid)})

    async def lookup_by_id(self, host: str, domain_id: int) -> Domain:
        return await self._lookup(host, {"id": domain_id})

    async def _lookup(self, host: str, target: dict[str, Any]) -> Domain:
        record = await self._call(DomainRecord, host, Lookup, target=target)
        return Domain(self, host, record)

    async def define(
        self, host: str, spec: DomainSpec | dict[str, Any], on_pull: PullWatcher | None = None
    ) -> Domain:
        """virDomainDefineXML; a pull of the spec's image reports to ``on_pull`` and
        extends the wait for the reply (``request``)."""
        reply = await self.request(
            host, self.command(Define, {"spec": spec_args(spec)}), on_pull=on_pull
        )
        return Domain(self, host, _result(reply, DomainRecord))

    async def create_xml(
        self,
        host: str,
        spec: DomainSpec | dict[str, Any],
        start_paused: bool = False,
        on_pull: PullWatcher | None = None,
    ) -> Domain:
        """virDomainCreateXML; ``on_pull`` as ``define``'s."""
        args = {"spec": spec_args(spec), "start_paused": start_paused}
        reply = await self.request(host, self.command(CreateXml, args), on_pull=on_pull)
        return Domain(self, host, _result(reply, DomainRecord))

    async def list_all_domains(self, host: str, flags: Iterable[ListFlag] = ()) -> list[Domain]:
        listed = await self._call(DomainList, host, ListDomains, {"flags": list(flags)})
        return [Domain(self, host, record) for record in listed.domains]

    async def define_network(self, host: str, spec: NetworkSpec | dict[str, Any] | str) -> Network:
        """virNetworkDefineXML: ``spec`` a NetworkSpec, its fields, or network XML."""
        record = await self._call(NetworkRecord, host, NetworkDefine, network_args(spec))
        return Network(self, host, record)

    async def network_lookup_by_name(self, host: str, name: str) -> Network:
        record = await self._call(NetworkRecord, host, NetworkLookup, target={"name": name})
        return Network(self, host, record)

    async def network_lookup_by_uuid(self, host: str, network_uuid: uuid.UUID | str) -> Network:
        target = {"uuid": str(network_uuid)}
        record = await self._call(NetworkRecord, host, NetworkLookup, target=target)
        return Network(self, host, record)

    async def list_all_networks(
        self, host: str, flags: Iterable[NetworkListFlag] = ()
    ) -> list[Network]:
        listed = await self._call(NetworkList, host, ListNetworks, {"flags": list(flags)})
        return [Network(self, host, record) for record in listed.networks]

    async def list_all_storage_pools(self, host: str) -> list[StoragePool]:
        listed = await self._call(PoolList, host, ListPools)
        return [StoragePool(self, host, record) for record in listed.pools]

    async def storage_pool_lookup_by_name(self, host: str, name: str) -> StoragePool:
        record = await self._call(PoolRecord, host, PoolLookup, {"pool": name})
        return StoragePool(self, host, record)

    async def host_info(self, host: str) -> HostInfo:
        return await self._call(HostInfo, host, GetHostInfo)

    async def ping(self, host: str) -> Pong:
        return await self._call(Pong, host, Ping)

    async def get_all_domain_stats(
        self, host: str, groups: Iterable[StatGroup] = (), flags: Iterable[ListFlag] = ()
    ) -> DomainStatsList:
        """virConnectGetAllDomainStats: one record per domain ``flags`` select (as
        ``list_all_domains``), each with libvirt's keys of ``groups`` (none: libvirt's
        groups and ``pids``) and the time it was read."""
        args = {"groups": list(groups), "flags": list(flags)}
        return await self._call(DomainStatsList, host, GetAllDomainStats, args)

    async def capabilities(self, host: str, virttype: str = "docker") -> HostCapabilities:
        """virConnectGetCapabilities, GetDomainCapabilities (for ``virttype``) and
        GetSysinfo: the host's three XML documents."""
        return await self._call(HostCapabilities, host, GetCapabilities, {"virttype": virttype})

    async def node_stats(self, host: str) -> NodeStats:
        """virNodeGetMemoryStats and virNodeGetCPUStats of the host."""
        return await self._call(NodeStats, host, GetNodeStats)

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

    def history(
        self,
        since: Since,
        host: str = "*",
        domain: str | None = None,
        kind: EventKind | None = None,
        event: str | None = None,
        presence: bool = False,
        on_state: StateListener | None = None,
        last: int | None = None,
    ) -> EventHistory:
        """The fleet's recorded events from ``since`` (an offset of the history, a time,
        ``"first"``, ``"next"``), then live, on a connection of its own that survives a
        broker restart; filtered as ``events`` (``presence``: with the agents' arrivals
        and goodbyes); with ``last``, no more than the history's newest ``last`` events.
        Yields ``Replayed(offset, event)``."""
        return EventHistory(
            self._url,
            since,
            host=host,
            domain=domain,
            kind=kind,
            event=event,
            presence=presence,
            last=last,
            ssl_context=self._ssl_context,
            on_state=on_state,
        )

    def hosts(self, misses: int = 3, discover_s: float = 1.0) -> HostRegistry:
        """A live registry of the fleet, fed by presence events."""
        return HostRegistry(self, misses, discover_s)

    async def open_console(self, host: str, target: dict[str, Any], force: bool = False) -> Console:
        """virDomainOpenConsole on the domain ``target`` names (agent/client/streams.py)."""
        return await open_console(self, host, target, force)

    async def domain_event_register_any(
        self,
        host: str,
        domain: str | None,
        event_id: EventId | int,
        callback: Callable[[Event], Awaitable[None] | None],
    ) -> int:
        """Call ``callback`` for each event of ``event_id`` (as libvirt's
        virConnectDomainEventRegisterAny); returns the id to deregister with. An event
        id the bus carries no events for registers a callback that is never called, as
        libvirt's drivers that never emit it."""
        return await self.subscribe(host, domain, KINDS.get(event_id), callback)

    async def network_event_register_any(
        self, host: str, callback: Callable[[Event], Awaitable[None] | None]
    ) -> int:
        """Call ``callback`` for each network lifecycle event of ``host`` (as libvirt's
        virConnectNetworkEventRegisterAny); deregister with domain_event_deregister_any."""
        return await self.subscribe(host, None, "network", callback)

    async def subscribe(
        self,
        host: str,
        domain: str | None,
        kind: EventKind | None,
        callback: Callable[[Event], Awaitable[None] | None],
    ) -> int:
        """Call ``callback`` for each event of ``kind`` (never, for None); returns the
        id to deregister with (``domain_event_deregister_any``)."""
        callback_id = self._next_callback
        self._next_callback += 1
        if kind is None:
            self._callbacks[callback_id] = None
            return callback_id
        stream = self.events(host, domain, kind)
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

        self._callbacks[callback_id] = asyncio.create_task(deliver())
        return callback_id

    async def domain_event_deregister_any(self, callback_id: int) -> None:
        if callback_id not in self._callbacks:
            raise VirtbusError.of(
                ErrorCode.INVALID_ARG, f"callback {callback_id} is not registered"
            )
        task = self._callbacks.pop(callback_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _in_words(error: ValidationError) -> str:
    """A command's validation errors, each field named as the caller wrote it in ``args``
    (``spec.mounts[0].source``), what was given and what is expected."""
    named = []
    for item in error.errors(include_url=False):
        loc = item["loc"][1:]  # the op, which picked the model
        loc = loc[1:] if loc[:1] == ("args",) else loc
        named.append(f"{where(loc) or 'command'}: {explain(item)}")
    return "; ".join(named)


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
