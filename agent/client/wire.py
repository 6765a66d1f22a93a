"""One command as JSON, without the models: the bus as the ``virtbus`` CLI's one-command
verbs use it, so that a process which sends one command loads aio-pika and nothing of
pydantic.

The message is the one ``Connection`` publishes: persistent, mandatory, with publisher
confirms, the deadline as its AMQP expiration, signed when a key is given, replies on an
exclusive queue of the connection's own. A host (or group) with no queue raises NoHost
at once, an error reply ReplyError, no reply in time OperationTimeout, a broker out of
reach BrokerUnreachable. Nothing is validated here: the caller sends a command it knows
to be valid (the CLI checks its arguments, and validates with the models when it cannot
tell); the agent validates every command anyway.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from schemas.names import BROADCAST_ALL, BROADCAST_EXCHANGE, COMMANDS_EXCHANGE, group_key

if TYPE_CHECKING:
    from agent.errors import ReplyError
    from agent.signing import SigningKey

# agent.errors (and its ErrorCode enum) is loaded only when something fails: a command
# that succeeds costs no more than aio-pika

Document = dict[str, Any]
"""A command or a reply, as decoded JSON."""


class WireError(NamedTuple):
    """A reply's error, as ReplyError reads it."""

    vir_error: int
    message: str


def command_message(
    body: bytes,
    command_id: str,
    reply_to: str,
    deadline: datetime | None,
    headers: dict[str, Any],
    persistent: bool = True,
) -> aio_pika.Message:
    """A command as virtbus publishes it: persistent unless told (a broadcast), its
    deadline as the broker's TTL too (a command nobody took in time leaves the queue,
    dead-lettered as expired)."""
    return aio_pika.Message(
        body,
        content_type="application/json",
        message_id=command_id,
        correlation_id=command_id,
        reply_to=reply_to,
        delivery_mode=(
            aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
        ),
        headers=headers,
        expiration=seconds_until(deadline),
        timestamp=datetime.now(UTC),
    )


def seconds_until(deadline: datetime | None) -> float | None:
    """Seconds left before ``deadline``, never below 0 (an expiration of 0 lets only a
    consumer that is ready take the message)."""
    return None if deadline is None else max(0.0, (deadline - datetime.now(UTC)).total_seconds())


def reply_error(reply: Document) -> ReplyError | None:
    """The error a decoded reply carries, or None if it succeeded."""
    error = reply.get("error")
    if not isinstance(error, dict):
        return None
    from agent.errors import ReplyError

    body = WireError(int(error.get("vir_error", 1)), str(error.get("message", "")))
    return ReplyError(body, str(reply.get("host", "")))


class WireConnection:
    """One connection, one confirming channel, one reply queue; ``async with``."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        signing_key: SigningKey | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._url = url
        self.timeout_s = timeout_s
        self._signing_key = signing_key
        self._ssl_context = ssl_context
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._reply_to = ""
        self._waiting: dict[str, asyncio.Queue[Document]] = {}

    async def __aenter__(self) -> WireConnection:
        try:
            self._connection = await aio_pika.connect(
                self._url,
                ssl_context=self._ssl_context,
                client_properties={"connection_name": "virtbus client"},
            )
            self._channel = await self._connection.channel(on_return_raises=True)
            queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.consume(self._on_reply, no_ack=True)
            self._reply_to = queue.name
        except (OSError, aio_pika.exceptions.AMQPError) as error:
            from agent.errors import BrokerUnreachable

            await self._close()
            raise BrokerUnreachable(f"cannot reach the broker: {error}") from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiting = self._waiting.get(message.correlation_id or "")
        if waiting is None:
            return
        try:
            reply = json.loads(message.body)
        except ValueError:
            return
        if isinstance(reply, dict) and isinstance(reply.get("host"), str):
            waiting.put_nowait(reply)

    def command(
        self,
        op: str,
        args: Document | None,
        target: Document | None,
        timeout_s: float | None = None,
    ) -> Document:
        """A command document: the envelope, its deadline ``timeout_s`` from now."""
        deadline = datetime.now(UTC) + timedelta(seconds=timeout_s or self.timeout_s)
        document: Document = {"v": 1, "id": uuid.uuid4().hex, "op": op, "deadline": deadline}
        if args is not None:
            document["args"] = args
        if target is not None:
            document["target"] = target
        return document

    async def _publish(
        self, command: Document, exchange: str, routing_key: str, unroutable: str
    ) -> None:
        if self._channel is None:
            from agent.errors import NotConnected

            raise NotConnected()
        body = json.dumps(command, default=datetime.isoformat).encode()
        headers: dict[str, Any] = {}
        if self._signing_key is not None:
            headers = self._signing_key.headers(
                body, exchange, routing_key, command["id"], command["id"]
            )
        message = command_message(body, command["id"], self._reply_to, command["deadline"], headers)
        target = await self._channel.get_exchange(exchange, ensure=False)
        try:
            await target.publish(message, routing_key=routing_key, mandatory=True)
        except aio_pika.exceptions.PublishError:
            from agent.errors import NoHost

            host = None if exchange == BROADCAST_EXCHANGE else routing_key
            raise NoHost(unroutable, host) from None
        except (OSError, aio_pika.exceptions.AMQPError) as error:
            from agent.errors import BrokerUnreachable

            raise BrokerUnreachable(f"cannot publish to the broker: {error}") from None

    async def call(self, host: str, command: Document, timeout_s: float | None = None) -> Any:
        """The result of ``command`` on ``host``, decoded; an error reply raises
        ReplyError."""
        timeout = timeout_s or self.timeout_s
        replies: asyncio.Queue[Document] = asyncio.Queue()
        self._waiting[command["id"]] = replies
        try:
            await self._publish(
                command,
                COMMANDS_EXCHANGE,
                host,
                f"host '{host}' has no queue on the broker: no agent of that name has started",
            )
            try:
                reply = await asyncio.wait_for(replies.get(), timeout)
            except TimeoutError:
                from agent.errors import OperationTimeout

                raise OperationTimeout(
                    f"no reply from host {host} to {command['op']} within {timeout:g} s", host
                ) from None
        finally:
            del self._waiting[command["id"]]
        error = reply_error(reply)
        if error is not None:
            raise error
        return reply.get("result")

    async def broadcast(
        self,
        command: Document,
        group: str | None,
        expect: Iterable[str] | None,
        timeout_s: float,
    ) -> AsyncIterator[Document]:
        """Send ``command`` to every host (or ``group``) and yield each reply as it
        arrives, until every host of ``expect`` has answered or ``timeout_s`` has passed
        (without ``expect``, the whole ``timeout_s``). NoHost at once if no host is in
        ``group`` (or, without a group, none at all)."""
        expected = frozenset(expect) if expect is not None else None
        replies: asyncio.Queue[Document] = asyncio.Queue()
        answered: set[str] = set()
        started = time.monotonic()
        self._waiting[command["id"]] = replies
        try:
            await self._publish(
                command,
                BROADCAST_EXCHANGE,
                group_key(group) if group else BROADCAST_ALL,
                f"no host is in group '{group}'" if group else "no host is on the broker",
            )
            while expected is None or not expected <= answered:
                left = timeout_s - (time.monotonic() - started)
                if left <= 0:
                    break
                try:
                    reply = await asyncio.wait_for(replies.get(), left)
                except TimeoutError:
                    break
                answered.add(reply["host"])
                yield reply
        finally:
            del self._waiting[command["id"]]
