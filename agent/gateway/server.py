"""The gateway: a libvirt remote-protocol server whose calls become virtbus commands.

Every client gets its own session (its identity, its host, its callbacks); all of them
share one connection to the broker. A call is answered on its own serial as soon as it
is done, so a slow command does not hold back keepalive pings. A client that goes away
frees its callbacks and their event streams.

Guards, each a ``GatewaySettings`` field: clients in all and not yet authenticated,
calls in flight per client (the socket is not read while they are all taken), the
length of a packet (refused from its length word), callbacks per client, the time to
open a connection, the time a packet may take to arrive, and keepalive. An error at a
limit is logged once per ``log_interval_s`` with the number of times it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from agent.client import Connection, VirtbusError
from agent.gateway import (  # noqa: F401 (their handlers)
    auth,
    console,
    events,
    metadata,
    networks,
    stats,
    storage,
)
from agent.gateway.acl import access
from agent.gateway.authz import Policy, matches, subject_dn
from agent.gateway.identity import Identity
from agent.gateway.procedures import CALL, HANDLERS, REPLIED, Call, Session
from agent.gateway.procnames import api_name
from agent.gateway.protocol import (
    KEEPALIVE_PROGRAM,
    LENGTH_BYTES,
    PROTOCOL_VERSION,
    REMOTE_PROGRAM,
    CallError,
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
from agent.gateway.sasl import SaslLogin, Users
from agent.gateway.settings import GatewaySettings
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


class Throttled:
    """Log a recurring error once per interval, with how often it happened since."""

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, text: str, *args: object, exc_info: Any = None) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        if more and last is not None:
            text += f" (and {more} more times in the last {now - last:.0f} s)"
        self._log.warning(text, *args, exc_info=exc_info)


class Gateway:
    """``async with Gateway(Connection(url), "127.0.0.1", 16509)``: listening once
    entered. The connection (not yet open) says how the broker is reached, how commands
    are signed and how long an agent's reply is awaited; the gateway opens and closes it.
    ``settings`` holds the limits and who is admitted (libvirtd's defaults if absent);
    its authorization and SASL users files are read here (ValueError if one is not valid).

    With ``settings.sasl_users``, every client must log in (SCRAM-SHA-256) before any
    other call; that needs ``tls``, since libvirt's client accepts a mechanism without a
    security layer only on an encrypted connection."""

    def __init__(
        self,
        conn: Connection,
        address: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        tls: ssl.SSLContext | None = None,
        settings: GatewaySettings | None = None,
    ) -> None:
        self.settings = settings or GatewaySettings()
        if self.settings.sasl_users is not None and tls is None:
            raise ValueError(
                "SASL (SCRAM) needs TLS: libvirt's client refuses a mechanism without a "
                "security layer on a plain TCP connection"
            )
        self._conn = conn
        self._address = address
        self._port = port
        self._tls = tls
        self._policy = Policy.load(self.settings.authz) if self.settings.authz else None
        self._throttled = Throttled(log, self.settings.log_interval_s)
        self._users = Users(self.settings.sasl_users) if self.settings.sasl_users else None
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._sessions: set[Session] = set()
        self._anonymous = 0
        self._changed = asyncio.Event()
        self._loop_handler: Any = None

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

    @property
    def streams(self) -> int:
        """Streams (consoles) the clients connected now have open."""
        return sum(len(session.streams) for session in self._sessions)

    @property
    def clients(self) -> int:
        """Clients connected now."""
        return len(self._clients)

    async def wait_callbacks(self, predicate: Callable[[int], bool], timeout_s: float) -> None:
        """Until the number of callbacks satisfies ``predicate``; TimeoutError after
        ``timeout_s``."""
        await self.wait(lambda: predicate(self.callbacks), timeout_s)

    async def wait(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Until ``predicate`` holds, checked as clients come, go and register
        callbacks; TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> None:
        await self._conn.open()
        try:
            self._server = await asyncio.start_server(self._accept, self._address, self._port)
        except OSError:
            await self._conn.close()
            raise
        loop = asyncio.get_running_loop()
        self._loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_error)
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
            asyncio.get_running_loop().set_exception_handler(self._loop_handler)
        await self._conn.close()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's own errors (out of file descriptors at accept, above all): one line
        per interval, not one per attempt."""
        message = str(context.get("message", "asyncio error"))
        self._throttled.warning(message, "%s", message, exc_info=context.get("exception"))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limits = self.settings
        if len(self._clients) >= limits.max_clients:
            self._refuse(writer, "max_clients", limits.max_clients)
            return
        if self._anonymous >= limits.max_anonymous_clients:
            self._refuse(writer, "max_anonymous_clients", limits.max_anonymous_clients)
            return
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        self._anonymous += 1
        anonymous = True

        def authenticated() -> None:
            nonlocal anonymous
            if anonymous:
                anonymous = False
                self._anonymous -= 1

        client = Client(self._conn, reader, writer, self._changed.set, limits, self._users)
        client.session.policy = self._policy
        client.session.on_login = authenticated
        self._sessions.add(client.session)
        self._changed.set()
        try:
            if await self._admit(client, writer):
                if not client.session.needs_login:
                    authenticated()
                await client.serve()
        finally:
            authenticated()
            self._sessions.discard(client.session)
            self._clients.discard(task)
            self._changed.set()
            writer.close()

    def _refuse(self, writer: asyncio.StreamWriter, limit: str, value: int) -> None:
        self._throttled.warning(
            limit, "refusing a client from %s: %s (%d) reached", peer_of(writer), limit, value
        )
        writer.transport.abort()

    async def _admit(self, client: Client, writer: asyncio.StreamWriter) -> bool:
        """TLS: the handshake, and the certificate's subject against the allowed list,
        within the handshake timeout. libvirt's client waits for one byte saying its
        certificate was accepted; a refused one gets the connection closed instead."""
        peer = client.peer
        if self._tls is None:
            return True
        try:
            async with asyncio.timeout(self.settings.handshake_timeout_s):
                await writer.start_tls(self._tls)
        except (TimeoutError, OSError) as error:  # ssl.SSLError included
            self._throttled.warning(
                "tls", "TLS handshake with %s failed: %s", peer, error or "timed out"
            )
            return False
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        if der:
            dn = subject_dn(der)
            allowed = self.settings.tls_allowed_dn
            if allowed and not any(matches(pattern, dn) for pattern in allowed):
                self._throttled.warning(
                    "tls_allowed_dn", "refusing %s: the certificate of %r is not allowed", peer, dn
                )
                return False
            client.session.identity = Identity("x509", dn)
        writer.write(TLS_ACCEPTED)
        return True


def peer_of(writer: asyncio.StreamWriter) -> str:
    """``host:port`` (``[v6]:port``) of a socket's peer."""
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


class Client:
    """One libvirt client's socket: packets in, replies, pongs and events out."""

    def __init__(
        self,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        changed: Callable[[], None] = lambda: None,
        settings: GatewaySettings | None = None,
        sasl_users: Users | None = None,
    ) -> None:
        """With ``sasl_users``, the client must log in before any other call."""
        self._reader = reader
        self._writer = writer
        self._settings = settings or GatewaySettings()
        self._throttled = Throttled(log, self._settings.log_interval_s)
        self._sending = asyncio.Lock()
        self._slots = asyncio.Semaphore(self._settings.max_client_requests)
        self._calls: set[asyncio.Task[None]] = set()
        self._heard = time.monotonic()
        self._keepalive: asyncio.Task[None] | None = None
        self._opened = False
        self.peer = peer_of(writer)
        self.session = Session(
            conn,
            self.send,
            changed,
            identity=Identity.anonymous(self.peer),
            max_callbacks=self._settings.max_client_callbacks,
        )
        if sasl_users is not None:
            self.session.sasl = SaslLogin(sasl_users)
            self.session.needs_login = True
        self.session.on_open = self._on_open
        self.session.on_keepalive = self._start_keepalive

    async def send(self, packet: bytes) -> None:
        """Write one packet whole; a client that is gone is not an error here."""
        async with self._sending:
            with contextlib.suppress(ConnectionError):
                self._writer.write(packet)
                await self._writer.drain()

    async def serve(self) -> None:
        """Until the client goes: it has ``handshake_timeout_s`` to log in (if it must)
        and open its connection."""
        peer = self.peer
        log.info("client %s connected", peer)
        loop = asyncio.get_running_loop()
        handshake = loop.call_later(self._settings.handshake_timeout_s, self._late, peer)
        try:
            while True:
                await self._slots.acquire()
                packet = await self._read(peer)
                if packet is None:
                    break
                self._heard = time.monotonic()
                self._receive(packet)
        except XdrError as error:
            self._throttled.warning(
                "bad packet", "client %s sent a bad packet, closing: %s", peer, error
            )
        finally:
            handshake.cancel()
            if self._keepalive is not None:
                self._keepalive.cancel()
            for task in self._calls:
                task.cancel()
            await asyncio.gather(*self._calls, return_exceptions=True)
            await self.session.close()
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
            log.info("client %s gone", peer)

    def _on_open(self) -> None:
        self._opened = True

    def _late(self, peer: str) -> None:
        if not self._opened:
            self._throttled.warning(
                "handshake",
                "closing %s: no connection opened within %g s",
                peer,
                self._settings.handshake_timeout_s,
            )
            self._writer.transport.abort()

    def _start_keepalive(self) -> None:
        if self._keepalive is None and self._settings.keepalive_count > 0:
            self._keepalive = asyncio.create_task(self._ping())

    async def _ping(self) -> None:
        """libvirtd's keepalive: a ping after each interval the client was silent;
        ``keepalive_count`` pings in a row unanswered and the client is dead."""
        interval = self._settings.keepalive_interval_s
        unanswered = 0
        pinged = 0.0
        while True:
            await asyncio.sleep(interval)
            if self._heard > pinged:
                unanswered = 0
            if time.monotonic() - self._heard < interval:
                continue
            if unanswered >= self._settings.keepalive_count:
                self._throttled.warning(
                    "keepalive",
                    "closing %s: no answer to %d keepalive pings",
                    self.peer,
                    unanswered,
                )
                self._writer.transport.abort()
                return
            unanswered += 1
            pinged = time.monotonic()
            # written whole, without waiting for a peer that may never read
            self._writer.write(message(KEEPALIVE_PROGRAM, KeepaliveProc.PING))

    async def _read(self, peer: str) -> bytes | None:
        """The next packet; its first byte may take any time, the rest only the packet
        timeout, and a length over the limit is refused before anything more is read."""
        try:
            first = await self._reader.readexactly(1)
            async with asyncio.timeout(self._settings.packet_timeout_s):
                word = first + await self._reader.readexactly(LENGTH_BYTES - 1)
                length = packet_length(word, self._settings.max_packet_bytes)
                return await self._reader.readexactly(length)
        except TimeoutError:
            self._throttled.warning(
                "packet_timeout",
                "closing %s: a packet took over %g s",
                peer,
                self._settings.packet_timeout_s,
            )
            return None
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def _receive(self, packet: bytes) -> None:
        header, payload = Header.unpack(packet)
        if header.program == KEEPALIVE_PROGRAM:
            if header.procedure == KeepaliveProc.PING:
                self._spawn(self.send(message(KEEPALIVE_PROGRAM, KeepaliveProc.PONG)))
            else:
                self._slots.release()
            return
        if header.type == MessageType.STREAM and header.program == REMOTE_PROGRAM:
            self._spawn(self.session.stream_packet(header.serial, header.status, payload))
            return
        if header.type != MessageType.CALL:
            self._slots.release()
            return
        self._spawn(self._call(header, payload))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one packet's work; its slot is free again once the work is done."""
        task = asyncio.create_task(work)
        self._calls.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        self._slots.release()

    async def _call(self, header: Header, payload: bytes) -> None:
        replied = asyncio.Event()
        REPLIED.set(replied)
        close = False
        try:
            body = await self._answer(header, payload)
            status = Status.OK
        except CallError as error:
            body, status = pack_error(error.code, error.message, error.domain), Status.ERROR
            close = error.close
        except XdrError as error:  # before VirtbusError, its base: XDR is the RPC's domain
            body = pack_error(
                ErrorCode.INVALID_ARG, f"{ErrorCode.INVALID_ARG.prefix}: {error}", ErrorDomain.RPC
            )
            status = Status.ERROR
        except VirtbusError as error:
            body, status = pack_error(error.vir_error, error.message), Status.ERROR
        except Exception:
            self._throttled.warning(
                f"procedure {header.procedure}",
                "procedure %d failed",
                header.procedure,
                exc_info=True,
            )
            body = pack_error(
                ErrorCode.INTERNAL_ERROR,
                f"{ErrorCode.INTERNAL_ERROR.prefix}: the gateway failed on procedure "
                f"{header.procedure}",
            )
            status = Status.ERROR
        await self.send(header.reply(status).pack(body))
        replied.set()
        if close:
            self._writer.close()

    async def _answer(self, header: Header, payload: bytes) -> bytes:
        """The handler runs only for a procedure the session may call; it reaches the
        bus only once all of its arguments are decoded (``Session.conn``)."""
        if header.program != REMOTE_PROGRAM or header.version != PROTOCOL_VERSION:
            raise VirtbusError.of(
                ErrorCode.NO_SUPPORT,
                f"program 0x{header.program:x} version {header.version}",
            )
        # before the lookup: a client that has not logged in learns not even which
        # procedures exist
        self.session.require_login(header.procedure)
        try:
            handler = HANDLERS[Proc(header.procedure)]
        except (ValueError, KeyError):
            raise VirtbusError.of(ErrorCode.NO_SUPPORT, api_name(header.procedure)) from None
        self.session.authorize(header.procedure)
        needed = access(header.procedure)
        if needed is not None and not needed.read_only:
            self.session.listed.clear()
        args = Unpacker(payload)
        CALL.set(Call(header.procedure, needed.api if needed else "?", args, serial=header.serial))
        body = await handler(self.session, args)
        args.done()
        return body
