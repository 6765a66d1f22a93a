"""virtbus's errors: the root, the agent's answer, and what the client raises.

The whole tree is drawn in ``schemas/errors.py``, where the root lives. Here:

    VirtError(code, detail)        a command failed on the agent: the reply carries
                                   its code name, number and message
    ReplyError                     the client got a reply that is an error
    OperationTimeout               no reply (or no event) in time: OPERATION_TIMEOUT
    BrokerUnreachable              the client cannot reach the broker: OPERATION_FAILED
    NotConnected                   a call on a connection that is not open
    NoHost                         the broker has no queue for the host or group a
                                   command is sent to: NO_CONNECT

Every failure a command can meet on the agent becomes a VirtError before it reaches
the dispatcher; anything else is a bug, answered as INTERNAL_ERROR.
"""

from __future__ import annotations

from schemas.codes import ErrorCode
from schemas.errors import VirtbusError
from schemas.replies import ErrorBody


class VirtError(VirtbusError):
    """A command failed on the agent; ``to_wire`` is the reply's error."""

    def to_wire(self) -> ErrorBody:
        return ErrorBody.of(self.code, self.message)


class ReplyError(VirtbusError):
    """An agent answered with an error: ``message`` and ``vir_error`` exactly as it sent
    them, ``code`` their ErrorCode (INTERNAL_ERROR for a number this version does not
    know), ``host`` the host that answered."""

    def __init__(self, body: ErrorBody, host: str) -> None:
        code = ErrorCode(body.vir_error) if body.vir_error in _KNOWN else ErrorCode.INTERNAL_ERROR
        detail = body.message.removeprefix(f"{code.prefix}: ")
        super().__init__(code, detail)
        self.message = body.message
        self.vir_error = body.vir_error
        self.host = host


_KNOWN = frozenset(int(code) for code in ErrorCode)


class OperationTimeout(VirtbusError, TimeoutError):
    """Nothing came in time: a reply to a command, or the next event of a stream."""

    def __init__(self, detail: str, host: str | None = None) -> None:
        super().__init__(ErrorCode.OPERATION_TIMEOUT, detail)
        self.host = host


class BrokerUnreachable(VirtbusError, ConnectionError):
    """The client cannot reach the broker, or lost it."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.OPERATION_FAILED, detail)


class NotConnected(VirtbusError, RuntimeError):
    """A call on a connection that is not open (or no longer is)."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.OPERATION_INVALID, "the connection is not open")


class NoHost(VirtbusError, LookupError):
    """The broker returned a command: no queue is bound for its host (no agent of that
    name ever started on this broker) or, for a broadcast, no host is in the group.
    libvirt's closest word is VIR_ERR_NO_CONNECT, "no connection driver available"."""

    def __init__(self, detail: str, host: str | None = None) -> None:
        super().__init__(ErrorCode.NO_CONNECT, detail)
        self.host = host


def no_domain(what: str) -> VirtError:
    return VirtError(ErrorCode.NO_DOMAIN, f"no domain with matching {what}")


def invalid(detail: str) -> VirtError:
    return VirtError(ErrorCode.OPERATION_INVALID, detail)


__all__ = [
    "BrokerUnreachable",
    "NoHost",
    "NotConnected",
    "OperationTimeout",
    "ReplyError",
    "VirtError",
    "VirtbusError",
    "invalid",
    "no_domain",
]
