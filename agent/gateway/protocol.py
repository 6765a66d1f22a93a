"""libvirt's remote RPC protocol: packets, programs, procedure numbers and the structs
shared by many procedures (``src/rpc/virnetprotocol.x``, ``src/remote/remote_protocol.x``).

A packet is ``u32 length`` (counting itself), a six-word header, then the XDR payload.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum

from agent.gateway.xdr import Packer, Unpacker, XdrError
from schemas.codes import ErrorCode
from schemas.errors import VirtbusError

REMOTE_PROGRAM = 0x20008086
KEEPALIVE_PROGRAM = 0x6B656570
PROTOCOL_VERSION = 1
HEADER_BYTES = 24
LENGTH_BYTES = 4
# virnetprotocol.x VIR_NET_MESSAGE_MAX: no packet is longer
MESSAGE_MAX = 32 * 1024 * 1024
STRING_MAX = 4 * 1024 * 1024
LIST_MAX = 16384
UUID_BYTES = 16


class MessageType(IntEnum):
    CALL = 0
    REPLY = 1
    MESSAGE = 2
    STREAM = 3


class Status(IntEnum):
    OK = 0
    ERROR = 1
    CONTINUE = 2


class KeepaliveProc(IntEnum):
    PING = 1
    PONG = 2


class Proc(IntEnum):
    """``remote_procedure``: the procedures the gateway answers (others get NO_SUPPORT)."""

    CONNECT_OPEN = 1
    CONNECT_CLOSE = 2
    CONNECT_GET_TYPE = 3
    CONNECT_GET_VERSION = 4
    NODE_GET_INFO = 6
    DOMAIN_CREATE = 9
    DOMAIN_CREATE_XML = 10
    DOMAIN_DEFINE_XML = 11
    DOMAIN_DESTROY = 12
    DOMAIN_GET_XML_DESC = 14
    DOMAIN_GET_AUTOSTART = 15
    DOMAIN_GET_INFO = 16
    DOMAIN_GET_MAX_MEMORY = 17
    DOMAIN_GET_OS_TYPE = 19
    CONNECT_LIST_DEFINED_DOMAINS = 21
    DOMAIN_LOOKUP_BY_ID = 22
    DOMAIN_LOOKUP_BY_NAME = 23
    DOMAIN_LOOKUP_BY_UUID = 24
    CONNECT_NUM_OF_DEFINED_DOMAINS = 25
    DOMAIN_REBOOT = 27
    DOMAIN_RESUME = 28
    DOMAIN_SET_AUTOSTART = 29
    DOMAIN_SET_MEMORY = 31
    DOMAIN_SET_VCPUS = 32
    DOMAIN_SHUTDOWN = 33
    DOMAIN_SUSPEND = 34
    DOMAIN_UNDEFINE = 35
    CONNECT_LIST_DOMAINS = 37
    CONNECT_NUM_OF_DOMAINS = 51
    CONNECT_GET_HOSTNAME = 59
    CONNECT_SUPPORTS_FEATURE = 60
    AUTH_LIST = 66
    AUTH_SASL_INIT = 67
    AUTH_SASL_START = 68
    AUTH_SASL_STEP = 69
    AUTH_POLKIT = 70
    NODE_GET_SECURITY_MODEL = 122
    DOMAIN_IS_ACTIVE = 150
    DOMAIN_IS_PERSISTENT = 151
    CONNECT_GET_LIB_VERSION = 157
    DOMAIN_HAS_MANAGED_SAVE_IMAGE = 183
    DOMAIN_SNAPSHOT_NUM = 187
    DOMAIN_CREATE_WITH_FLAGS = 196
    DOMAIN_SET_VCPUS_FLAGS = 199
    DOMAIN_GET_VCPUS_FLAGS = 200
    DOMAIN_OPEN_CONSOLE = 201
    DOMAIN_SET_MEMORY_FLAGS = 204
    DOMAIN_GET_STATE = 212
    DOMAIN_UNDEFINE_FLAGS = 231
    DOMAIN_DESTROY_FLAGS = 234
    DOMAIN_SHUTDOWN_FLAGS = 258
    DOMAIN_SET_METADATA = 264
    DOMAIN_GET_METADATA = 265
    CONNECT_LIST_ALL_DOMAINS = 273
    CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY = 316
    CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY = 317
    DOMAIN_EVENT_CALLBACK_LIFECYCLE = 318
    DOMAIN_EVENT_CALLBACK_REBOOT = 319
    DOMAIN_EVENT_CALLBACK_BALLOON_CHANGE = 331
    DOMAIN_EVENT_CALLBACK_TUNABLE = 346
    DOMAIN_EVENT_CALLBACK_AGENT_LIFECYCLE = 348
    DOMAIN_DEFINE_XML_FLAGS = 350
    DOMAIN_RENAME = 358
    CONNECT_REGISTER_CLOSE_CALLBACK = 360
    CONNECT_UNREGISTER_CLOSE_CALLBACK = 361
    DOMAIN_EVENT_CALLBACK_METADATA_CHANGE = 379
    DOMAIN_GET_MESSAGES = 426
    CONNECT_GET_MAX_VCPUS = 5
    DOMAIN_GET_SCHEDULER_TYPE = 56
    DOMAIN_GET_SCHEDULER_PARAMETERS = 57
    DOMAIN_SET_SCHEDULER_PARAMETERS = 58
    DOMAIN_SET_MEMORY_PARAMETERS = 197
    DOMAIN_GET_MEMORY_PARAMETERS = 198
    DOMAIN_SET_SCHEDULER_PARAMETERS_FLAGS = 219
    DOMAIN_GET_SCHEDULER_PARAMETERS_FLAGS = 223
    CONNECT_GET_CAPABILITIES = 7
    DOMAIN_GET_MAX_VCPUS = 18
    DOMAIN_GET_VCPUS = 20
    DOMAIN_SET_MAX_MEMORY = 30
    DOMAIN_BLOCK_STATS = 64
    DOMAIN_INTERFACE_STATS = 65
    NODE_GET_FREE_MEMORY = 102
    DOMAIN_MEMORY_STATS = 159
    CONNECT_GET_SYSINFO = 203
    NODE_GET_CPU_STATS = 227
    NODE_GET_MEMORY_STATS = 228
    DOMAIN_BLOCK_STATS_FLAGS = 243
    DOMAIN_GET_CPU_STATS = 262
    NODE_GET_CPU_MAP = 293
    CONNECT_GET_DOMAIN_CAPABILITIES = 342
    CONNECT_GET_ALL_DOMAIN_STATS = 344
    DOMAIN_ATTACH_DEVICE = 8
    DOMAIN_DETACH_DEVICE = 13
    CONNECT_LIST_DEFINED_NETWORKS = 36
    CONNECT_LIST_NETWORKS = 38
    NETWORK_CREATE = 39
    NETWORK_DEFINE_XML = 41
    NETWORK_DESTROY = 42
    NETWORK_GET_XML_DESC = 43
    NETWORK_GET_AUTOSTART = 44
    NETWORK_GET_BRIDGE_NAME = 45
    NETWORK_LOOKUP_BY_NAME = 46
    NETWORK_LOOKUP_BY_UUID = 47
    NETWORK_SET_AUTOSTART = 48
    NETWORK_UNDEFINE = 49
    CONNECT_NUM_OF_DEFINED_NETWORKS = 50
    CONNECT_NUM_OF_NETWORKS = 52
    NETWORK_IS_ACTIVE = 152
    NETWORK_IS_PERSISTENT = 153
    DOMAIN_ATTACH_DEVICE_FLAGS = 160
    DOMAIN_DETACH_DEVICE_FLAGS = 161
    CONNECT_LIST_ALL_NETWORKS = 283
    CONNECT_NETWORK_EVENT_REGISTER_ANY = 313
    CONNECT_NETWORK_EVENT_DEREGISTER_ANY = 314
    NETWORK_EVENT_LIFECYCLE = 315
    DOMAIN_EVENT_CALLBACK_DEVICE_REMOVED = 333
    NETWORK_GET_DHCP_LEASES = 341
    DOMAIN_INTERFACE_ADDRESSES = 353
    DOMAIN_EVENT_CALLBACK_DEVICE_ADDED = 354
    CONNECT_NUM_OF_STORAGE_POOLS = 71
    CONNECT_LIST_STORAGE_POOLS = 72
    CONNECT_NUM_OF_DEFINED_STORAGE_POOLS = 73
    CONNECT_LIST_DEFINED_STORAGE_POOLS = 74
    STORAGE_POOL_DEFINE_XML = 77
    STORAGE_POOL_CREATE = 78
    STORAGE_POOL_REFRESH = 83
    STORAGE_POOL_LOOKUP_BY_NAME = 84
    STORAGE_POOL_LOOKUP_BY_UUID = 85
    STORAGE_POOL_LOOKUP_BY_VOLUME = 86
    STORAGE_POOL_GET_INFO = 87
    STORAGE_POOL_GET_XML_DESC = 88
    STORAGE_POOL_GET_AUTOSTART = 89
    STORAGE_POOL_SET_AUTOSTART = 90
    STORAGE_POOL_NUM_OF_VOLUMES = 91
    STORAGE_POOL_LIST_VOLUMES = 92
    STORAGE_VOL_CREATE_XML = 93
    STORAGE_VOL_DELETE = 94
    STORAGE_VOL_LOOKUP_BY_NAME = 95
    STORAGE_VOL_LOOKUP_BY_KEY = 96
    STORAGE_VOL_LOOKUP_BY_PATH = 97
    STORAGE_VOL_GET_INFO = 98
    STORAGE_VOL_GET_XML_DESC = 99
    STORAGE_VOL_GET_PATH = 100
    STORAGE_POOL_IS_ACTIVE = 154
    STORAGE_POOL_IS_PERSISTENT = 155
    DOMAIN_SNAPSHOT_CREATE_XML = 185
    DOMAIN_SNAPSHOT_GET_XML_DESC = 186
    DOMAIN_SNAPSHOT_LIST_NAMES = 188
    DOMAIN_SNAPSHOT_LOOKUP_BY_NAME = 189
    DOMAIN_HAS_CURRENT_SNAPSHOT = 190
    DOMAIN_SNAPSHOT_CURRENT = 191
    DOMAIN_REVERT_TO_SNAPSHOT = 192
    DOMAIN_SNAPSHOT_DELETE = 193
    DOMAIN_SNAPSHOT_GET_PARENT = 244
    DOMAIN_SNAPSHOT_NUM_CHILDREN = 246
    DOMAIN_SNAPSHOT_LIST_CHILDREN_NAMES = 247
    DOMAIN_SNAPSHOT_IS_CURRENT = 271
    DOMAIN_SNAPSHOT_HAS_METADATA = 272
    DOMAIN_LIST_ALL_SNAPSHOTS = 274
    DOMAIN_SNAPSHOT_LIST_ALL_CHILDREN = 275
    CONNECT_LIST_ALL_STORAGE_POOLS = 281
    STORAGE_POOL_LIST_ALL_VOLUMES = 282
    CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY = 368
    CONNECT_STORAGE_POOL_EVENT_DEREGISTER_ANY = 369


class ErrorDomain(IntEnum):
    """``virErrorDomain``: which part of libvirt raised an error."""

    DOM = 6
    RPC = 7


ERROR_LEVEL = 2  # VIR_ERR_ERROR
RPC_ERROR = ErrorCode.RPC
"""VIR_ERR_RPC: the RPC layer's own refusals, whose message libvirt shows with no prefix."""


class CallError(VirtbusError):
    """An error answered as libvirt's RPC layer answers it (its code, domain and
    message as they are, with no prefix added), not as a driver's. ``close``: the
    gateway closes the connection once the reply is out."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        domain: ErrorDomain = ErrorDomain.RPC,
        close: bool = False,
    ) -> None:
        super().__init__(code, message)
        self.message = message
        self.domain = domain
        self.close = close


_HEADER_WORDS = struct.Struct(">6I")
_PACKET_START = struct.Struct(">7I")
"""The length word and the header's six words."""


@dataclass(frozen=True)
class Header:
    program: int
    version: int
    procedure: int
    type: int
    serial: int
    status: int

    def pack(self, payload: bytes) -> bytes:
        """The whole packet: length, this header, the payload."""
        length = LENGTH_BYTES + HEADER_BYTES + len(payload)
        try:
            words = _PACKET_START.pack(
                length,
                self.program,
                self.version,
                self.procedure,
                self.type,
                self.serial,
                self.status,
            )
        except struct.error:
            raise XdrError(f"a header word of {self} does not fit in 32 bits") from None
        return words + payload

    @classmethod
    def unpack(cls, data: bytes) -> tuple[Header, bytes]:
        """A packet without its length word: its header, and the payload after it."""
        if len(data) < HEADER_BYTES:
            raise XdrError(f"a packet of {len(data)} bytes has no room for its header")
        return cls(*_HEADER_WORDS.unpack_from(data)), data[HEADER_BYTES:]

    def reply(self, status: Status) -> Header:
        return Header(
            self.program, self.version, self.procedure, MessageType.REPLY, self.serial, status
        )

    def stream(self, status: Status) -> Header:
        """A packet of the stream this call opened: its procedure and serial."""
        return Header(
            self.program, self.version, self.procedure, MessageType.STREAM, self.serial, status
        )


def packet_length(word: bytes, maximum: int = MESSAGE_MAX) -> int:
    """The length of the rest of a packet, from its first four bytes; XdrError for a
    length under a header's or over ``maximum``."""
    length = Unpacker(word).uint32()
    if not LENGTH_BYTES + HEADER_BYTES <= length <= maximum:
        raise XdrError(f"a packet length of {length} bytes is out of bounds")
    return length - LENGTH_BYTES


def message(program: int, procedure: int, payload: bytes = b"") -> bytes:
    """An unsolicited packet (an event, a keepalive): type MESSAGE, serial 0."""
    return Header(program, PROTOCOL_VERSION, procedure, MessageType.MESSAGE, 0, Status.OK).pack(
        payload
    )


@dataclass(frozen=True)
class WireDomain:
    """``remote_nonnull_domain``: ``id`` is -1 for an inactive domain."""

    name: str
    uuid: uuid.UUID
    id: int

    def pack(self, packer: Packer) -> None:
        packer.string(self.name)
        packer.fixed_opaque(self.uuid.bytes, UUID_BYTES)
        packer.int32(self.id)

    @classmethod
    def unpack(cls, unpacker: Unpacker) -> WireDomain:
        name = unpacker.string(STRING_MAX)
        return cls(name, uuid.UUID(bytes=unpacker.fixed_opaque(UUID_BYTES)), unpacker.int32())


@dataclass(frozen=True)
class WireNetwork:
    """``remote_nonnull_network``."""

    name: str
    uuid: uuid.UUID

    def pack(self, packer: Packer) -> None:
        packer.string(self.name)
        packer.fixed_opaque(self.uuid.bytes, UUID_BYTES)

    @classmethod
    def unpack(cls, unpacker: Unpacker) -> WireNetwork:
        name = unpacker.string(STRING_MAX)
        return cls(name, uuid.UUID(bytes=unpacker.fixed_opaque(UUID_BYTES)))


def pack_error(code: int, message: str, domain: ErrorDomain = ErrorDomain.DOM) -> bytes:
    """``remote_error``; libvirt's client shows ``message`` as it is."""
    packer = Packer()
    packer.int32(code)
    packer.int32(domain)
    packer.optional(message, packer.string)
    packer.int32(ERROR_LEVEL)
    packer.boolean(False)  # dom
    for _ in range(3):  # str1..str3
        packer.boolean(False)
    packer.int32(0)
    packer.int32(0)
    packer.boolean(False)  # net
    return packer.data()
