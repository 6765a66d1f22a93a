"""The gateway: a libvirt remote-protocol server whose calls become virtbus commands.

Every client gets its own session (its host, its callbacks); all of them share one
connection to the broker. A call is answered on its own serial as soon as it is done,
so a slow command does not hold back keepalive pings. A client that goes away frees its
callbacks and their event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from agent.client import Connection, VirtbusError
from agent.gateway.procedures import HANDLERS, REPLIED, Session
from agent.gateway.protocol import (
    KEEPALIVE_PROGRAM,
    LENGTH_BYTES,
    PROTOCOL_VERSION,
    REMOTE_PROGRAM,
    ErrorDomain,
    Header,
    KeepaliveProc,
    MessageType,
    Proc,
    Status,
    message,
    pack_error,
    packet_length,
)
from agent.gateway.xdr import Unpacker, XdrError
from schemas.codes import ErrorCode

log = logging.getLogger(__name__)
DEFAULT_PORT = 16509
TLS_ACCEPTED = b"\x01"


def tls_context(cert: str, key: str | None = None, ca: str | None = None) -> ssl.SSLContext:
    """The server side of ``virtbus+tls://``; with ``ca``, only clients holding a
    certificate it signed get in (as libvirtd's default)."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    # libvirt's client reads one byte of confirmation right after the handshake: a
    # TLS 1.3 session ticket arriving first would make that read fail
    tls.num_tickets = 0
    if ca is not None:
        tls.load_verify_locations(ca)
        tls.verify_mode = ssl.CERT_REQUIRED
    return tls


class Gateway:
    """``async with Gateway(Connection(url), "127.0.0.1", 16509)``: listening once
    entered. The connection (not yet open) says how the broker is reached, how commands
    are signed and how long an agent's reply is awaited; the gateway opens and closes it."""

    def __init__(
        self,
        conn: Connection,
        address: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._conn = conn
        self._address = address
        self._port = port
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._sessions: set[Session] = set()
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, for port 0)."""
        if self._server is None:
            raise RuntimeError("the gateway is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def callbacks(self) -> int:
        """Event callbacks registered by the clients connected now."""
        return sum(len(session.callbacks) for session in self._sessions)

    async def wait_callbacks(self, predicate: Callable[[int], bool], timeout_s: float) -> None:
        """Until the number of callbacks satisfies ``predicate``; TimeoutError after
        ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while not predicate(self.callbacks):
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> None:
        await self._conn.open()
        try:
            self._server = await asyncio.start_server(
                self._accept, self._address, self._port, ssl=self._tls
            )
        except OSError:
            await self._conn.close()
            raise
        log.info("gateway listening on %s:%d", self._address, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._clients:
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await self._conn.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        if self._tls is not None:
            # libvirt's client waits for one byte saying its certificate was accepted
            writer.write(TLS_ACCEPTED)
        client = Client(self._conn, reader, writer, self._changed.set)
        self._sessions.add(client.session)
        try:
            await client.serve()
        finally:
            self._sessions.discard(client.session)
            self._clients.discard(task)
            self._changed.set()


class Client:
    """One libvirt client's socket: packets in, replies, pongs and events out."""

    def __init__(
        self,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._sending = asyncio.Lock()
        self._calls: set[asyncio.Task[None]] = set()
        self.session = Session(conn, self.send, changed)

    async def send(self, packet: bytes) -> None:
        """Write one packet whole; a client that is gone is not an error here."""
        async with self._sending:
            with contextlib.suppress(ConnectionError):
                self._writer.write(packet)
                await self._writer.drain()

    async def serve(self) -> None:
        peer = self._writer.get_extra_info("peername")
        log.info("client %s connected", peer)
        try:
            while True:
                packet = await self._read()
                if packet is None:
                    break
                self._receive(packet)
        except XdrError as error:
            log.warning("client %s sent a bad packet, closing: %s", peer, error)
        finally:
            for task in self._calls:
                task.cancel()
            await asyncio.gather(*self._calls, return_exceptions=True)
            await self.session.close()
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
            log.info("client %s gone", peer)

    async def _read(self) -> bytes | None:
        try:
            word = await self._reader.readexactly(LENGTH_BYTES)
            return await self._reader.readexactly(packet_length(word))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def _receive(self, packet: bytes) -> None:
        header, payload = Header.unpack(packet)
        if header.program == KEEPALIVE_PROGRAM:
            if header.procedure == KeepaliveProc.PING:
                self._spawn(self.send(message(KEEPALIVE_PROGRAM, KeepaliveProc.PONG)))
            return
        if header.type != MessageType.CALL:
            return
        self._spawn(self._call(header, payload))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, header: Header, payload: bytes) -> None:
        replied = asyncio.Event()
        REPLIED.set(replied)
        try:
            body = await self._answer(header, payload)
            status = Status.OK
        except XdrError as error:  # before VirtbusError, its base: XDR is the RPC's domain
            body = pack_error(
                ErrorCode.INVALID_ARG, f"{ErrorCode.INVALID_ARG.prefix}: {error}", ErrorDomain.RPC
            )
            status = Status.ERROR
        except VirtbusError as error:
            body, status = pack_error(error.vir_error, error.message), Status.ERROR
        except Exception:
            log.exception("procedure %d failed", header.procedure)
            body = pack_error(
                ErrorCode.INTERNAL_ERROR,
                f"{ErrorCode.INTERNAL_ERROR.prefix}: the gateway failed on procedure "
                f"{header.procedure}",
            )
            status = Status.ERROR
        await self.send(header.reply(status).pack(body))
        replied.set()

    async def _answer(self, header: Header, payload: bytes) -> bytes:
        if header.program != REMOTE_PROGRAM or header.version != PROTOCOL_VERSION:
            raise VirtbusError.of(
                ErrorCode.NO_SUPPORT,
                f"program 0x{header.program:x} version {header.version}",
            )
        try:
            handler = HANDLERS[Proc(header.procedure)]
        except (ValueError, KeyError):
            raise VirtbusError.of(ErrorCode.NO_SUPPORT, f"procedure {header.procedure}") from None
        args = Unpacker(payload)
        body = await handler(self.session, args)
        args.done()
        return body
