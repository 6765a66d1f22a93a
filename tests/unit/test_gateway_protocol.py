"""Packet framing and the shared structs of libvirt's remote protocol."""

from __future__ import annotations

import uuid

import pytest

from agent.gateway.protocol import (
    KEEPALIVE_PROGRAM,
    MESSAGE_MAX,
    REMOTE_PROGRAM,
    Header,
    KeepaliveProc,
    MessageType,
    Proc,
    Status,
    WireDomain,
    message,
    pack_error,
    packet_length,
)
from agent.gateway.xdr import Packer, Unpacker, XdrError

DOMAIN_UUID = uuid.UUID("4dc2c2aa-25cf-4819-b3b9-7cba23a0d79d")


def test_a_packet_counts_its_own_length_word() -> None:
    header = Header(REMOTE_PROGRAM, 1, Proc.CONNECT_OPEN, MessageType.CALL, 7, Status.OK)
    packet = header.pack(b"\0\0\0\x01")
    assert len(packet) == 32
    assert packet[:4] == b"\0\0\0\x20"
    assert packet_length(packet[:4]) == 28
    parsed, payload = Header.unpack(packet[4:])
    assert parsed == header
    assert payload == b"\0\0\0\x01"


def test_a_reply_keeps_the_calls_serial_and_procedure() -> None:
    call = Header(REMOTE_PROGRAM, 1, Proc.DOMAIN_DESTROY, MessageType.CALL, 42, Status.OK)
    reply = call.reply(Status.ERROR)
    assert (reply.procedure, reply.serial, reply.type, reply.status) == (
        Proc.DOMAIN_DESTROY,
        42,
        MessageType.REPLY,
        Status.ERROR,
    )


@pytest.mark.parametrize("length", [0, 27, MESSAGE_MAX + 1])
def test_a_length_out_of_bounds_is_refused(length: int) -> None:
    packer = Packer()
    packer.uint32(length)
    with pytest.raises(XdrError):
        packet_length(packer.data())


def test_a_packet_too_short_for_its_header_is_refused() -> None:
    with pytest.raises(XdrError):
        Header.unpack(b"\0" * 20)


def test_pong_is_a_message_with_serial_zero() -> None:
    packet = message(KEEPALIVE_PROGRAM, KeepaliveProc.PONG)
    header, payload = Header.unpack(packet[4:])
    assert header == Header(
        KEEPALIVE_PROGRAM, 1, KeepaliveProc.PONG, MessageType.MESSAGE, 0, Status.OK
    )
    assert payload == b""


def test_a_domain_is_name_uuid_id_and_inactive_is_minus_one() -> None:
    packer = Packer()
    WireDomain("web", DOMAIN_UUID, -1).pack(packer)
    data = packer.data()
    assert data == b"\0\0\0\x03web\0" + DOMAIN_UUID.bytes + b"\xff\xff\xff\xff"
    assert WireDomain.unpack(Unpacker(data)) == WireDomain("web", DOMAIN_UUID, -1)


def test_remote_error_layout() -> None:
    body = pack_error(55, "Requested operation is not valid: domain is not running")
    unpacker = Unpacker(body)
    assert unpacker.int32() == 55  # code
    assert unpacker.int32() == 6  # domain: VIR_FROM_DOM
    assert unpacker.optional(lambda: unpacker.string(1000)) == (
        "Requested operation is not valid: domain is not running"
    )
    assert unpacker.int32() == 2  # level: VIR_ERR_ERROR
    assert [unpacker.boolean() for _ in range(4)] == [False] * 4  # dom, str1..str3
    assert (unpacker.int32(), unpacker.int32()) == (0, 0)
    assert unpacker.boolean() is False  # net
    unpacker.done()


def test_procedure_numbers_match_remote_protocol_x() -> None:
    """A few checked by hand against libvirt's remote_protocol.x."""
    assert int(Proc.CONNECT_LIST_ALL_DOMAINS) == 273
    assert int(Proc.DOMAIN_GET_STATE) == 212
    assert int(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY) == 316
    assert int(Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE) == 318
    assert int(Proc.DOMAIN_EVENT_CALLBACK_REBOOT) == 319
    assert int(Proc.DOMAIN_GET_MESSAGES) == 426
