"""virDomainOpenConsole (``virsh console``): libvirt's stream protocol on one side, a
console session across the bus (agent/streams.py) on the other.

After the opening call's reply, packets of type STREAM carry the call's procedure and
serial both ways (``src/remote/remote_daemon_stream.c``): status CONTINUE with bytes,
OK with no body to finish (answered with an empty OK, as libvirtd confirms), ERROR to
abort (confirmed the same way). The domain's output goes to the client as CONTINUE
packets and, when the domain's terminal closes, an empty OK; a failure of the bus side
is an ERROR packet with a ``remote_error``.

Flow control: the client's packets wait in a queue of the session's window, whose
single writer sends them to the agent only as its window has room; while it is full,
the client's packets hold the connection's request slots and the gateway stops reading
the socket. The domain's output is written to the socket one packet at a time, each
after the previous one drained. A client that goes away ends the session on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent.client import VirtbusError
from agent.client.streams import Console
from agent.gateway.procedures import (
    CALL,
    REPLIED,
    Session,
    check_flags,
    handles,
    read_domain,
)
from agent.gateway.protocol import (
    PROTOCOL_VERSION,
    REMOTE_PROGRAM,
    STRING_MAX,
    Header,
    MessageType,
    Proc,
    Status,
    pack_error,
)
from agent.gateway.xdr import Unpacker
from schemas.codes import ErrorCode

log = logging.getLogger(__name__)

CONSOLE_FORCE = 1
CONSOLE_SAFE = 2
DEVICES = (None, "console0")
"""The device names a domain's one console answers to (libvirt's alias for it)."""


class ConsoleRelay:
    """One console stream of one client: the client's packets to the bus, the bus's
    bytes to the client."""

    def __init__(self, session: Session, console: Console, serial: int) -> None:
        self._session = session
        self._console = console
        self._serial = serial
        self._header = Header(
            REMOTE_PROGRAM,
            PROTOCOL_VERSION,
            Proc.DOMAIN_OPEN_CONSOLE,
            MessageType.STREAM,
            serial,
            Status.OK,
        )
        self._incoming: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(
            maxsize=console.session.window
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = False

    def start(self, replied: asyncio.Event | None) -> None:
        self._tasks = [
            asyncio.create_task(self._output(replied)),
            asyncio.create_task(self._input()),
        ]

    async def _packet(self, status: Status, body: bytes = b"") -> None:
        await self._session.send(self._header.stream(status).pack(body))

    async def _output(self, replied: asyncio.Event | None) -> None:
        """The domain's output, after the reply that opened the stream."""
        if replied is not None:
            await replied.wait()
        try:
            while (data := await self._console.recv()) is not None:
                await self._packet(Status.CONTINUE, data)
            await self._packet(Status.OK)
        except VirtbusError as error:
            await self._fail(error)

    async def _input(self) -> None:
        try:
            while True:
                status, payload = await self._incoming.get()
                if status == Status.CONTINUE:
                    await self._console.send(payload)
                    continue
                if status == Status.OK:
                    await self._console.finish()
                else:
                    await self._console.abort()
                await self._packet(Status.OK)
                break
        except VirtbusError as error:
            await self._fail(error)
        await self._end()

    async def _fail(self, error: VirtbusError) -> None:
        if not self._ended:
            await self._packet(Status.ERROR, pack_error(error.vir_error, error.message))
        await self._end()

    async def packet(self, status: int, payload: bytes) -> None:
        if not self._ended:
            await self._incoming.put((status, payload))

    async def _end(self) -> None:
        """Forget the stream and close this end of the bus session."""
        if self._ended:
            return
        self._ended = True
        if self._session.streams.get(self._serial) is self:
            del self._session.streams[self._serial]
            self._session.changed()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await self._console.close()

    async def close(self) -> None:
        """The client went away: abort the session on the bus."""
        if not self._ended:
            with contextlib.suppress(VirtbusError):
                await self._console.abort("the libvirt client went away")
        await self._end()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@handles(Proc.DOMAIN_OPEN_CONSOLE)
async def open_console(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    device = args.optional(lambda: args.string(STRING_MAX))
    flags = args.uint32()
    check_flags(flags, CONSOLE_FORCE | CONSOLE_SAFE, "virDomainOpenConsole")
    if device not in DEVICES:
        raise VirtbusError.of(ErrorCode.INTERNAL_ERROR, f"cannot find console device '{device}'")
    call = CALL.get()
    serial = call.serial if call is not None else 0
    console = await session.conn.open_console(
        session.target, {"uuid": str(domain.uuid)}, force=bool(flags & CONSOLE_FORCE)
    )
    relay = ConsoleRelay(session, console, serial)
    session.streams[serial] = relay
    session.changed()
    relay.start(REPLIED.get())
    return b""
