"""Byte streams across the bus (DESIGN §9): one session, two exclusive queues.

Each end of a session consumes its own exclusive, auto-deleted queue and publishes to
the other's through the default exchange; the op that opens a session answers with
the agent's queue name, the opener having named its own. Both ends speak the same
frames, told apart by the AMQP ``type`` property and tagged with the session id as
``correlation_id``:

    data    up to ``max_frame`` bytes of the stream
    eof     the sender has nothing more to send
    abort   the sender gives up; the body is ``{"code": N, "message": "..."}``
    ack     the receiver has consumed ``n`` more data frames (header ``n``)
    ping    the sender is still there

Guarantees: bytes arrive in order, whole, at most once. Flow control: at most
``window`` data frames travel unacknowledged, so an end never holds more than
``window * max_frame`` bytes for its peer. Liveness: every frame is published
``mandatory``, so a frame for a queue that is gone (its end's connection closed) comes
back and the stream fails at once; an idle end pings every ``ping_s``; an end that hears
nothing for ``idle_timeout_s`` ends the stream; no session outlives ``max_session_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, FieldValue

from schemas.codes import ErrorCode
from schemas.errors import VirtbusError

MAX_FRAME = 64 * 1024
WINDOW = 16
PING_S = 5.0
IDLE_TIMEOUT_S = 20.0
MAX_SESSION_S = 24 * 3600.0
SEND_TIMEOUT_S = 10.0
"""How long a publish may wait for the broker's confirm."""


class StreamError(VirtbusError):
    """The stream failed: the peer aborted, vanished or broke the protocol."""


@dataclass(frozen=True)
class Limits:
    max_frame: int = MAX_FRAME
    window: int = WINDOW
    ping_s: float = PING_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_session_s: float = MAX_SESSION_S


@dataclass(frozen=True)
class Frame:
    kind: str
    data: bytes = b""
    acked: int = 0


def chunks(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into frames of at most ``size`` bytes (none for no data)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


class BusStream:
    """One end of a stream session. ``await BusStream.open(...)`` starts consuming;
    ``close()`` (always) stops and deletes this end's queue, which the peer notices."""

    def __init__(
        self, channel: AbstractChannel, session: str, queue: AbstractQueue, limits: Limits
    ) -> None:
        self.session = session
        self.limits = limits
        self.peer: str | None = None
        self._channel = channel
        self._queue = queue
        self._consumer = ""
        self._frames: asyncio.Queue[Frame] = asyncio.Queue()
        self._credit = asyncio.Condition()
        self._unacked = 0
        self._consumed = 0
        self._heard = time.monotonic()
        self._started = time.monotonic()
        self._failure: StreamError | None = None
        self._ended = False
        self._watch: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()

    @property
    def queue(self) -> str:
        """This end's queue: where the peer sends."""
        return self._queue.name

    @classmethod
    async def open(
        cls, channel: AbstractChannel, session: str, limits: Limits | None = None
    ) -> BusStream:
        """This end's exclusive queue, consumed from now on; ``connect`` names the peer."""
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        stream = cls(channel, session, queue, limits or Limits())
        stream._consumer = await queue.consume(stream._arrived, no_ack=True)
        return stream

    def connect(self, peer: str) -> None:
        """Start talking to the peer's queue (pings and the idle watch start now)."""
        self.peer = peer
        self._heard = time.monotonic()
        self._watch = asyncio.create_task(self._keep_alive(), name=f"stream {self.session}")

    async def _arrived(self, message: AbstractIncomingMessage) -> None:
        if message.correlation_id != self.session:
            return
        self._heard = time.monotonic()
        kind = message.type or ""
        if kind == "ack":
            acked = message.headers.get("n", 0)
            if not isinstance(acked, int) or acked < 0:
                self._fail(ErrorCode.RPC, "stream protocol error: a bad acknowledgement")
                return
            async with self._credit:
                self._unacked = max(0, self._unacked - acked)
                self._credit.notify_all()
            return
        if kind == "ping":
            return
        if kind == "data":
            if len(message.body) > self.limits.max_frame or (
                self._frames.qsize() >= self.limits.window
            ):
                self._fail(ErrorCode.RPC, "stream protocol error: the peer overran the window")
                return
            self._frames.put_nowait(Frame("data", message.body))
        elif kind == "eof":
            self._frames.put_nowait(Frame("eof"))
        elif kind == "abort":
            code, text = _abort_body(message.body)
            self._fail(code, text)
        else:
            self._fail(ErrorCode.RPC, f"stream protocol error: a frame of type {kind!r}")

    def _fail(self, code: ErrorCode, detail: str) -> None:
        if self._failure is None:
            self._failure = StreamError(code, detail)
        self._frames.put_nowait(Frame("failed"))

        async def wake() -> None:
            async with self._credit:
                self._credit.notify_all()

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(wake())

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def recv(self) -> bytes | None:
        """The next bytes from the peer; None once it sent eof. StreamError if the stream
        failed (the peer aborted or vanished)."""
        if self._ended:
            return None
        self._check()
        frame = await self._frames.get()
        if frame.kind == "failed":
            self._frames.put_nowait(frame)
            self._check()
        if frame.kind == "eof":
            self._ended = True
            return None
        self._consumed += 1
        if self._consumed >= max(1, self.limits.window // 2):
            acked, self._consumed = self._consumed, 0
            await self._publish("ack", headers={"n": acked})
        return frame.data

    async def send(self, data: bytes) -> None:
        """Send ``data`` as frames, each once the window has room; StreamError if the
        stream failed."""
        async with self._sending:
            for chunk in chunks(data, self.limits.max_frame):
                async with self._credit:
                    await self._credit.wait_for(
                        lambda: self._failure is not None or self._unacked < self.limits.window
                    )
                    self._check()
                    self._unacked += 1
                await self._publish("data", chunk)

    async def finish(self) -> None:
        """Tell the peer there is nothing more (eof)."""
        await self._publish("eof")

    async def abort(self, code: ErrorCode, message: str) -> None:
        """Tell the peer this end gives up; never raises (the peer may be gone)."""
        if self.peer is None:
            return
        body = json.dumps({"code": int(code), "message": message}).encode()
        with contextlib.suppress(Exception):
            await self._publish("abort", body)

    async def _publish(
        self, kind: str, body: bytes = b"", headers: dict[str, int] | None = None
    ) -> None:
        if self.peer is None:
            raise StreamError(ErrorCode.INTERNAL_ERROR, "the stream is not connected")
        fields: dict[str, FieldValue] = dict(headers or {})
        message = aio_pika.Message(body, type=kind, correlation_id=self.session, headers=fields)
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self._channel.default_exchange.publish(
                    message, routing_key=self.peer, mandatory=True
                )
        except aio_pika.exceptions.DeliveryError:
            self._fail(ErrorCode.OPERATION_FAILED, "the other end of the stream is gone")
            self._check()
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError, RuntimeError) as error:
            self._fail(ErrorCode.OPERATION_FAILED, f"the bus failed: {error or 'timed out'}")
            self._check()

    async def _keep_alive(self) -> None:
        limits = self.limits
        while self._failure is None:
            await asyncio.sleep(min(limits.ping_s, limits.idle_timeout_s / 2))
            now = time.monotonic()
            if now - self._heard > limits.idle_timeout_s:
                self._fail(
                    ErrorCode.OPERATION_TIMEOUT,
                    f"the other end of the stream was silent for {limits.idle_timeout_s:g} s",
                )
            elif now - self._started > limits.max_session_s:
                self._fail(
                    ErrorCode.OPERATION_TIMEOUT,
                    f"the stream reached its limit of {limits.max_session_s:g} s",
                )
            else:
                with contextlib.suppress(StreamError):
                    await self._publish("ping")

    async def close(self) -> None:
        """Stop consuming and delete this end's queue; idempotent."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        if self._failure is None:
            self._failure = StreamError(ErrorCode.OPERATION_INVALID, "the stream is closed")
        if not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer)
                await self._queue.delete(if_unused=False, if_empty=False)


def _abort_body(body: bytes) -> tuple[ErrorCode, str]:
    try:
        document = json.loads(body)
        code = ErrorCode(int(document["code"]))
        return code, str(document["message"]).removeprefix(f"{code.prefix}: ")
    except (ValueError, KeyError, TypeError):
        return ErrorCode.OPERATION_ABORTED, "the other end aborted the stream"
