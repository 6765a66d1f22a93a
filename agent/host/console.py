"""A domain's console: its recent output (as nova's get_console_output), and interactive
sessions that join the domain's terminal to a stream across the bus (agent/streams.py).

One session per domain at a time, as libvirt's LXC driver; ``force`` ends the one open.
A session ends when either side ends it, when the domain's terminal closes (the domain
stopped), when the peer's queue disappears or falls silent, and when the agent stops;
ending it never touches the domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from uuid import UUID

from agent.errors import VirtError, invalid
from agent.host.driver import Terminal
from agent.host.operations import Operations, handles
from agent.streams import BusStream, StreamError
from schemas.codes import ErrorCode
from schemas.commands import GetConsoleOutput, OpenConsole
from schemas.errors import VirtbusError
from schemas.replies import ConsoleOutput, ConsoleSession

log = logging.getLogger(__name__)

MAX_SESSIONS = 64
"""Console sessions open at once on one host."""

OpenStream = Callable[[str], Awaitable[BusStream]]


@dataclass
class Session:
    domain: UUID
    stream: BusStream
    terminal: Terminal
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class Consoles:
    """The open console sessions of one host."""

    def __init__(self, open_stream: OpenStream, limit: int = MAX_SESSIONS) -> None:
        self._open_stream = open_stream
        self._limit = limit
        self._sessions: dict[UUID, Session] = {}
        self._ending: set[asyncio.Future[None]] = set()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._sessions)

    async def wait(self, predicate: Callable[[int], bool], timeout_s: float) -> None:
        """Until the number of open sessions satisfies ``predicate``; TimeoutError after
        ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while not predicate(len(self._sessions)):
                self._changed.clear()
                await self._changed.wait()

    async def open(self, domain: UUID, terminal: Terminal, peer: str, force: bool) -> BusStream:
        """Join ``terminal`` to a new stream whose peer is the queue ``peer``."""
        existing = self._sessions.get(domain)
        if existing is not None:
            if not force:
                raise invalid("Active console session exists for this domain")
            await existing.stream.abort(
                ErrorCode.OPERATION_ABORTED, "the console was taken by another session"
            )
            await self.end(existing)
        if len(self._sessions) >= self._limit:
            raise VirtError(
                ErrorCode.RESOURCE_BUSY, f"this host has {self._limit} console sessions open"
            )
        stream = await self._open_stream(uuid.uuid4().hex)
        stream.connect(peer)
        session = Session(domain, stream, terminal)
        self._sessions[domain] = session
        self._changed.set()
        session.tasks = [
            asyncio.create_task(self._output(session)),
            asyncio.create_task(self._input(session)),
        ]
        for task in session.tasks:
            task.add_done_callback(self._ender(session))
        return stream

    def _ender(self, session: Session) -> Callable[[asyncio.Task[None]], None]:
        def ended(_: asyncio.Task[None]) -> None:
            self._ending.add(task := asyncio.ensure_future(self.end(session)))
            task.add_done_callback(self._ending.discard)

        return ended

    async def _output(self, session: Session) -> None:
        """The terminal's output to the peer, then eof once the terminal closes."""
        try:
            while (data := await session.terminal.read()) is not None:
                await session.stream.send(data)
            await session.stream.finish()
        except VirtbusError as error:
            await session.stream.abort(error.code, error.message)

    async def _input(self, session: Session) -> None:
        """The peer's bytes to the terminal, until the peer ends the stream."""
        try:
            while (data := await session.stream.recv()) is not None:
                await session.terminal.write(data)
        except StreamError as error:
            log.info("console of domain %s ended: %s", session.domain, error.message)
        except VirtbusError as error:
            await session.stream.abort(error.code, error.message)

    async def end(self, session: Session) -> None:
        """Close a session on every side, then forget it; idempotent."""
        if session.closed.is_set():
            return
        session.closed.set()
        current = asyncio.current_task()
        others = [task for task in session.tasks if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        with contextlib.suppress(Exception):
            await session.terminal.close()
        await session.stream.close()
        if self._sessions.get(session.domain) is session:
            del self._sessions[session.domain]
            self._changed.set()

    async def close(self) -> None:
        """End every session (the agent stops)."""
        for session in list(self._sessions.values()):
            await session.stream.abort(ErrorCode.OPERATION_ABORTED, "the host agent stopped")
            await self.end(session)


def consoles(ops: Operations) -> Consoles:
    sessions = ops.sessions
    if not isinstance(sessions, Consoles):
        raise VirtError(ErrorCode.NO_SUPPORT, "this agent has no console sessions")
    return sessions


@handles(OpenConsole)
async def open_console(ops: Operations, command: OpenConsole) -> ConsoleSession:
    """virDomainOpenConsole: the domain must be running and have a console (``console``
    in its spec, ``<console type='pty'>`` in its XML)."""
    domain = ops.domains.get(command.target)
    if not domain.active:
        raise invalid("domain is not running")
    if not domain.spec.console:
        raise VirtError(
            ErrorCode.OPERATION_FAILED,
            f"domain '{domain.name}' has no console: define it with console (<console type='pty'>)",
        )
    if domain.handle is None:
        raise VirtError(ErrorCode.OPERATION_FAILED, f"domain '{domain.name}' has no container")
    terminal = await ops.driver.attach(domain.handle)
    try:
        stream = await consoles(ops).open(
            domain.uuid, terminal, command.args.queue, command.args.force
        )
    except BaseException:
        await terminal.close()
        raise
    limits = stream.limits
    return ConsoleSession(
        session=stream.session,
        queue=stream.queue,
        max_frame=limits.max_frame,
        window=limits.window,
        idle_timeout_s=limits.idle_timeout_s,
    )


@handles(GetConsoleOutput)
async def console_output(ops: Operations, command: GetConsoleOutput) -> ConsoleOutput:
    """What the domain wrote to its console (stdout and stderr), most recent last."""
    domain = ops.domains.get(command.target)
    if domain.handle is None:
        raise VirtError(ErrorCode.OPERATION_FAILED, f"domain '{domain.name}' has no container")
    data, truncated = await ops.driver.output(domain.handle, command.args.max_bytes)
    return ConsoleOutput(output=data.decode(errors="replace"), truncated=truncated)
