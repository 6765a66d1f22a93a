"""The gateway's sessions over a real socket, with the bus faked: procedures, errors,
keepalive, events, cleanup."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.client import Connection, VirtbusError
from agent.client.connection import Op, PullWatcher
from agent.client.events import EventKind
from agent.gateway import procedures
from agent.gateway.protocol import (
    KEEPALIVE_PROGRAM,
    REMOTE_PROGRAM,
    Header,
    KeepaliveProc,
    MessageType,
    Proc,
    Status,
    WireDomain,
    packet_length,
)
from agent.gateway.server import Client
from agent.gateway.stats import ParamType, pack_params
from agent.gateway.xdr import Packer, Unpacker, XdrError
from schemas.codes import ErrorCode, EventId
from schemas.commands import op_of
from schemas.domain import DomainRecord
from schemas.events import DomainRef, Event, LifecycleEvent
from schemas.replies import DomainInfo, DomainList, DomainTuning, Pong, Result

WEB = DomainRecord(
    name="web",
    uuid=uuid.UUID("4dc2c2aa-25cf-4819-b3b9-7cba23a0d79d"),
    id=-1,
    state=5,
    reason=0,
    persistent=True,
    autostart=False,
)
TIMEOUT_S = 5
STARTED = LifecycleEvent(
    host="h1",
    time=datetime.now(UTC),
    seq=1,
    domain=DomainRef(name="web", uuid=WEB.uuid, id=4242),
    origin="agent",
    event="started",
    event_code=2,
    detail="booted",
    detail_code=0,
)


class FakeBus(Connection):
    """Answers the gateway's commands from a table, and records them."""

    def __init__(self) -> None:
        super().__init__("amqp://unused")
        self.calls: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = []
        self.callbacks: dict[int, Callable[[Event], Awaitable[None] | None]] = {}
        self.deregistered: list[int] = []
        self.freed = asyncio.Event()
        self.at_once: Event | None = None

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
        self.calls.append((host, op, args, target))
        if op == "host.ping":
            return Pong(host=host, time=datetime.now(UTC))
        if op == "host.list_domains":
            return DomainList(domains=[WEB])
        if op == "domain.get_info":
            return DomainInfo(
                state=1, max_mem_kib=65536, memory_kib=1024, nr_virt_cpu=2, cpu_time_ns=7
            )
        if op == "domain.get_state":
            return WEB
        if op == "domain.get_tuning":
            return DomainTuning(cpu_shares=0, vcpu_period=100000, vcpu_quota=300000)
        if op == "domain.destroy":
            raise VirtbusError.of(ErrorCode.OPERATION_INVALID, "domain is not running", host)
        if target == {"name": "web"} or target == {"uuid": str(WEB.uuid)}:
            return WEB
        raise VirtbusError.of(ErrorCode.NO_DOMAIN, f"no domain matching {target}", host)

    async def subscribe(
        self,
        host: str,
        domain: str | None,
        kind: EventKind | None,
        callback: Callable[[Event], Awaitable[None] | None],
    ) -> int:
        callback_id = len(self.callbacks) + 1
        self.callbacks[callback_id] = callback
        if self.at_once is not None:
            delivered = callback(self.at_once)
            assert delivered is not None
            self.delivering = asyncio.ensure_future(delivered)
            await asyncio.sleep(0)  # let it run as far as it can before the reply
        return callback_id

    async def domain_event_deregister_any(self, callback_id: int) -> None:
        self.deregistered.append(callback_id)
        self.freed.set()


class Peer:
    """A libvirt client's side of the socket, one packet at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.serial = 0

    async def send(self, program: int, procedure: int, payload: bytes = b"") -> int:
        self.serial += 1
        header = Header(program, 1, procedure, MessageType.CALL, self.serial, Status.OK)
        self.writer.write(header.pack(payload))
        await self.writer.drain()
        return self.serial

    async def receive(self) -> tuple[Header, Unpacker]:
        async with asyncio.timeout(TIMEOUT_S):
            length = packet_length(await self.reader.readexactly(4))
            header, payload = Header.unpack(await self.reader.readexactly(length))
        return header, Unpacker(payload)

    async def call(self, procedure: int, payload: bytes = b"") -> tuple[Header, Unpacker]:
        serial = await self.send(REMOTE_PROGRAM, procedure, payload)
        header, body = await self.receive()
        assert (header.serial, header.type) == (serial, MessageType.REPLY)
        return header, body

    async def ok(self, procedure: int, payload: bytes = b"") -> Unpacker:
        header, body = await self.call(procedure, payload)
        assert header.status == Status.OK
        return body

    async def error(self, procedure: int, payload: bytes = b"") -> tuple[int, str | None]:
        header, body = await self.call(procedure, payload)
        assert header.status == Status.ERROR
        code = body.int32()
        body.int32()
        return code, body.optional(lambda: body.string(10_000))

    async def open(self, uri: str = "virtbus:///h1") -> None:
        packer = Packer()
        packer.optional(uri, packer.string)
        packer.uint32(0)
        await self.ok(Proc.CONNECT_OPEN, packer.data())


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
async def peer(bus: FakeBus) -> AsyncIterator[Peer]:
    served: list[asyncio.Task[None]] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        served.append(task)
        await Client(bus, reader, writer).serve()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    yield Peer(reader, writer)
    writer.close()
    await asyncio.wait_for(asyncio.gather(*served, return_exceptions=True), TIMEOUT_S)
    server.close()
    await server.wait_closed()


def domain_payload(*tail: int) -> bytes:
    packer = Packer()
    WireDomain(WEB.name, WEB.uuid, WEB.id).pack(packer)
    for value in tail:
        packer.uint32(value)
    return packer.data()


async def test_ping_gets_pong(peer: Peer) -> None:
    await peer.send(KEEPALIVE_PROGRAM, KeepaliveProc.PING)
    header, _ = await peer.receive()
    assert (header.program, header.procedure, header.type) == (
        KEEPALIVE_PROGRAM,
        KeepaliveProc.PONG,
        MessageType.MESSAGE,
    )


async def test_an_unknown_procedure_is_no_support_at_once(peer: Peer) -> None:
    code, text = await peer.error(61)  # DOMAIN_MIGRATE_PREPARE: a step, no function
    assert code == ErrorCode.NO_SUPPORT
    assert text == "this function is not supported by the connection driver: procedure 61"


async def test_an_unsupported_function_is_named_as_libvirt_names_it(peer: Peer) -> None:
    await peer.open()
    code, text = await peer.error(277, domain_payload(0))  # DOMAIN_GET_HOSTNAME
    assert code == ErrorCode.NO_SUPPORT
    assert text == "this function is not supported by the connection driver: virDomainGetHostname"


async def test_calls_before_open_are_refused(peer: Peer) -> None:
    code, _ = await peer.error(Proc.DOMAIN_LOOKUP_BY_NAME, b"\0\0\0\x03web\0")
    assert code == ErrorCode.OPERATION_INVALID


async def test_the_uri_must_name_a_host(peer: Peer) -> None:
    packer = Packer()
    packer.optional("virtbus:///", packer.string)
    packer.uint32(0)
    code, text = await peer.error(Proc.CONNECT_OPEN, packer.data())
    assert code == ErrorCode.INVALID_ARG
    assert text is not None and "must name a virtbus host" in text


async def test_open_pings_the_host_the_path_names(peer: Peer, bus: FakeBus) -> None:
    await peer.open("lxc:///h7")
    assert bus.calls == [("h7", "host.ping", None, None)]


async def test_list_all_domains_maps_flags_and_packs_domains(peer: Peer, bus: FakeBus) -> None:
    await peer.open()
    packer = Packer()
    packer.int32(1)
    packer.uint32(1 | 16 | 1024)  # ACTIVE | RUNNING | AUTOSTART
    body = await peer.ok(Proc.CONNECT_LIST_ALL_DOMAINS, packer.data())
    assert bus.calls[-1][2] == {"flags": ["active", "running", "autostart"]}
    assert body.array(lambda: WireDomain.unpack(body), 10) == [WireDomain("web", WEB.uuid, -1)]
    assert body.uint32() == 1
    body.done()


async def test_an_agents_error_keeps_its_code_and_message(peer: Peer) -> None:
    await peer.open()
    code, text = await peer.error(Proc.DOMAIN_DESTROY, domain_payload())
    assert code == ErrorCode.OPERATION_INVALID
    assert text == "Requested operation is not valid: domain is not running"


async def test_unknown_flags_are_invalid_arg(peer: Peer) -> None:
    await peer.open()
    code, text = await peer.error(Proc.DOMAIN_CREATE_WITH_FLAGS, domain_payload(2))
    assert code == ErrorCode.INVALID_ARG
    assert text == "invalid argument: unsupported flags (0x2) in function virDomainCreateWithFlags"


async def test_a_malformed_call_is_answered_and_the_session_goes_on(peer: Peer) -> None:
    await peer.open()
    code, _ = await peer.error(Proc.DOMAIN_GET_STATE, b"\0\0\0\x09we")
    assert code == ErrorCode.INVALID_ARG
    body = await peer.ok(Proc.DOMAIN_GET_AUTOSTART, domain_payload())
    assert body.int32() == 0


async def test_get_info_packs_char_and_short_as_four_bytes(peer: Peer) -> None:
    await peer.open()
    body = await peer.ok(Proc.DOMAIN_GET_INFO, domain_payload())
    assert body.remaining == 4 + 8 + 8 + 4 + 8
    assert body.uint32() == 1
    assert (body.uint64(), body.uint64(), body.uint32(), body.uint64()) == (65536, 1024, 2, 7)


def memory_params(*params: tuple[str, ParamType, int], flags: int = 0) -> bytes:
    packer = Packer()
    pack_params(packer, list(params))
    packer.uint32(flags)
    return domain_payload() + packer.data()


@pytest.mark.parametrize(
    ("procedure", "payload", "sent"),
    [
        (Proc.DOMAIN_SET_MEMORY, b"", {"live": False, "config": False, "memory_kib": 98304}),
        (
            Proc.DOMAIN_SET_MEMORY_FLAGS,
            b"\0\0\0\2",
            {"live": False, "config": True, "memory_kib": 98304},
        ),
        (Proc.DOMAIN_SET_VCPUS, b"", {"live": False, "config": False, "vcpus": 2}),
        (Proc.DOMAIN_SET_VCPUS_FLAGS, b"\0\0\0\3", {"live": True, "config": True, "vcpus": 2}),
    ],
    ids=["setmem", "setmem-config", "setvcpus", "setvcpus-live-config"],
)
async def test_setmem_and_setvcpus_change_the_definitions_their_flags_name(
    peer: Peer, bus: FakeBus, procedure: Proc, payload: bytes, sent: dict[str, Any]
) -> None:
    await peer.open()
    packer = Packer()
    if procedure in (Proc.DOMAIN_SET_MEMORY, Proc.DOMAIN_SET_MEMORY_FLAGS):
        packer.uint64(98304)
    else:
        packer.uint32(2)
    await peer.ok(procedure, domain_payload() + packer.data() + payload)
    assert bus.calls[-1][1:3] == ("domain.set_tuning", sent)


@pytest.mark.parametrize(
    ("flags", "count", "asked"),
    [
        (0, 2, ["domain.get_info"]),
        (2 | 4, 3, ["domain.get_tuning"]),
        (1, 2, ["domain.get_info"]),
        (3, None, []),
    ],
    ids=["current", "config-maximum", "live", "live-and-config"],
)
async def test_vcpucount_config_is_the_persistent_definitions(
    peer: Peer, bus: FakeBus, flags: int, count: int | None, asked: list[str]
) -> None:
    await peer.open()
    sent = len(bus.calls)
    packer = Packer()
    packer.uint32(flags)
    payload = domain_payload() + packer.data()
    if count is None:
        code, _ = await peer.error(Proc.DOMAIN_GET_VCPUS_FLAGS, payload)
        assert code in (ErrorCode.OPERATION_INVALID, ErrorCode.INVALID_ARG)
    else:
        assert (await peer.ok(Proc.DOMAIN_GET_VCPUS_FLAGS, payload)).int32() == count
    assert [op for _, op, _, _ in bus.calls[sent:]] == asked


def scheduler_params(*params: tuple[str, ParamType, int], flags: int | None = None) -> bytes:
    packer = Packer()
    pack_params(packer, list(params))
    if flags is not None:
        packer.uint32(flags)
    return domain_payload() + packer.data()


async def test_a_hard_limit_set_is_the_domains_memory(peer: Peer, bus: FakeBus) -> None:
    await peer.open()
    await peer.ok(
        Proc.DOMAIN_SET_MEMORY_PARAMETERS, memory_params(("hard_limit", ParamType.ULLONG, 98304))
    )
    assert bus.calls[-1][1:3] == (
        "domain.set_tuning",
        {"live": False, "config": False, "memory_kib": 98304},
    )


async def test_memory_limits_set_together_in_one_command(peer: Peer, bus: FakeBus) -> None:
    await peer.open()
    params = memory_params(
        ("swap_hard_limit", ParamType.ULLONG, 262144),
        ("hard_limit", ParamType.ULLONG, 131072),
        ("soft_limit", ParamType.ULLONG, 65536),
        flags=2,
    )
    await peer.ok(Proc.DOMAIN_SET_MEMORY_PARAMETERS, params)
    changes = {"memory_kib": 131072, "soft_limit_kib": 65536, "swap_hard_limit_kib": 262144}
    assert bus.calls[-1][1:3] == ("domain.set_tuning", {"live": False, "config": True, **changes})


@pytest.mark.parametrize(
    ("procedure", "flags", "affect"),
    [
        (Proc.DOMAIN_SET_SCHEDULER_PARAMETERS, None, {"live": False, "config": False}),
        (Proc.DOMAIN_SET_SCHEDULER_PARAMETERS_FLAGS, 1, {"live": True, "config": False}),
        (Proc.DOMAIN_SET_SCHEDULER_PARAMETERS_FLAGS, 3, {"live": True, "config": True}),
    ],
    ids=["no-flags", "live", "live-and-config"],
)
async def test_cpu_shares_set_with_the_flags_given(
    peer: Peer, bus: FakeBus, procedure: Proc, flags: int | None, affect: dict[str, bool]
) -> None:
    await peer.open()
    params = scheduler_params(("cpu_shares", ParamType.ULLONG, 512), flags=flags)
    await peer.ok(procedure, params)
    assert bus.calls[-1][1:3] == ("domain.set_tuning", {**affect, "cpu_shares": 512})


@pytest.mark.parametrize(
    ("procedure", "param", "code", "text"),
    [
        (
            Proc.DOMAIN_SET_MEMORY_PARAMETERS,
            ("soft_limit", ParamType.ULLONG, 9007199254740991),
            ErrorCode.NO_SUPPORT,
            "this function is not supported by the connection driver: a soft_limit of "
            "unlimited on a virtbus host: give a size",
        ),
        (
            Proc.DOMAIN_SET_MEMORY_PARAMETERS,
            ("min_guarantee", ParamType.ULLONG, 1),
            ErrorCode.ARGUMENT_UNSUPPORTED,
            "argument unsupported: parameter 'min_guarantee' not supported",
        ),
        (
            Proc.DOMAIN_SET_MEMORY_PARAMETERS,
            ("hard_limit", ParamType.LLONG, 65536),
            ErrorCode.INVALID_ARG,
            "invalid argument: invalid type 'llong' for parameter 'hard_limit', expected 'ullong'",
        ),
        (
            Proc.DOMAIN_SET_SCHEDULER_PARAMETERS_FLAGS,
            ("vcpu_quota", ParamType.LLONG, 50000),
            ErrorCode.NO_SUPPORT,
            "this function is not supported by the connection driver: scheduler parameter "
            "'vcpu_quota' on a virtbus host: a domain's CPU bandwidth is its vCPU count "
            "(setvcpus)",
        ),
        (
            Proc.DOMAIN_SET_SCHEDULER_PARAMETERS_FLAGS,
            ("weight", ParamType.UINT, 1),
            ErrorCode.ARGUMENT_UNSUPPORTED,
            "argument unsupported: parameter 'weight' not supported",
        ),
    ],
    ids=["unlimited", "unknown", "wrong-type", "quota", "xen-weight"],
)
async def test_tuning_a_domain_cannot_have_is_refused_unsent(
    peer: Peer,
    bus: FakeBus,
    procedure: Proc,
    param: tuple[str, ParamType, int],
    code: ErrorCode,
    text: str,
) -> None:
    await peer.open()
    sent = len(bus.calls)
    payload = (
        memory_params(param)
        if procedure == Proc.DOMAIN_SET_MEMORY_PARAMETERS
        else (scheduler_params(param, flags=0))
    )
    assert await peer.error(procedure, payload) == (code, text)
    assert [op for _, op, _, _ in bus.calls[sent:]] == []


async def test_a_parameter_given_twice_is_refused(peer: Peer, bus: FakeBus) -> None:
    await peer.open()
    sent = len(bus.calls)
    twice = memory_params(
        ("soft_limit", ParamType.ULLONG, 65536), ("soft_limit", ParamType.ULLONG, 32768)
    )
    assert await peer.error(Proc.DOMAIN_SET_MEMORY_PARAMETERS, twice) == (
        ErrorCode.INVALID_ARG,
        "invalid argument: parameter 'soft_limit' occurs multiple times",
    )
    assert bus.calls[sent:] == []


async def test_no_parameters_change_nothing_of_a_domain_that_exists(
    peer: Peer, bus: FakeBus
) -> None:
    await peer.open()
    await peer.ok(Proc.DOMAIN_SET_MEMORY_PARAMETERS, memory_params())
    assert bus.calls[-1][1:4] == ("domain.lookup", None, {"uuid": str(WEB.uuid)})


async def test_an_unexpected_answer_is_internal_error_not_a_crash(peer: Peer) -> None:
    await peer.open()
    code, _ = await peer.error(Proc.DOMAIN_GET_STATE, domain_payload(0))
    assert code == ErrorCode.INTERNAL_ERROR
    body = await peer.ok(Proc.DOMAIN_IS_PERSISTENT, domain_payload())
    assert body.int32() == 1


async def test_events_are_pushed_to_the_callback_and_freed_on_disconnect(
    peer: Peer, bus: FakeBus
) -> None:
    await peer.open()
    packer = Packer()
    packer.int32(EventId.LIFECYCLE)
    packer.boolean(False)
    body = await peer.ok(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, packer.data())
    callback_id = body.int32()
    delivered = bus.callbacks[callback_id](STARTED)
    assert delivered is not None
    await delivered
    header, message = await peer.receive()
    assert (header.procedure, header.type) == (
        Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE,
        MessageType.MESSAGE,
    )
    assert message.int32() == callback_id
    assert WireDomain.unpack(message) == WireDomain("web", WEB.uuid, 4242)
    assert (message.int32(), message.int32()) == (2, 0)
    message.done()
    peer.writer.close()
    await peer.writer.wait_closed()
    await asyncio.wait_for(bus.freed.wait(), TIMEOUT_S)
    assert bus.deregistered == [callback_id]


async def test_an_event_at_registration_comes_after_the_reply(peer: Peer, bus: FakeBus) -> None:
    """The client learns the callback ID from the reply: an event before it is lost."""
    await peer.open()
    bus.at_once = STARTED
    packer = Packer()
    packer.int32(EventId.LIFECYCLE)
    packer.boolean(False)
    body = await peer.ok(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, packer.data())
    callback_id = body.int32()
    header, message = await peer.receive()
    assert header.procedure == Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE
    assert message.int32() == callback_id


async def test_every_event_id_libvirt_knows_registers(peer: Peer, bus: FakeBus) -> None:
    """As libvirtd: an ID the bus never feeds (IO_ERROR) registers and never fires; an
    ID out of range is refused."""
    await peer.open()
    packer = Packer()
    packer.int32(5)  # IO_ERROR
    packer.boolean(False)
    body = await peer.ok(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, packer.data())
    assert body.int32() in bus.callbacks
    packer = Packer()
    packer.int32(64)
    packer.boolean(False)
    code, _ = await peer.error(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, packer.data())
    assert code == ErrorCode.INTERNAL_ERROR


@pytest.mark.parametrize(
    ("flags", "asked", "listed"),
    [
        (128, [], []),  # OTHER: a shut-off domain is not "other"
        (128 | 64 | 4, ["persistent"], ["web"]),  # OTHER | SHUTOFF, PERSISTENT
        (256, None, []),  # MANAGEDSAVE: no domain has a managed save image
        (512 | 2, ["inactive"], ["web"]),  # NO_MANAGEDSAVE, INACTIVE
        (4096 | 8192, [], ["web"]),  # HAS_SNAPSHOT | NO_SNAPSHOT: libvirt ORs the two
        (256 | 512 | 16384 | 32768, [], ["web"]),  # both of managed save and checkpoint
        (4096 | 8192 | 256, None, []),  # both of snapshot, but only MANAGEDSAVE
    ],
)
async def test_list_flags_the_agent_cannot_filter_are_filtered_here(
    peer: Peer, bus: FakeBus, flags: int, asked: list[str] | None, listed: list[str]
) -> None:
    await peer.open()
    packer = Packer()
    packer.int32(1)
    packer.uint32(flags)
    body = await peer.ok(Proc.CONNECT_LIST_ALL_DOMAINS, packer.data())
    names = [domain.name for domain in body.array(lambda: WireDomain.unpack(body), 10)]
    assert names == listed
    assert body.uint32() == len(listed)
    sent = [args for _, op, args, _ in bus.calls if op == "host.list_domains"]
    assert sent == ([] if asked is None else [{"flags": asked}])


async def test_list_without_results_gives_the_count_only(peer: Peer) -> None:
    await peer.open()
    packer = Packer()
    packer.int32(0)
    packer.uint32(0)
    body = await peer.ok(Proc.CONNECT_LIST_ALL_DOMAINS, packer.data())
    assert body.uint32() == 0  # no domains
    assert body.uint32() == 1  # but one counted
    body.done()


async def test_a_domains_callback_gets_only_that_domains_events(peer: Peer, bus: FakeBus) -> None:
    await peer.open()
    packer = Packer()
    packer.int32(EventId.LIFECYCLE)
    packer.optional(WireDomain(WEB.name, WEB.uuid, WEB.id), lambda d: d.pack(packer))
    body = await peer.ok(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, packer.data())
    callback = bus.callbacks[body.int32()]
    other = STARTED.model_copy(
        update={"domain": DomainRef(name="db", uuid=uuid.uuid4(), id=77), "seq": 2}
    )
    for event in (other, STARTED):
        delivered = callback(event)
        assert delivered is not None
        await delivered
    _, message = await peer.receive()
    message.int32()
    assert WireDomain.unpack(message).name == "web"


async def test_an_unknown_program_is_no_support(peer: Peer) -> None:
    await peer.send(0x12345678, 1)
    header, body = await peer.receive()
    assert (header.type, header.status) == (MessageType.REPLY, Status.ERROR)
    assert body.int32() == ErrorCode.NO_SUPPORT


async def test_a_packet_length_out_of_bounds_closes_the_connection(peer: Peer) -> None:
    peer.writer.write(b"\xff\xff\xff\xff")
    await peer.writer.drain()
    assert await asyncio.wait_for(peer.reader.read(), TIMEOUT_S) == b""


async def list_all(peer: Peer) -> None:
    packer = Packer()
    packer.int32(1)
    packer.uint32(0)
    await peer.ok(Proc.CONNECT_LIST_ALL_DOMAINS, packer.data())


def state_calls(bus: FakeBus) -> int:
    return sum(1 for call in bus.calls if call[1] == "domain.get_state")


async def test_a_listing_answers_each_listed_domains_next_state_once(
    peer: Peer, bus: FakeBus
) -> None:
    """virsh list: one listing, then each domain's state, with no bus call for those."""
    await peer.open()
    await list_all(peer)
    body = await peer.ok(Proc.DOMAIN_GET_STATE, domain_payload(0))
    assert (body.int32(), body.int32()) == (WEB.state, WEB.reason)
    assert state_calls(bus) == 0
    code, _ = await peer.error(Proc.DOMAIN_GET_STATE, domain_payload(0))
    assert code == ErrorCode.INTERNAL_ERROR  # the fake bus's answer: it was asked
    assert state_calls(bus) == 1


async def test_a_call_that_may_change_a_domain_forgets_the_listing(
    peer: Peer, bus: FakeBus
) -> None:
    await peer.open()
    await list_all(peer)
    await peer.error(Proc.DOMAIN_DESTROY, domain_payload())
    await peer.error(Proc.DOMAIN_GET_STATE, domain_payload(0))
    assert state_calls(bus) == 1


async def test_a_listed_state_runs_out(
    peer: Peer, bus: FakeBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procedures, "LISTED_STATE_S", 0.0)
    await peer.open()
    await list_all(peer)
    await peer.error(Proc.DOMAIN_GET_STATE, domain_payload(0))
    assert state_calls(bus) == 1


def test_domains_pack_as_the_packer_packs_them() -> None:
    records = [
        WEB.model_copy(update={"name": name, "uuid": uuid.uuid4(), "id": domain_id})
        for name, domain_id in (("a", -1), ("abcd", 7), ("abcde", 2**31 - 1), ("é" * 3, 1))
    ]
    packer = Packer()
    packer.array([WireDomain(r.name, r.uuid, r.id) for r in records], lambda d: d.pack(packer))
    assert procedures.pack_domains(records) == packer.data()
    with pytest.raises(XdrError):
        procedures.pack_domains([WEB.model_copy(update={"id": 2**31})])
