"""XDR (RFC 4506), the subset libvirt's remote protocol uses, typed.

Every item takes a multiple of four bytes. An ``Unpacker`` raises ``XdrError`` on input
that ends early, is out of range or is longer than its bound: never an IndexError or a
struct.error.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

from schemas.codes import ErrorCode
from schemas.errors import VirtbusError

T = TypeVar("T")

_INT = struct.Struct(">i")
_UINT = struct.Struct(">I")
_HYPER = struct.Struct(">q")
_UHYPER = struct.Struct(">Q")


class XdrError(VirtbusError, ValueError):
    """Bytes that are not the XDR expected."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.INVALID_ARG, detail)

    def __str__(self) -> str:
        return self.detail


def _padding(length: int) -> bytes:
    return b"\0" * (-length % 4)


class Packer:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def data(self) -> bytes:
        return b"".join(self._parts)

    def int32(self, value: int) -> None:
        self._pack(_INT, value)

    def uint32(self, value: int) -> None:
        self._pack(_UINT, value)

    def int64(self, value: int) -> None:
        self._pack(_HYPER, value)

    def uint64(self, value: int) -> None:
        self._pack(_UHYPER, value)

    def boolean(self, value: bool) -> None:
        self.int32(1 if value else 0)

    def fixed_opaque(self, data: bytes, length: int) -> None:
        if len(data) != length:
            raise XdrError(f"fixed opaque of {length} bytes given {len(data)}")
        self._parts += [data, _padding(length)]

    def opaque(self, data: bytes) -> None:
        self.uint32(len(data))
        self._parts += [data, _padding(len(data))]

    def string(self, text: str) -> None:
        self.opaque(text.encode())

    def optional(self, value: T | None, pack: Callable[[T], None]) -> None:
        """XDR's ``*x``: a bool saying whether the value follows, then the value."""
        self.boolean(value is not None)
        if value is not None:
            pack(value)

    def array(self, items: list[T], pack: Callable[[T], None]) -> None:
        """A variable-length array: its count, then each item."""
        self.uint32(len(items))
        for item in items:
            pack(item)

    def chars(self, text: str, length: int | None = None) -> None:
        """``char x[N]`` (fixed, NUL-padded) or ``char x<N>``: rpcgen packs each char as
        an int, four bytes each."""
        data = text.encode()
        if length is None:
            self.uint32(len(data))
        elif len(data) > length:
            raise XdrError(f"{text!r} is longer than {length} bytes")
        else:
            data = data.ljust(length, b"\0")
        for byte in data:
            self.int32(byte - 256 if byte > 127 else byte)

    def char_bytes(self, data: bytes) -> None:
        """``char x<N>`` holding bytes (SASL's messages): four bytes per byte."""
        self.uint32(len(data))
        for byte in data:
            self.int32(byte - 256 if byte > 127 else byte)

    def _pack(self, layout: struct.Struct, value: int) -> None:
        try:
            self._parts.append(layout.pack(value))
        except struct.error:
            raise XdrError(f"{value} does not fit in {layout.size * 8} bits") from None


class Unpacker:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def remaining(self) -> int:
        """Bytes not read yet: tells a call's ``_flags`` variant from the plain one."""
        return len(self._data) - self._at

    def done(self) -> None:
        """Check that nothing is left over."""
        if self._at != len(self._data):
            raise XdrError(f"{len(self._data) - self._at} bytes left over")

    def int32(self) -> int:
        return int(_INT.unpack(self._take(4))[0])

    def uint32(self) -> int:
        return int(_UINT.unpack(self._take(4))[0])

    def int64(self) -> int:
        return int(_HYPER.unpack(self._take(8))[0])

    def uint64(self) -> int:
        return int(_UHYPER.unpack(self._take(8))[0])

    def boolean(self) -> bool:
        value = self.int32()
        if value not in (0, 1):
            raise XdrError(f"{value} is not a bool")
        return value == 1

    def fixed_opaque(self, length: int) -> bytes:
        data = self._take(length)
        self._take(-length % 4)
        return data

    def opaque(self, limit: int) -> bytes:
        length = self.uint32()
        if length > limit:
            raise XdrError(f"{length} bytes is more than the bound of {limit}")
        return self.fixed_opaque(length)

    def string(self, limit: int) -> str:
        try:
            return self.opaque(limit).decode()
        except UnicodeDecodeError:
            raise XdrError("a string that is not UTF-8") from None

    def optional(self, unpack: Callable[[], T]) -> T | None:
        return unpack() if self.boolean() else None

    def array(self, unpack: Callable[[], T], limit: int) -> list[T]:
        count = self.uint32()
        if count > limit:
            raise XdrError(f"{count} items is more than the bound of {limit}")
        return [unpack() for _ in range(count)]

    def char_bytes(self, limit: int) -> bytes:
        """``char x<N>``: a count, then each byte as a (signed) int."""
        count = self.uint32()
        if count > limit:
            raise XdrError(f"{count} chars is more than the bound of {limit}")
        values = [self.int32() for _ in range(count)]
        if any(not -128 <= value <= 255 for value in values):
            raise XdrError("a char out of range")
        return bytes(value & 0xFF for value in values)

    def _take(self, length: int) -> bytes:
        end = self._at + length
        if end > len(self._data):
            raise XdrError(f"the data ends {end - len(self._data)} bytes early")
        data = self._data[self._at : end]
        self._at = end
        return data
