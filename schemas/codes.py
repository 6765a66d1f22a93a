"""libvirt's numbers, as virtbus puts them on the wire: errors, states, reasons, events."""

from __future__ import annotations

from enum import Enum, IntEnum


class ErrorCode(IntEnum):
    """libvirt's ``virErrorNumber`` values that virtbus replies with."""

    INTERNAL_ERROR = 1
    NO_SUPPORT = 3
    INVALID_ARG = 8
    OPERATION_FAILED = 9
    XML_ERROR = 27
    DOM_EXIST = 28
    OPERATION_DENIED = 29
    RPC = 39
    NO_DOMAIN = 42
    AUTH_FAILED = 45
    OPERATION_INVALID = 55
    CONFIG_UNSUPPORTED = 67
    OPERATION_TIMEOUT = 68
    OPERATION_ABORTED = 78
    NO_DOMAIN_METADATA = 80
    RESOURCE_BUSY = 87
    ACCESS_DENIED = 88

    @property
    def prefix(self) -> str:
        """The words libvirt puts before the detail of an error of this code."""
        return _ERROR_PREFIXES[self]


_ERROR_PREFIXES = {
    ErrorCode.INTERNAL_ERROR: "internal error",
    ErrorCode.NO_SUPPORT: "this function is not supported by the connection driver",
    ErrorCode.INVALID_ARG: "invalid argument",
    ErrorCode.OPERATION_FAILED: "operation failed",
    ErrorCode.XML_ERROR: "XML error",
    ErrorCode.DOM_EXIST: "operation failed",
    ErrorCode.OPERATION_DENIED: "operation forbidden",
    ErrorCode.RPC: "RPC error",
    ErrorCode.NO_DOMAIN: "Domain not found",
    ErrorCode.AUTH_FAILED: "authentication failed",
    ErrorCode.OPERATION_INVALID: "Requested operation is not valid",
    ErrorCode.CONFIG_UNSUPPORTED: "unsupported configuration",
    ErrorCode.OPERATION_TIMEOUT: "Timed out during operation",
    ErrorCode.OPERATION_ABORTED: "operation aborted",
    ErrorCode.NO_DOMAIN_METADATA: "metadata not found",
    ErrorCode.RESOURCE_BUSY: "resource busy",
    ErrorCode.ACCESS_DENIED: "access denied",
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


class EventId(IntEnum):
    """``virDomainEventID`` of the event kinds virtbus publishes."""

    LIFECYCLE = 0
    REBOOT = 1
    BALLOON_CHANGE = 13
    TUNABLE = 17
    AGENT_LIFECYCLE = 18
    METADATA_CHANGE = 23


class Lifecycle(Enum):
    """A lifecycle event with its detail: ``virDomainEventType`` and its detail enums.

    Each member also names the state and reason a domain is in after it.
    """

    DEFINED_ADDED = ("defined", 0, "added", 0)
    DEFINED_UPDATED = ("defined", 0, "updated", 1)
    DEFINED_RENAMED = ("defined", 0, "renamed", 2)
    UNDEFINED_REMOVED = ("undefined", 1, "removed", 0)
    UNDEFINED_RENAMED = ("undefined", 1, "renamed", 1)
    STARTED_BOOTED = ("started", 2, "booted", 0)
    SUSPENDED_PAUSED = ("suspended", 3, "paused", 0)
    RESUMED_UNPAUSED = ("resumed", 4, "unpaused", 0)
    STOPPED_SHUTDOWN = ("stopped", 5, "shutdown", 0)
    STOPPED_DESTROYED = ("stopped", 5, "destroyed", 1)
    STOPPED_CRASHED = ("stopped", 5, "crashed", 2)
    STOPPED_FAILED = ("stopped", 5, "failed", 5)

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
}


class MetadataType(IntEnum):
    """``virDomainMetadataType``."""

    DESCRIPTION = 0
    TITLE = 1
    ELEMENT = 2
