"""libvirt's stream protocol at the gateway (agent/gateway/console.py) and the event
table (agent/gateway/events.py), with a fake console and a fake socket."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from agent.client import Connection
from agent.client.streams import Console
from agent.gateway.console import ConsoleRelay
from agent.gateway.events import EVENT_ROWS, event_message
from agent.gateway.procedures import Session
from agent.gateway.protocol import Header, MessageType, Proc, Status, WireDomain, packet_length
from agent.gateway.xdr import Unpacker
from agent.streams import StreamError
from schemas.codes import ErrorCode, EventId
from schemas.events import DeviceEvent, DomainRef, MetadataChangeEvent, TunableEvent
from schemas.replies import ConsoleSession

WAIT_S = 5.0
SERIAL = 7
REF = DomainRef(name="web", uuid=uuid.UUID(int=1), id=42)


@dataclass
class FakeConsole:
    """The bus side of a console: what the relay sent, and output to give it."""

    output: asyncio.Queue[bytes | StreamError | None] = field(default_factory=asyncio.Queue)
    sent: list[bytes] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    session: ConsoleSession = field(
        default_factory=lambda: ConsoleSession(
            session="s", queue="q", max_frame=65536, window=4, idle_timeout_s=20.0
        )
    )

    async def recv(self) -> bytes | None:
        item = await self.output.get()
        if isinstance(item, StreamError):
            raise item
        return item

    async def send(self, data: bytes) -> None:
        self.sent.append(data)

    async def finish(self) -> None:
        self.ended.append("finish")

    async def abort(self, message: str = "") -> None:
        self.ended.append("abort")

    async def close(self) -> None:
        self.ended.append("close")


class Wire:
    """The client's socket: the packets the gateway wrote."""

    def __init__(self) -> None:
        self.packets: asyncio.Queue[tuple[Header, bytes]] = asyncio.Queue()

    async def send(self, packet: bytes) -> None:
        length = packet_length(packet[:4])
        self.packets.put_nowait(Header.unpack(packet[4 : 4 + length]))

    async def next(self) -> tuple[Header, bytes]:
        return await asyncio.wait_for(self.packets.get(), WAIT_S)


def relay() -> tuple[ConsoleRelay, FakeConsole, Wire, Session]:
    wire = Wire()
    session = Session(cast(Connection, None), wire.send)
    console = FakeConsole()
    relay = ConsoleRelay(session, cast(Console, console), SERIAL)
    session.streams[SERIAL] = relay
    replied = asyncio.Event()
    replied.set()
    relay.start(replied)
    return relay, console, wire, session


def stream_header(header: Header, status: Status) -> None:
    assert (header.procedure, header.type, header.serial, header.status) == (
        Proc.DOMAIN_OPEN_CONSOLE,
        MessageType.STREAM,
        SERIAL,
        status,
    )


async def test_output_is_continue_packets_then_an_empty_continue_at_its_end() -> None:
    """libvirtd's end of file; an OK the client did not ask for would make libvirt's client
    drop its connection (virt-manager's, when a domain stops with its console open)."""
    _, console, wire, session = relay()
    console.output.put_nowait(b"hello")
    console.output.put_nowait(None)
    header, body = await wire.next()
    stream_header(header, Status.CONTINUE)
    assert body == b"hello"
    header, body = await wire.next()
    stream_header(header, Status.CONTINUE)
    assert body == b""
    # the client's finish after the end of file is confirmed; the bus side already ended
    await session.stream_packet(SERIAL, Status.OK, b"")
    header, _ = await wire.next()
    stream_header(header, Status.OK)
    assert "finish" not in console.ended
    assert SERIAL not in session.streams


async def test_input_goes_to_the_bus_in_order_and_a_finish_is_confirmed() -> None:
    _, console, wire, session = relay()
    for data in (b"a", b"b", b"c"):
        await session.stream_packet(SERIAL, Status.CONTINUE, data)
    await session.stream_packet(SERIAL, Status.OK, b"")
    header, _ = await wire.next()
    stream_header(header, Status.OK)
    assert console.sent == [b"a", b"b", b"c"]
    assert console.ended[:2] == ["finish", "close"]
    assert SERIAL not in session.streams


async def test_an_abort_is_confirmed_and_ends_the_session() -> None:
    _, console, wire, session = relay()
    await session.stream_packet(SERIAL, Status.ERROR, b"")
    header, _ = await wire.next()
    stream_header(header, Status.OK)
    assert console.ended[:2] == ["abort", "close"]
    await session.stream_packet(SERIAL, Status.CONTINUE, b"dropped")
    assert console.sent == []


async def test_a_failed_bus_side_is_an_error_packet_with_libvirts_code() -> None:
    _, console, wire, session = relay()
    console.output.put_nowait(StreamError(ErrorCode.OPERATION_FAILED, "the host went away"))
    header, body = await wire.next()
    stream_header(header, Status.ERROR)
    error = Unpacker(body)
    assert error.int32() == ErrorCode.OPERATION_FAILED
    assert error.int32() == 6  # VIR_FROM_DOM
    assert error.optional(lambda: error.string(1024)) == "operation failed: the host went away"
    assert SERIAL not in session.streams


async def test_a_client_that_goes_away_aborts_the_bus_side() -> None:
    _, console, _, session = relay()
    await session.close()
    assert console.ended[:2] == ["abort", "close"]
    assert session.streams == {}


def tunable(**params: int) -> TunableEvent:
    return TunableEvent(
        host="h1", time=datetime.now(UTC), seq=1, domain=REF, origin="agent", params=params
    )


def message_of(event_id: int, event: Any) -> tuple[Header, Unpacker]:
    packet = event_message(3, event_id, event)
    assert packet is not None
    header, body = Header.unpack(packet[4:])
    unpacker = Unpacker(body)
    assert unpacker.int32() == 3  # the callback ID
    assert WireDomain.unpack(unpacker) == WireDomain("web", REF.uuid, 42)
    return header, unpacker


def test_a_memory_change_is_a_balloon_change_and_not_a_tunable() -> None:
    header, body = message_of(EventId.BALLOON_CHANGE, tunable(memory_kib=32768))
    assert header.procedure == Proc.DOMAIN_EVENT_CALLBACK_BALLOON_CHANGE
    assert body.uint64() == 32768
    body.done()
    assert event_message(3, EventId.TUNABLE, tunable(memory_kib=32768)) is None


def test_a_cpu_change_is_a_tunable_with_libvirts_typed_keys() -> None:
    header, body = message_of(EventId.TUNABLE, tunable(vcpus=2))
    assert header.procedure == Proc.DOMAIN_EVENT_CALLBACK_TUNABLE
    assert body.uint32() == 2
    assert (body.string(64), body.int32(), body.uint64()) == ("cputune.global_period", 4, 100000)
    assert (body.string(64), body.int32(), body.int64()) == ("cputune.global_quota", 3, 200000)
    body.done()
    assert event_message(3, EventId.BALLOON_CHANGE, tunable(vcpus=2)) is None


def test_cpu_shares_are_a_tunable_and_memory_limits_are_not() -> None:
    header, body = message_of(EventId.TUNABLE, tunable(cpu_shares=512, soft_limit_kib=8192))
    assert header.procedure == Proc.DOMAIN_EVENT_CALLBACK_TUNABLE
    assert body.uint32() == 1
    assert (body.string(64), body.int32(), body.uint64()) == ("cputune.cpu_shares", 4, 512)
    body.done()
    assert event_message(3, EventId.TUNABLE, tunable(swap_hard_limit_kib=65536)) is None


def test_a_shut_off_domains_definition_changes_silently() -> None:
    shut_off = REF.model_copy(update={"id": -1})
    for params in ({"cpu_shares": 512}, {"memory_kib": 32768}, {"vcpus": 1}):
        event = tunable(**params).model_copy(update={"domain": shut_off})
        assert event_message(3, EventId.TUNABLE, event) is None
        assert event_message(3, EventId.BALLOON_CHANGE, event) is None


def test_a_metadata_change_carries_its_type_and_namespace() -> None:
    event = MetadataChangeEvent(
        host="h1",
        time=datetime.now(UTC),
        seq=1,
        domain=REF,
        origin="agent",
        type="element",
        type_code=2,
        nsuri="http://example.org/app",
    )
    header, body = message_of(EventId.METADATA_CHANGE, event)
    assert header.procedure == Proc.DOMAIN_EVENT_CALLBACK_METADATA_CHANGE
    assert body.int32() == 2
    assert body.optional(lambda: body.string(1024)) == "http://example.org/app"
    body.done()


def test_a_device_event_is_added_or_removed_as_its_event_id_says() -> None:
    added = DeviceEvent.of(
        "added", host="h1", time=datetime.now(UTC), seq=1, domain=REF, origin="agent", alias="net1"
    )
    header, body = message_of(EventId.DEVICE_ADDED, added)
    assert header.procedure == Proc.DOMAIN_EVENT_CALLBACK_DEVICE_ADDED
    assert body.string(64) == "net1"
    body.done()
    assert event_message(3, EventId.DEVICE_REMOVED, added) is None


def test_every_row_is_fed_by_a_bus_kind() -> None:
    assert set(EVENT_ROWS) == {0, 1, 13, 15, 17, 18, 19, 23}
    assert event_message(3, 5, tunable(vcpus=1)) is None  # IO_ERROR: never fires
