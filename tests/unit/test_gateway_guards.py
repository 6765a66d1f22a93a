"""The gateway's guards over real sockets, with the bus faked: read-only connections,
one open per connection, arguments decoded before the bus, the authorization file, and
every limit (clients, anonymous clients, calls in flight, packet length, callbacks,
handshake, slow packets, keepalive), with errors at a limit logged once per interval."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from agent.client.connection import Op, PullWatcher
from agent.gateway.acl import ACCESS, access
from agent.gateway.authz import Policy, matches
from agent.gateway.procedures import HANDLERS
from agent.gateway.procnames import API_NAMES
from agent.gateway.protocol import KEEPALIVE_PROGRAM, KeepaliveProc, MessageType, Proc
from agent.gateway.server import Gateway, Throttled
from agent.gateway.settings import GatewaySettings
from agent.gateway.xdr import Packer
from schemas.codes import ErrorCode, EventId
from schemas.commands import op_of
from schemas.replies import DomainCounts, HostInfo, Result
from tests.unit.test_gateway_server import TIMEOUT_S, FakeBus, Peer, domain_payload

DENIED = "access denied: 'virtbus' denied access"


class GuardedBus(FakeBus):
    """The fake bus without a broker; host.get_info names the host's groups, and
    ``hold`` keeps suspend calls waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: asyncio.Event | None = None
        self.arrived = asyncio.Condition()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def call(
        self,
        host: str,
        op: Op,
        args: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        on_pull: PullWatcher | None = None,
    ) -> Result:
        op = op if isinstance(op, str) else op_of(op)
        async with self.arrived:
            self.arrived.notify_all()
        if op == "host.get_info":
            self.calls.append((host, op, args, target))
            return HostInfo(
                hostname=host,
                groups=["prod"] if host.startswith("p") else [],
                cpus=1,
                memory_kib=1,
                engine_version="1",
                agent_version="1",
                heartbeat_s=1.0,
                domains=DomainCounts(total=0, active=0, inactive=0, persistent=0, transient=0),
            )
        if op == "domain.suspend" and self.hold is not None:
            self.calls.append((host, op, args, target))
            await self.hold.wait()
            return await super().call(host, "domain.lookup", args, target)
        return await super().call(host, op, args, target, timeout_s)

    def ops(self) -> list[str]:
        return [op for _, op, _, _ in self.calls]


Start = Callable[..., Awaitable[tuple[Gateway, GuardedBus]]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    running: list[Gateway] = []

    async def started(
        tls: ssl.SSLContext | None = None, **settings: Any
    ) -> tuple[Gateway, GuardedBus]:
        bus = GuardedBus()
        gateway = Gateway(bus, "127.0.0.1", 0, tls, GatewaySettings(**settings))
        await gateway.start()
        running.append(gateway)
        return gateway, bus

    yield started
    for gateway in running:
        await gateway.stop()


async def connect(gateway: Gateway) -> Peer:
    return Peer(*await asyncio.open_connection("127.0.0.1", gateway.port))


def open_args(uri: str = "virtbus:///h1", flags: int = 0) -> bytes:
    packer = Packer()
    packer.optional(uri, packer.string)
    packer.uint32(flags)
    return packer.data()


async def closed(peer: Peer) -> bool:
    """The gateway closed the connection (EOF or reset) within the timeout."""
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while await peer.reader.read(65536):
                pass
    except ConnectionError:
        pass
    return True


# ------------------------------------------------------------------ read-only --


async def test_a_read_only_connection_is_refused_every_write(start: Start) -> None:
    gateway, bus = await start()
    peer = await connect(gateway)
    await peer.ok(Proc.CONNECT_OPEN, open_args(flags=1))
    for procedure, api in [
        (Proc.DOMAIN_SUSPEND, "virDomainSuspend"),
        (Proc.DOMAIN_DESTROY, "virDomainDestroy"),
        (Proc.DOMAIN_UNDEFINE, "virDomainUndefine"),
        (Proc.DOMAIN_CREATE, "virDomainCreate"),
    ]:
        code, text = await peer.error(procedure, domain_payload())
        assert (code, text) == (
            ErrorCode.OPERATION_DENIED,
            f"operation forbidden: read only access prevents {api}",
        )
    await peer.ok(Proc.DOMAIN_GET_INFO, domain_payload())
    assert bus.ops() == ["host.ping", "domain.get_info"]


async def test_read_only_is_what_libvirt_lets_through() -> None:
    assert access(Proc.DOMAIN_GET_XML_DESC) is not None
    readable = {p for p in HANDLERS if (a := access(p)) is not None and a.read_only}
    assert Proc.CONNECT_LIST_ALL_DOMAINS in readable
    assert Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY in readable
    assert Proc.DOMAIN_DESTROY_FLAGS not in readable
    assert ACCESS[201].read_only is False  # a console writes to the domain


def test_every_procedure_answered_has_its_access() -> None:
    assert [p for p in HANDLERS if access(p) is None] == []


async def test_the_secure_xml_is_refused_on_a_read_only_connection(start: Start) -> None:
    gateway, _ = await start()
    peer = await connect(gateway)
    await peer.ok(Proc.CONNECT_OPEN, open_args(flags=1))
    code, text = await peer.error(Proc.DOMAIN_GET_XML_DESC, domain_payload(1))
    assert code == ErrorCode.OPERATION_DENIED
    assert text == "operation forbidden: virDomainGetXMLDesc with secure flag"


async def test_a_second_open_is_refused_and_the_host_stays(start: Start) -> None:
    gateway, bus = await start()
    peer = await connect(gateway)
    await peer.ok(Proc.CONNECT_OPEN, open_args("virtbus:///h1"))
    code, text = await peer.error(Proc.CONNECT_OPEN, open_args("virtbus:///h2", flags=0))
    assert (code, text) == (ErrorCode.INTERNAL_ERROR, "internal error: connection already open")
    await peer.ok(Proc.DOMAIN_GET_INFO, domain_payload())
    assert [host for host, *_ in bus.calls] == ["h1", "h1"]


# ------------------------------------------------ arguments before the bus --


@pytest.mark.parametrize(
    ("procedure", "junk"),
    [
        (Proc.DOMAIN_SUSPEND, b"JUNK"),
        (Proc.DOMAIN_DESTROY, b"\0\0\0\0"),  # would pass for DESTROY_FLAGS' flags
        (Proc.DOMAIN_UNDEFINE, b"\0\0\0\0"),
        (Proc.DOMAIN_SHUTDOWN, b"\0\0\0\0"),
        (Proc.DOMAIN_SET_MEMORY, b"\0\0\0\0\0\0\0\x01\0\0\0\0"),
        (Proc.DOMAIN_HAS_MANAGED_SAVE_IMAGE, b"\0\0\0\0\0\0\0\0"),
        (Proc.DOMAIN_GET_MESSAGES, b"\0\0\0\0\0\0\0\0"),
    ],
)
async def test_a_call_with_bytes_left_over_never_reaches_the_bus(
    start: Start, procedure: Proc, junk: bytes
) -> None:
    gateway, bus = await start()
    peer = await connect(gateway)
    await peer.ok(Proc.CONNECT_OPEN, open_args())
    code, text = await peer.error(procedure, domain_payload() + junk)
    assert code == ErrorCode.INVALID_ARG
    assert text is not None and "bytes left over" in text
    assert bus.ops() == ["host.ping"]


# ------------------------------------------------------------ authorization --


def policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authz.toml"
    path.write_text(text)
    return path


async def test_without_a_rule_nothing_is_allowed(start: Start, tmp_path: Path) -> None:
    rules = policy(tmp_path, '[[allow]]\nidentity = "sasl:alice"\nhosts = ["*"]\n')
    gateway, bus = await start(authz=rules)
    peer = await connect(gateway)
    assert await peer.error(Proc.CONNECT_OPEN, open_args()) == (ErrorCode.ACCESS_DENIED, DENIED)
    assert await peer.error(Proc.DOMAIN_SUSPEND, domain_payload()) == (
        ErrorCode.OPERATION_INVALID,
        "Requested operation is not valid: the connection is not open",
    )
    assert "domain.suspend" not in bus.ops()


async def test_a_rule_grants_hosts_read_only(
    start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = policy(
        tmp_path,
        '[[allow]]\nidentity = "anonymous"\nhosts = ["h?"]\naccess = "read-only"\n',
    )
    gateway, bus = await start(authz=rules)
    other = await connect(gateway)
    assert await other.error(Proc.CONNECT_OPEN, open_args("virtbus:///web")) == (
        ErrorCode.ACCESS_DENIED,
        DENIED,
    )
    peer = await connect(gateway)
    caplog.set_level(logging.INFO, "agent.gateway")
    await peer.ok(Proc.CONNECT_OPEN, open_args("virtbus:///h1"))
    await peer.ok(Proc.DOMAIN_GET_INFO, domain_payload())
    assert await peer.error(Proc.DOMAIN_SUSPEND, domain_payload()) == (
        ErrorCode.ACCESS_DENIED,
        DENIED,
    )
    assert "domain.suspend" not in bus.ops()
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("anonymous:127.0.0.1:") and "h1: virDomainGetInfo" in m for m in logged)
    assert any(
        "denied virDomainSuspend on host h1: no rule grants domain:suspend" in m for m in logged
    )


async def test_groups_and_permissions(start: Start, tmp_path: Path) -> None:
    rules = policy(
        tmp_path,
        """
[[allow]]
identity = "anonymous"
groups = ["prod"]
permissions = ["domain:getattr", "domain:read", "domain:suspend"]
""",
    )
    gateway, bus = await start(authz=rules)
    outside = await connect(gateway)
    assert (await outside.error(Proc.CONNECT_OPEN, open_args("virtbus:///h1")))[0] == (
        ErrorCode.ACCESS_DENIED
    )
    peer = await connect(gateway)
    await peer.ok(Proc.CONNECT_OPEN, open_args("virtbus:///p1"))
    await peer.ok(Proc.DOMAIN_SUSPEND, domain_payload())
    assert (await peer.error(Proc.DOMAIN_DESTROY, domain_payload()))[0] == ErrorCode.ACCESS_DENIED
    assert bus.ops() == ["host.get_info", "host.get_info", "domain.suspend"]


def test_a_bad_policy_file_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="access: Input should be 'full' or 'read-only'"):
        Policy.load(policy(tmp_path, '[[allow]]\nidentity = "x"\naccess = "all"\n'))


def test_wildcards_as_libvirt_matches_them() -> None:
    assert matches("C=GB,O=Example,CN=*", "C=GB,O=Example,CN=alice")
    assert not matches("C=GB,O=Example,CN=*", "C=GB,O=Other,CN=alice")
    assert matches("CN=?ob", "CN=bob")
    assert not matches("CN=[b]ob", "CN=bob")  # no character classes
    assert not matches("CN=bob", "CN=bobby")


# ------------------------------------------------------------------- limits --


async def test_calls_in_flight_are_bounded_and_the_rest_stay_unread(start: Start) -> None:
    gateway, bus = await start(max_client_requests=2)
    bus.hold = asyncio.Event()
    peer = await connect(gateway)
    await peer.ok(Proc.CONNECT_OPEN, open_args())
    for _ in range(5):
        await peer.send(0x20008086, Proc.DOMAIN_SUSPEND, domain_payload())
    async with bus.arrived:
        await asyncio.wait_for(
            bus.arrived.wait_for(lambda: bus.ops().count("domain.suspend") == 2), TIMEOUT_S
        )
    with pytest.raises(TimeoutError):
        async with bus.arrived:
            await asyncio.wait_for(bus.arrived.wait_for(lambda: len(bus.calls) > 3), 0.5)
    bus.hold.set()
    for _ in range(5):
        header, _ = await peer.receive()
        assert header.type == MessageType.REPLY
    assert bus.ops().count("domain.suspend") == 5


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def push(peer: Peer, data: bytes) -> None:
    for offset in range(0, len(data), 1024 * 1024):
        peer.writer.write(data[offset : offset + 1024 * 1024])
        await asyncio.wait_for(peer.writer.drain(), TIMEOUT_S)


async def flood(peer: Peer, burst: bytes, times: int) -> int:
    """How many bursts the gateway took before it stopped reading for a second."""
    for sent in range(times):
        peer.writer.write(burst)
        try:
            await asyncio.wait_for(peer.writer.drain(), 1.0)
        except TimeoutError:
            return sent
    return times


async def test_an_oversized_packet_is_refused_before_it_is_read(start: Start) -> None:
    gateway, _ = await start()
    junk = b"\0" * (32 * 1024 * 1024)
    baseline = rss_kib()
    peers = [await connect(gateway) for _ in range(4)]
    for peer in peers:
        peer.writer.write((32 * 1024 * 1024 - 1).to_bytes(4, "big"))
    for peer in peers:
        with pytest.raises(ConnectionError):
            await push(peer, junk)
        assert await closed(peer)
    # four 32 MiB packets buffered would be 128 MiB
    assert rss_kib() - baseline < 16 * 1024
    del junk


async def test_pipelined_calls_never_read_keep_the_gateway_small(start: Start) -> None:
    gateway, _ = await start()
    peer = await connect(gateway)
    call = Packer()
    call.uint32(28)
    for word in (0x20008086, 1, Proc.CONNECT_GET_TYPE, 0, 1, 0):
        call.uint32(word)
    burst = call.data() * 20_000
    baseline = rss_kib()
    sent = await flood(peer, burst, 20)  # 400,000 calls, 11 MB
    assert sent < 20  # the gateway stopped reading
    assert rss_kib() - baseline < 32 * 1024


async def test_clients_beyond_max_clients_are_closed_and_logged_once(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    gateway, _ = await start(max_clients=2)
    kept = [await connect(gateway) for _ in range(2)]
    await gateway.wait(lambda: gateway.clients == 2, TIMEOUT_S)
    for _ in range(20):
        assert await closed(await connect(gateway))
    assert len([r for r in caplog.records if "max_clients" in r.getMessage()]) == 1
    await kept[0].ok(Proc.CONNECT_OPEN, open_args())


def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(served)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return served, client


async def test_anonymous_clients_are_bounded(start: Start, tmp_path: Path) -> None:
    served, client = tls_pair(tmp_path)
    gateway, _ = await start(served, max_anonymous_clients=2)
    stalled = [await connect(gateway) for _ in range(2)]  # no TLS handshake
    await gateway.wait(lambda: gateway.clients == 2, TIMEOUT_S)
    assert await closed(await connect(gateway))
    stalled[0].writer.close()
    await gateway.wait(lambda: gateway.clients == 1, TIMEOUT_S)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.port, ssl=client, server_hostname="127.0.0.1"
    )
    assert await asyncio.wait_for(reader.readexactly(1), TIMEOUT_S) == b"\x01"
    writer.close()


async def test_event_callbacks_per_client_are_bounded(start: Start) -> None:
    gateway, _ = await start(max_client_callbacks=2)
    peer = await connect(gateway)
    await peer.ok(Proc.CONNECT_OPEN, open_args())
    register = Packer()
    register.int32(EventId.LIFECYCLE)
    register.boolean(False)
    for _ in range(2):
        await peer.ok(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, register.data())
    code, text = await peer.error(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, register.data())
    assert code == ErrorCode.RESOURCE_BUSY
    assert text is not None and "2 event callbacks" in text
    assert gateway.callbacks == 2


async def test_a_client_that_never_opens_is_closed(start: Start) -> None:
    gateway, _ = await start(handshake_timeout_s=0.3)
    peer = await connect(gateway)
    await peer.ok(Proc.AUTH_LIST)
    assert await closed(peer)


async def test_a_slow_packet_is_closed(start: Start) -> None:
    gateway, _ = await start(packet_timeout_s=0.3)
    peer = await connect(gateway)
    await peer.ok(Proc.CONNECT_OPEN, open_args())
    peer.writer.write(b"\0\0")
    assert await closed(peer)


async def test_keepalive_closes_a_dead_peer_and_keeps_a_live_one(start: Start) -> None:
    gateway, _ = await start(keepalive_interval_s=0.1, keepalive_count=2)
    dead, live = await connect(gateway), await connect(gateway)
    feature = Packer()
    feature.int32(10)  # VIR_DRV_FEATURE_PROGRAM_KEEPALIVE
    for peer in (dead, live):
        await peer.ok(Proc.CONNECT_OPEN, open_args())
        await peer.ok(Proc.CONNECT_SUPPORTS_FEATURE, feature.data())

    async def answer(pings: int) -> None:
        for _ in range(pings):
            header, _ = await live.receive()
            assert (header.program, header.procedure) == (KEEPALIVE_PROGRAM, KeepaliveProc.PING)
            await live.send(KEEPALIVE_PROGRAM, KeepaliveProc.PONG)

    answering = asyncio.create_task(answer(4))
    assert await closed(dead)
    await answering
    await answer(4)  # longer than the dead one lasted
    await live.ok(Proc.DOMAIN_GET_INFO, domain_payload())


def test_a_recurring_error_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    throttled = Throttled(logging.getLogger("test"), 3600)
    for _ in range(1000):
        throttled.warning("emfile", "out of descriptors")
    assert [r.getMessage() for r in caplog.records] == ["out of descriptors"]
    again = Throttled(logging.getLogger("test"), 0.0)
    for _ in range(3):
        again.warning("k", "x")
    assert len(caplog.records) == 4


def test_the_gateway_command_takes_every_setting() -> None:
    from agent.cli import build_parser
    from agent.cli.gateway import GATEWAY_GROUPS, gateway_settings

    args = build_parser().parse_args(
        [
            "gateway",
            "--max-clients",
            "3",
            "--keepalive-interval",
            "0.5",
            "--tls-allowed-dn",
            "CN=a",
            "--tls-allowed-dn",
            "CN=b*",
            "--authz",
            "/etc/authz.toml",
        ]
    )
    settings = gateway_settings(args)
    assert (settings.max_clients, settings.keepalive_interval_s) == (3, 0.5)
    assert settings.tls_allowed_dn == ("CN=a", "CN=b*")
    assert str(settings.authz) == "/etc/authz.toml"
    assert settings.max_client_requests == 5
    assert {n for names in GATEWAY_GROUPS.values() for n in names} == set(
        GatewaySettings.model_fields
    )


def test_gateway_settings_come_from_flags_then_virtbus_gateway_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.cli import build_parser
    from agent.cli.gateway import gateway_settings

    monkeypatch.setenv("VIRTBUS_GATEWAY_MAX_CLIENTS", "7")
    monkeypatch.setenv("VIRTBUS_GATEWAY_KEEPALIVE_COUNT", "2")
    args = build_parser().parse_args(["gateway", "--keepalive-count", "3"])
    settings = gateway_settings(args)
    assert (settings.max_clients, settings.keepalive_count) == (7, 3)


def test_each_procedure_carries_the_function_name_libvirt_gives_it() -> None:
    assert {p: a.api for p, a in ACCESS.items() if API_NAMES.get(p, a.api) != a.api} == {}
