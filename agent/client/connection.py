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
from types import TracebackType
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from pydantic import ValidationError

from agent.client.domain import Domain, spec_args
from agent.client.events import KINDS, EventKind, EventStream
from agent.client.history import EventHistory, Since, StateListener
from agent.client.network import Network, network_args
from agent.client.registry import HostRegistry
from agent.client.storage import StoragePool
from agent.client.streams import Console, open_console
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
from schemas.events import Event
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
from schemas.topology import BROADCAST_ALL, BROADCAST_EXCHANGE, COMMANDS_EXCHANGE, group_key

DEFAULT_TIMEOUT_S = 30.0
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
            self._channel = await self._connection.channel(on_return_raises=True)
            self._reply_queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
            await self._reply_queue.consume(self._on_reply, no_ack=True)
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
        if self._reply_queue is None:
            raise NotConnected()
        target = await self.channel.get_exchange(exchange, ensure=False)
        body = command.model_dump_json(exclude_none=True).encode()
        headers: dict[str, Any] = {}
        if self._signing_key is not None:
            headers = self._signing_key.headers(body, exchange, routing_key, command.id, command.id)
        try:
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
                mandatory=True,
            )
        except aio_pika.exceptions.PublishError:
            host = None if exchange == BROADCAST_EXCHANGE else routing_key
            raise NoHost(unroutable, host) from None
        except (OSError, aio_pika.exceptions.AMQPError) as error:
            raise BrokerUnreachable(f"cannot publish to the broker: {error}") from None

    async def request(self, host: str, command: Command, timeout_s: float | None = None) -> Reply:
        """Send one command to one host and return its reply, error or not. NoHost at
        once if the broker has no queue for ``host`` (no agent of that name ever started
        on it); OperationTimeout if no reply comes in time."""
        timeout = timeout_s or self.timeout_s
        replies: asyncio.Queue[Reply] = asyncio.Queue()
        self._waiting[command.id] = replies
        try:
            await self._publish(
                command,
                COMMANDS_EXCHANGE,
                host,
                f"host '{host}' has no queue on the broker: no agent of that name has started",
            )
            try:
                return await asyncio.wait_for(replies.get(), timeout)
            except TimeoutError:
                raise OperationTimeout(
                    f"no reply from host {host} to {command.op} within {timeout:g} s", host
                ) from None
        finally:
            del self._waiting[command.id]

    async def call(
        self,
        host: str,
        op: Op,
        args: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Result:
        """The result of one command on one host; an error reply raises ReplyError."""
        reply = await self.request(host, self.command(op, args, target, timeout_s), timeout_s)
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
        replies: asyncio.Queue[Reply] = asyncio.Queue()
        gathered: dict[str, Reply] = {}
        started = time.monotonic()
        self._waiting[command.id] = replies
        try:
            await self._publish(
                command,
                BROADCAST_EXCHANGE,
                group_key(group) if group else BROADCAST_ALL,
                f"no host is in group '{group}'" if group else "no host is on the broker",
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
        record = await self._call(DomainRecord, host, Lookup, target=target)
        return Domain(self, host, record)

    async def define(self, host: str, spec: DomainSpec | dict[str, Any]) -> Domain:
        record = await self._call(DomainRecord, host, Define, {"spec": spec_args(spec)})
        return Domain(self, host, record)

    async def create_xml(
        self, host: str, spec: DomainSpec | dict[str, Any], start_paused: bool = False
    ) -> Domain:
        args = {"spec": spec_args(spec), "start_paused": start_paused}
        record = await self._call(DomainRecord, host, CreateXml, args)
        return Domain(self, host, record)

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
    ) -> EventHistory:
        """The fleet's recorded events from ``since`` (an offset of the history, a time,
        ``"first"``, ``"next"``), then live, on a connection of its own that survives a
        broker restart; filtered as ``events`` (``presence``: with the agents' arrivals
        and goodbyes). Yields ``Replayed(offset, event)``."""
        return EventHistory(
            self._url,
            since,
            host=host,
            domain=domain,
            kind=kind,
            event=event,
            presence=presence,
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


def _until(deadline: datetime | None) -> float | None:
    """Seconds left before ``deadline``, never below 0 (an expiration of 0 lets only a
    consumer that is ready take the message)."""
    return None if deadline is None else max(0.0, (deadline - datetime.now(UTC)).total_seconds())


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
