"""libvirt's numbers, as virtbus puts them on the wire: errors, states, reasons, events."""

from __future__ import annotations

from enum import Enum, IntEnum


class ErrorCode(IntEnum):
    """libvirt's ``virErrorNumber`` values that virtbus replies with."""

    INTERNAL_ERROR = 1
    NO_SUPPORT = 3
    NO_CONNECT = 5
    INVALID_ARG = 8
    OPERATION_FAILED = 9
    XML_ERROR = 27
    DOM_EXIST = 28
    OPERATION_DENIED = 29
    NETWORK_EXIST = 36
    RPC = 39
    NO_DOMAIN = 42
    NO_NETWORK = 43
    AUTH_FAILED = 45
    NO_STORAGE_POOL = 49
    NO_STORAGE_VOL = 50
    OPERATION_INVALID = 55
    CONFIG_UNSUPPORTED = 67
    OPERATION_TIMEOUT = 68
    NO_DOMAIN_SNAPSHOT = 72
    ARGUMENT_UNSUPPORTED = 74
    OPERATION_ABORTED = 78
    NO_DOMAIN_METADATA = 80
    OPERATION_UNSUPPORTED = 84
    RESOURCE_BUSY = 87
    ACCESS_DENIED = 88
    STORAGE_VOL_EXIST = 90

    @property
    def prefix(self) -> str:
        """The words libvirt puts before the detail of an error of this code."""
        return _ERROR_PREFIXES[self]


_ERROR_PREFIXES = {
    ErrorCode.INTERNAL_ERROR: "internal error",
    ErrorCode.NO_SUPPORT: "this function is not supported by the connection driver",
    ErrorCode.NO_CONNECT: "no connection driver available",
    ErrorCode.INVALID_ARG: "invalid argument",
    ErrorCode.OPERATION_FAILED: "operation failed",
    ErrorCode.XML_ERROR: "XML error",
    ErrorCode.DOM_EXIST: "operation failed",
    ErrorCode.OPERATION_DENIED: "operation forbidden",
    ErrorCode.RPC: "RPC error",
    ErrorCode.NO_DOMAIN: "Domain not found",
    ErrorCode.NO_STORAGE_POOL: "Storage pool not found",
    ErrorCode.NO_STORAGE_VOL: "Storage volume not found",
    ErrorCode.NO_DOMAIN_SNAPSHOT: "Domain snapshot not found",
    ErrorCode.STORAGE_VOL_EXIST: "this storage volume exists already",
    ErrorCode.AUTH_FAILED: "authentication failed",
    ErrorCode.OPERATION_INVALID: "Requested operation is not valid",
    ErrorCode.CONFIG_UNSUPPORTED: "unsupported configuration",
    ErrorCode.OPERATION_TIMEOUT: "Timed out during operation",
    ErrorCode.ARGUMENT_UNSUPPORTED: "argument unsupported",
    ErrorCode.OPERATION_ABORTED: "operation aborted",
    ErrorCode.NO_DOMAIN_METADATA: "metadata not found",
    ErrorCode.RESOURCE_BUSY: "resource busy",
    ErrorCode.ACCESS_DENIED: "access denied",
    ErrorCode.NETWORK_EXIST: "this network exists already",
    ErrorCode.NO_NETWORK: "Network not found",
    ErrorCode.OPERATION_UNSUPPORTED: "Operation not supported",
}


class DomainState(IntEnum):
    """``virDomainState``."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


class RunningReason(IntEnum):
    UNKNOWN = 0
    BOOTED = 1
    FROM_SNAPSHOT = 4
    UNPAUSED = 5


class PausedReason(IntEnum):
    UNKNOWN = 0
    USER = 1


class ShutoffReason(IntEnum):
    UNKNOWN = 0
    SHUTDOWN = 1
    DESTROYED = 2
    CRASHED = 3
    FAILED = 6
    FROM_SNAPSHOT = 7


REASONS: dict[DomainState, type[IntEnum]] = {
    DomainState.RUNNING: RunningReason,
    DomainState.PAUSED: PausedReason,
    DomainState.SHUTOFF: ShutoffReason,
}
"""The reason enum of each state that has one here."""


def reason_of(state: int, reason: int) -> int:
    """``reason`` as the member of its state's reason enum (``ShutoffReason.DESTROYED``)
    where this version knows it; the bare number otherwise. Either way an ``int``."""
    known = REASONS.get(DomainState(state)) if state in _STATES else None
    if known is None or reason not in known._value2member_map_:
        return reason
    return known(reason)


_STATES = frozenset(int(state) for state in DomainState)


class EventId(IntEnum):
    """``virDomainEventID`` of the event kinds virtbus publishes."""

    LIFECYCLE = 0
    REBOOT = 1
    BALLOON_CHANGE = 13
    TUNABLE = 17
    DEVICE_REMOVED = 15
    AGENT_LIFECYCLE = 18
    DEVICE_ADDED = 19
    METADATA_CHANGE = 23


class Lifecycle(Enum):
    """A lifecycle event with its detail: ``virDomainEventType`` and its detail enums.

    Each member also names the state and reason a domain is in after it.
    """

    DEFINED_ADDED = ("defined", 0, "added", 0)
    DEFINED_UPDATED = ("defined", 0, "updated", 1)
    DEFINED_RENAMED = ("defined", 0, "renamed", 2)
    DEFINED_FROM_SNAPSHOT = ("defined", 0, "from_snapshot", 3)
    UNDEFINED_REMOVED = ("undefined", 1, "removed", 0)
    UNDEFINED_RENAMED = ("undefined", 1, "renamed", 1)
    STARTED_BOOTED = ("started", 2, "booted", 0)
    STARTED_FROM_SNAPSHOT = ("started", 2, "from_snapshot", 3)
    SUSPENDED_PAUSED = ("suspended", 3, "paused", 0)
    RESUMED_UNPAUSED = ("resumed", 4, "unpaused", 0)
    STOPPED_SHUTDOWN = ("stopped", 5, "shutdown", 0)
    STOPPED_DESTROYED = ("stopped", 5, "destroyed", 1)
    STOPPED_CRASHED = ("stopped", 5, "crashed", 2)
    STOPPED_FAILED = ("stopped", 5, "failed", 5)
    STOPPED_FROM_SNAPSHOT = ("stopped", 5, "from_snapshot", 6)

    @property
    def event(self) -> str:
        return str(self.value[0])

    @property
    def event_code(self) -> int:
        return int(self.value[1])

    @property
    def detail(self) -> str:
        return str(self.value[2])

    @property
    def detail_code(self) -> int:
        return int(self.value[3])

    @classmethod
    def of(cls, event: str, detail: str) -> Lifecycle:
        for member in cls:
            if member.event == event and member.detail == detail:
                return member
        raise ValueError(f"no lifecycle event {event}/{detail}")

    @property
    def outcome(self) -> tuple[DomainState, int] | None:
        """State and reason after this event; None where the state does not change."""
        return _OUTCOMES.get(self)


_OUTCOMES: dict[Lifecycle, tuple[DomainState, int]] = {
    Lifecycle.STARTED_BOOTED: (DomainState.RUNNING, RunningReason.BOOTED),
    Lifecycle.SUSPENDED_PAUSED: (DomainState.PAUSED, PausedReason.USER),
    Lifecycle.RESUMED_UNPAUSED: (DomainState.RUNNING, RunningReason.UNPAUSED),
    Lifecycle.STOPPED_SHUTDOWN: (DomainState.SHUTOFF, ShutoffReason.SHUTDOWN),
    Lifecycle.STOPPED_DESTROYED: (DomainState.SHUTOFF, ShutoffReason.DESTROYED),
    Lifecycle.STOPPED_CRASHED: (DomainState.SHUTOFF, ShutoffReason.CRASHED),
    Lifecycle.STOPPED_FAILED: (DomainState.SHUTOFF, ShutoffReason.FAILED),
    Lifecycle.STARTED_FROM_SNAPSHOT: (DomainState.RUNNING, RunningReason.FROM_SNAPSHOT),
    Lifecycle.STOPPED_FROM_SNAPSHOT: (DomainState.SHUTOFF, ShutoffReason.FROM_SNAPSHOT),
}


class NetworkLifecycle(Enum):
    """``virNetworkEventLifecycleType``; libvirt's network events carry no detail (0)."""

    DEFINED = ("defined", 0)
    UNDEFINED = ("undefined", 1)
    STARTED = ("started", 2)
    STOPPED = ("stopped", 3)

    @property
    def event(self) -> str:
        return str(self.value[0])

    @property
    def event_code(self) -> int:
        return int(self.value[1])


class MetadataType(IntEnum):
    """``virDomainMetadataType``."""

    DESCRIPTION = 0
    TITLE = 1
    ELEMENT = 2
