"""XDR packing as libvirt's rpcgen lays it out, and refusal of bad input."""

from __future__ import annotations

import pytest

from agent.gateway.xdr import Packer, Unpacker, XdrError


def test_integers_are_big_endian_and_round_trip() -> None:
    packer = Packer()
    packer.int32(-1)
    packer.uint32(0x20008086)
    packer.int64(-2)
    packer.uint64(2**64 - 1)
    packer.boolean(True)
    data = packer.data()
    assert data[:8] == b"\xff\xff\xff\xff\x20\x00\x80\x86"
    assert len(data) == 4 + 4 + 8 + 8 + 4
    unpacker = Unpacker(data)
    assert unpacker.int32() == -1
    assert unpacker.uint32() == 0x20008086
    assert unpacker.int64() == -2
    assert unpacker.uint64() == 2**64 - 1
    assert unpacker.boolean() is True
    unpacker.done()


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("", b"\0\0\0\0"),
        ("a", b"\0\0\0\x01a\0\0\0"),
        ("abcd", b"\0\0\0\x04abcd"),
        ("abcde", b"\0\0\0\x05abcde\0\0\0"),
        ("é", b"\0\0\0\x02\xc3\xa9\0\0"),
    ],
)
def test_strings_are_counted_and_padded_to_four_bytes(text: str, encoded: bytes) -> None:
    packer = Packer()
    packer.string(text)
    assert packer.data() == encoded
    unpacker = Unpacker(encoded)
    assert unpacker.string(100) == text
    unpacker.done()


def test_fixed_opaque_has_no_count() -> None:
    packer = Packer()
    packer.fixed_opaque(bytes(range(16)), 16)
    assert packer.data() == bytes(range(16))
    with pytest.raises(XdrError):
        packer.fixed_opaque(b"short", 16)


def test_optional_is_a_bool_then_the_value() -> None:
    packer = Packer()
    packer.optional("x", packer.string)
    packer.optional(None, packer.string)
    assert packer.data() == b"\0\0\0\x01\0\0\0\x01x\0\0\0\0\0\0\0"
    unpacker = Unpacker(packer.data())
    assert unpacker.optional(lambda: unpacker.string(10)) == "x"
    assert unpacker.optional(lambda: unpacker.string(10)) is None
    unpacker.done()


def test_arrays_round_trip_and_respect_their_bound() -> None:
    packer = Packer()
    packer.array([1, 2, 3], packer.int32)
    unpacker = Unpacker(packer.data())
    assert unpacker.array(unpacker.int32, 3) == [1, 2, 3]
    with pytest.raises(XdrError, match="bound"):
        Unpacker(packer.data()).array(unpacker.int32, 2)


def test_chars_take_four_bytes_each() -> None:
    """``char model[32]`` (remote_node_get_info_ret) and ``char x<N>``: rpcgen packs
    every char as an int."""
    packer = Packer()
    packer.chars("x86", 4)
    assert packer.data() == b"\0\0\0x\0\0\0" + b"8" + b"\0\0\0" + b"6" + b"\0\0\0\0"
    packer = Packer()
    packer.chars("")
    assert packer.data() == b"\0\0\0\0"
    with pytest.raises(XdrError):
        Packer().chars("too long", 4)


@pytest.mark.parametrize(
    ("data", "read"),
    [
        (b"\0\0", lambda u: u.int32()),
        (b"\0\0\0\x08abc", lambda u: u.string(100)),
        (b"\0\0\0\x02", lambda u: u.boolean()),
        (b"\0\x10\0\0", lambda u: u.string(100)),
        (b"\0\0\0\x02\xff\xfe\0\0", lambda u: u.string(100)),
    ],
    ids=["short int", "short string", "bool 2", "string over its bound", "not UTF-8"],
)
def test_bad_input_is_an_xdr_error(data: bytes, read: object) -> None:
    with pytest.raises(XdrError):
        read(Unpacker(data))  # type: ignore[operator]


def test_leftover_bytes_are_an_error() -> None:
    unpacker = Unpacker(b"\0\0\0\x01\0\0\0\x02")
    unpacker.int32()
    assert unpacker.remaining == 4
    with pytest.raises(XdrError, match="left over"):
        unpacker.done()


def test_a_value_out_of_range_is_an_xdr_error() -> None:
    with pytest.raises(XdrError):
        Packer().uint32(-1)
    with pytest.raises(XdrError):
        Packer().int32(2**31)
