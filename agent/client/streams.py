"""A domain's console from the client's side: this end of a stream session
(agent/streams.py) opened by ``domain.open_console``."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from agent.streams import BusStream, Limits, StreamError
from schemas.codes import ErrorCode
from schemas.commands import OpenConsole
from schemas.replies import ConsoleSession

if TYPE_CHECKING:
    from agent.client.connection import Connection

__all__ = ["Console", "StreamError", "open_console"]


class Console:
    """An open console: ``send`` bytes to the domain's terminal, ``recv`` its output
    (None once the domain's terminal closed), ``finish`` or ``abort`` to end it; ``close``
    always (``async with`` does). StreamError when the agent's end fails or vanishes."""

    def __init__(self, stream: BusStream, session: ConsoleSession) -> None:
        self._stream = stream
        self.session = session

    async def __aenter__(self) -> Console:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, data: bytes) -> None:
        await self._stream.send(data)

    async def recv(self) -> bytes | None:
        return await self._stream.recv()

    async def finish(self) -> None:
        await self._stream.finish()

    async def abort(self, message: str = "the client aborted the console") -> None:
        await self._stream.abort(ErrorCode.OPERATION_ABORTED, message)

    async def close(self) -> None:
        await self._stream.close()


async def open_console(
    conn: Connection, host: str, target: dict[str, Any], force: bool = False
) -> Console:
    """Declare this end's queue, ask the host to attach the domain's console to it, and
    connect to the host's end; the queue is deleted again if the host refuses."""
    stream = await BusStream.open(conn.channel, "pending")
    try:
        reply = await conn._call(
            ConsoleSession,
            host,
            OpenConsole,
            {"queue": stream.queue, "force": force},
            target,
        )
    except BaseException:
        await stream.close()
        raise
    stream.session = reply.session
    stream.limits = Limits(
        max_frame=reply.max_frame, window=reply.window, idle_timeout_s=reply.idle_timeout_s
    )
    stream.connect(reply.queue)
    return Console(stream, reply)
