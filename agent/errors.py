"""The one error the agent answers with.

    VirtError(code, detail)        a libvirt error: ``code`` is the ErrorCode, the
                                   reply carries code name, number and message

Every failure a command can meet becomes a VirtError before it reaches the
dispatcher; anything else is a bug, answered as INTERNAL_ERROR.
"""

from __future__ import annotations

from schemas.codes import ErrorCode
from schemas.replies import ErrorBody


class VirtError(Exception):
    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    @property
    def message(self) -> str:
        """The message as libvirt words it: ``<prefix>: <detail>``."""
        return f"{self.code.prefix}: {self.detail}"

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> ErrorBody:
        return ErrorBody.of(self.code, self.message)


def no_domain(what: str) -> VirtError:
    return VirtError(ErrorCode.NO_DOMAIN, f"no domain with matching {what}")


def invalid(detail: str) -> VirtError:
    return VirtError(ErrorCode.OPERATION_INVALID, detail)
