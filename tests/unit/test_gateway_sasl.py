"""The gateway's SASL login: the users file, the SCRAM state machine driven by scramp's
own client, and the authentication procedures over a real socket (the bus faked)."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import scramp

from agent.client import Connection
from agent.gateway.auth import AuthType
from agent.gateway.identity import Identity
from agent.gateway.protocol import RPC_ERROR, ErrorDomain, Proc, Status
from agent.gateway.sasl import (
    MAX_FAILURES,
    MECHANISM,
    MIN_ITERATIONS,
    Challenge,
    SaslFailure,
    SaslLogin,
    Users,
    UsersFileError,
    Verifier,
    read_users,
    remove_user,
    set_user,
)
from agent.gateway.server import TLS_ACCEPTED, Client, Gateway
from agent.gateway.settings import GatewaySettings
from agent.gateway.xdr import Packer, Unpacker
from schemas.codes import ErrorCode
from tests.unit.test_gateway_guards import GuardedBus, closed, tls_pair
from tests.unit.test_gateway_server import TIMEOUT_S, FakeBus, Peer

PASSWORD = "correct horse"
AUTH_FAILED = (ErrorCode.AUTH_FAILED, "authentication failed: authentication failed")


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    set_user(path, "alice", PASSWORD, MIN_ITERATIONS)
    return path


@pytest.fixture
def login(users_file: Path) -> SaslLogin:
    return SaslLogin(Users(users_file))


def client(user: str = "alice", password: str = PASSWORD) -> scramp.ScramClient:
    return scramp.ScramClient([MECHANISM], user, password)


def log_in(login: SaslLogin, user: str = "alice", password: str = PASSWORD) -> Challenge:
    scram = client(user, password)
    assert login.init() == MECHANISM
    first = login.start(MECHANISM, scram.get_client_first().encode())
    assert not first.complete and first.data is not None
    scram.set_server_first(first.data.decode())
    final = login.step(scram.get_client_final().encode())
    assert final.data is not None
    scram.set_server_final(final.data.decode())  # the client checks the server knew the key
    return final


# ---------------------------------------------------------------- users file --


def test_the_users_file_keeps_verifiers_not_passwords(users_file: Path) -> None:
    text = users_file.read_text()
    assert PASSWORD not in text
    assert text.startswith(f"alice:{MECHANISM}${MIN_ITERATIONS}:")
    assert users_file.stat().st_mode & 0o777 == 0o600
    verifier = read_users(users_file)["alice"]
    assert Verifier.parse(str(verifier)) == verifier
    assert len(verifier.salt) == 16


def test_salts_differ_so_equal_passwords_give_different_verifiers(users_file: Path) -> None:
    set_user(users_file, "bob", PASSWORD, MIN_ITERATIONS)
    users = read_users(users_file)
    assert users["alice"].salt != users["bob"].salt
    assert users["alice"].stored_key != users["bob"].stored_key


def test_a_password_change_replaces_the_verifier_and_remove_drops_the_user(
    users_file: Path,
) -> None:
    before = read_users(users_file)["alice"]
    assert set_user(users_file, "alice", "another", MIN_ITERATIONS) is False
    assert read_users(users_file)["alice"] != before
    assert remove_user(users_file, "alice") is True
    assert remove_user(users_file, "alice") is False
    assert read_users(users_file) == {}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("alice:plain-password", "not a SCRAM-SHA-256"),
        ("bad name:SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA", "is not a user name"),
        ("alice:SCRAM-SHA-256$100:c2FsdA==$AAAA:AAAA", "iterations outside"),
        ("alice:SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA", "keys must be 32 bytes"),
    ],
)
def test_a_bad_line_is_refused_with_its_number(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "users"
    path.write_text(f"# users\n\n{line}\n")
    with pytest.raises(UsersFileError, match=f"line 3: .*{problem}"):
        read_users(path)


def test_bad_names_and_iteration_counts_are_refused_on_add(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a user name"):
        set_user(tmp_path / "users", "a,b", PASSWORD)
    with pytest.raises(ValueError, match="4096 to 65536"):
        set_user(tmp_path / "users", "alice", PASSWORD, 100_000)
    with pytest.raises(ValueError, match="empty password"):
        set_user(tmp_path / "users", "alice", "")
    assert not (tmp_path / "users").exists()


# ----------------------------------------------------------- state machine --


def test_the_right_password_logs_in(login: SaslLogin) -> None:
    final = log_in(login)
    assert final.complete
    assert login.done and login.username == "alice"
    assert login.failures == 0


@pytest.mark.parametrize(("user", "reason"), [("alice", "wrong password"), ("eve", "unknown user")])
def test_a_wrong_password_or_unknown_user_fails_at_the_proof(
    login: SaslLogin, user: str, reason: str
) -> None:
    with pytest.raises(SaslFailure, match=reason) as failed:
        log_in(login, user, "guess")
    assert failed.value.username == user
    assert PASSWORD not in str(failed.value) and "guess" not in str(failed.value)
    assert not login.done and login.username is None and login.failures == 1
    log_in(login)  # a failed login starts over from INIT
    assert login.username == "alice"


def test_an_unknown_user_gets_a_stable_salt_like_a_real_one(login: SaslLogin) -> None:
    """The server's first message must not tell who exists."""

    def salt_of(login: SaslLogin, user: str) -> bytes:
        login.init()
        first = login.start(MECHANISM, client(user).get_client_first().encode())
        assert first.data is not None
        fields = dict(item.split("=", 1) for item in first.data.decode().split(","))
        with pytest.raises(SaslFailure):
            login.step(b"c=biws,r=x,p=AAAA")
        return base64.b64decode(fields["s"])

    eve = salt_of(login, "eve")
    assert salt_of(login, "eve") == eve
    assert salt_of(login, "mallory") != eve
    assert len(eve) == len(salt_of(login, "alice"))


MISSTEPS: dict[str, Callable[[SaslLogin, bytes], object]] = {
    "start before init": lambda login, first: login.start(MECHANISM, first),
    "step before start": lambda login, first: login.step(first),
    "init twice": lambda login, first: login.init(),
    "wrong mechanism": lambda login, first: login.start("PLAIN", first),
    "not utf-8": lambda login, first: login.start(MECHANISM, b"\xff\xfe"),
}


@pytest.mark.parametrize("misstep", MISSTEPS)
def test_a_call_out_of_order_fails_and_starts_over(login: SaslLogin, misstep: str) -> None:
    first = client().get_client_first().encode()
    if misstep != "start before init":
        login.init()
    with pytest.raises(SaslFailure):
        MISSTEPS[misstep](login, first)
    assert login.failures == 1 and not login.done
    log_in(login)


def test_a_start_without_data_takes_the_first_message_in_a_step(login: SaslLogin) -> None:
    scram = client()
    login.init()
    assert login.start(MECHANISM, None) == Challenge(False, b"")
    first = login.step(scram.get_client_first().encode())
    assert first.data is not None
    scram.set_server_first(first.data.decode())
    assert login.step(scram.get_client_final().encode()).complete


def test_a_completed_login_cannot_run_again(login: SaslLogin) -> None:
    log_in(login)
    with pytest.raises(SaslFailure):
        login.init()
    assert login.done and login.username == "alice"


def test_failures_are_counted_to_exhaustion(login: SaslLogin) -> None:
    for attempt in range(1, MAX_FAILURES + 1):
        assert not login.exhausted
        with pytest.raises(SaslFailure):
            log_in(login, "alice", "guess")
        assert login.failures == attempt
    assert login.exhausted


def test_a_user_added_while_running_can_log_in_and_a_broken_file_keeps_the_last(
    users_file: Path,
) -> None:
    users = Users(users_file)
    set_user(users_file, "bob", "bobs", MIN_ITERATIONS)
    log_in(SaslLogin(users), "bob", "bobs")
    users_file.write_text("garbage\n")
    broken = SaslLogin(users)
    with pytest.raises(SaslFailure, match="users file is unusable"):
        log_in(broken, "bob", "bobs")
    assert "bob" in users


# ------------------------------------------------------------- over a socket --


def sasl_args(data: bytes | None, mechanism: str | None = None) -> bytes:
    packer = Packer()
    if mechanism is not None:
        packer.string(mechanism)
    packer.int32(data is None)
    packer.char_bytes(data or b"")
    return packer.data()


def challenge(body: Unpacker) -> tuple[bool, bytes | None]:
    complete, nil, data = body.int32(), body.int32(), body.char_bytes(65536)
    body.done()
    return bool(complete), None if nil else data


class SaslPeer(Peer):
    async def auth_list(self) -> list[int]:
        body = await self.ok(Proc.AUTH_LIST)
        return body.array(body.int32, 10)

    async def error_with_domain(self, procedure: int, payload: bytes = b"") -> tuple[int, int, str]:
        header, body = await self.call(procedure, payload)
        assert header.status == Status.ERROR
        code, domain = body.int32(), body.int32()
        message = body.optional(lambda: body.string(10_000))
        assert message is not None
        return code, domain, message

    async def log_in(self, password: str = PASSWORD) -> None:
        scram = client("alice", password)
        init = await self.ok(Proc.AUTH_SASL_INIT)
        assert init.string(100) == MECHANISM
        started = await self.ok(
            Proc.AUTH_SASL_START, sasl_args(scram.get_client_first().encode(), MECHANISM)
        )
        complete, data = challenge(started)
        assert not complete and data is not None
        scram.set_server_first(data.decode())
        header, body = await self.call(
            Proc.AUTH_SASL_STEP, sasl_args(scram.get_client_final().encode())
        )
        if header.status != Status.OK:
            code, domain = body.int32(), body.int32()
            raise SaslRefused(code, domain, body.optional(lambda: body.string(10_000)))
        complete, data = challenge(body)
        assert complete and data is not None
        scram.set_server_final(data.decode())


class SaslRefused(Exception):
    def __init__(self, code: int, domain: int, message: str | None) -> None:
        super().__init__(code, domain, message)
        self.code, self.domain, self.message = code, domain, message


@pytest.fixture
async def served(
    bus: FakeBus, users_file: Path
) -> AsyncIterator[tuple[SaslPeer, list[Client], asyncio.StreamReader]]:
    clients: list[Client] = []
    tasks: list[asyncio.Task[None]] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        served = Client(bus, reader, writer, sasl_users=Users(users_file))
        clients.append(served)
        await served.serve()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    yield SaslPeer(reader, writer), clients, reader
    writer.close()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT_S)
    server.close()
    await server.wait_closed()


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


Served = tuple[SaslPeer, list[Client], asyncio.StreamReader]


async def test_nothing_is_answered_or_forwarded_before_the_login(
    served: Served, bus: FakeBus
) -> None:
    peer, clients, _ = served
    assert await peer.auth_list() == [AuthType.SASL]
    for procedure, payload in [
        (Proc.CONNECT_OPEN, b""),
        (Proc.CONNECT_SUPPORTS_FEATURE, b"\0\0\0\x0a"),
        (Proc.CONNECT_LIST_ALL_DOMAINS, b""),
        (9999, b""),  # not even whether a procedure exists
    ]:
        assert await peer.error_with_domain(procedure, payload) == (
            RPC_ERROR,
            ErrorDomain.RPC,
            "authentication required",
        )
    assert bus.calls == []
    assert clients[0].session.identity == Identity.anonymous(clients[0].peer)


async def test_a_login_over_the_wire_opens_the_gateway(served: Served, bus: FakeBus) -> None:
    peer, clients, _ = served
    await peer.log_in()
    assert clients[0].session.identity == Identity("sasl", "alice")
    assert await peer.auth_list() == [AuthType.NONE]
    await peer.open()
    assert bus.calls == [("h1", "host.ping", None, None)]
    # logged in once: a second login cannot switch the identity
    assert await peer.error_with_domain(Proc.AUTH_SASL_INIT) == (
        *AUTH_FAILED[:1],
        ErrorDomain.RPC,
        AUTH_FAILED[1],
    )
    assert clients[0].session.identity == Identity("sasl", "alice")


async def test_a_wrong_password_gets_libvirts_error_and_the_connection_stays_closed(
    served: Served, bus: FakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    peer, clients, reader = served
    for _ in range(MAX_FAILURES):
        with pytest.raises(SaslRefused) as refused:
            await peer.log_in("guess")
        assert (refused.value.code, refused.value.message) == AUTH_FAILED
        assert refused.value.domain == ErrorDomain.RPC
        assert clients[0].session.identity.kind == "anonymous"
    async with asyncio.timeout(TIMEOUT_S):
        assert await reader.read() == b""  # closed after the last failure
    assert bus.calls == []
    assert "failed SASL authentication as alice: wrong password" in caplog.text
    assert f"failure {MAX_FAILURES} of {MAX_FAILURES}, closing the connection" in caplog.text
    assert "guess" not in caplog.text


async def test_junk_after_a_step_is_refused_before_the_login_moves(served: Served) -> None:
    peer, clients, _ = served
    first = client().get_client_first().encode()
    await peer.ok(Proc.AUTH_SASL_INIT)
    header, body = await peer.call(Proc.AUTH_SASL_START, sasl_args(first, MECHANISM) + b"junk")
    assert header.status == Status.ERROR and body.int32() == ErrorCode.INVALID_ARG
    login = clients[0].session.sasl
    assert login is not None and login.failures == 0
    # the login is still waiting for its START
    started = await peer.ok(Proc.AUTH_SASL_START, sasl_args(first, MECHANISM))
    assert challenge(started)[0] is False


async def test_a_client_counts_as_anonymous_until_it_logs_in(
    users_file: Path, tmp_path: Path
) -> None:
    served, context = tls_pair(tmp_path)
    settings = GatewaySettings(sasl_users=users_file, max_anonymous_clients=1)

    async def tls_peer(port: int) -> SaslPeer:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
        async with asyncio.timeout(TIMEOUT_S):
            assert await reader.readexactly(len(TLS_ACCEPTED)) == TLS_ACCEPTED
        return SaslPeer(reader, writer)

    async with Gateway(GuardedBus(), "127.0.0.1", 0, served, settings) as gateway:
        first = await tls_peer(gateway.port)
        assert await closed(Peer(*await asyncio.open_connection("127.0.0.1", gateway.port)))
        await first.log_in()
        second = await tls_peer(gateway.port)
        assert await second.auth_list() == [AuthType.SASL]
        for peer in (first, second):
            peer.writer.close()


@pytest.mark.parametrize("logs_in", [False, True])
async def test_the_handshake_timeout_bounds_the_login(
    bus: FakeBus, users_file: Path, logs_in: bool
) -> None:
    """A client that starts a login and stalls, or logs in and never opens, is closed."""
    settings = GatewaySettings(handshake_timeout_s=0.2)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Client(bus, reader, writer, settings=settings, sasl_users=Users(users_file)).serve()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    peer = SaslPeer(reader, writer)
    try:
        if logs_in:
            await peer.log_in()
        else:
            await peer.ok(Proc.AUTH_SASL_INIT)
        async with asyncio.timeout(TIMEOUT_S):
            assert await reader.read() == b""
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
    assert bus.calls == []


async def test_without_sasl_the_auth_calls_are_refused_as_libvirtd_does(bus: FakeBus) -> None:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Client(bus, reader, writer).serve()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    peer = SaslPeer(reader, writer)
    try:
        assert await peer.auth_list() == [AuthType.NONE]
        for procedure in (Proc.AUTH_SASL_INIT, Proc.AUTH_POLKIT):
            code, _, message = await peer.error_with_domain(procedure)
            assert (code, message) == AUTH_FAILED
        await peer.open()
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


def test_sasl_without_tls_is_refused(users_file: Path) -> None:
    settings = GatewaySettings(sasl_users=users_file)
    with pytest.raises(ValueError, match="SASL \\(SCRAM\\) needs TLS"):
        Gateway(Connection("amqp://unused"), settings=settings)
    Gateway(
        Connection("amqp://unused"),
        tls=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        settings=settings,
    )


def test_a_bad_users_file_is_refused_when_the_gateway_is_made(tmp_path: Path) -> None:
    broken = tmp_path / "users"
    broken.write_text("alice:not-a-verifier\n")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with pytest.raises(ValueError, match="users"):
        Gateway(Connection("amqp://unused"), tls=tls, settings=GatewaySettings(sasl_users=broken))
