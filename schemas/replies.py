"""Replies: success with a typed result, or a libvirt error."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import WIRE_VERSION, HostName, Timestamp, WireModel
from schemas.codes import ErrorCode
from schemas.domain import DomainRecord


class ErrorBody(WireModel):
    code: str
    vir_error: int
    message: str

    @classmethod
    def of(cls, code: ErrorCode, message: str) -> ErrorBody:
        return cls(code=code.name, vir_error=int(code), message=message)


class DomainList(WireModel):
    domains: list[DomainRecord]


class DomainInfo(WireModel):
    """virDomainGetInfo."""

    state: int
    max_mem_kib: int
    memory_kib: int
    nr_virt_cpu: int
    cpu_time_ns: int


class DomainStateInfo(WireModel):
    """virDomainGetState."""

    state: int
    reason: int


class DomainCounts(WireModel):
    total: int
    active: int
    inactive: int
    persistent: int
    transient: int


class HostInfo(WireModel):
    hostname: HostName
    groups: list[str]
    cpus: int
    memory_kib: int
    engine_version: str
    agent_version: str
    heartbeat_s: float
    domains: DomainCounts


class Pong(WireModel):
    host: HostName
    time: Timestamp


class DomainXml(WireModel):
    """virDomainGetXMLDesc: the domain's libvirt domain XML."""

    xml: str


class Done(WireModel):
    """The result of an op that has nothing to return."""


class Metadata(WireModel):
    """virDomainGetMetadata: the description, the title, or the namespace's element (as
    XML, without the namespace)."""

    metadata: str


class ConsoleOutput(WireModel):
    """The end of a domain's console output; ``truncated`` when there was more."""

    output: str
    truncated: bool


class ConsoleSession(WireModel):
    """An open console: ``queue`` is the agent's end of the stream, where the caller
    sends its input; frames are at most ``max_frame`` bytes and at most ``window`` data
    frames travel unacknowledged in each direction (docs/console-metadata.md)."""

    session: str
    queue: str
    max_frame: int
    window: int
    idle_timeout_s: float


Result = (
    DomainRecord
    | DomainList
    | DomainInfo
    | DomainStateInfo
    | HostInfo
    | Pong
    | DomainXml
    | Done
    | Metadata
    | ConsoleOutput
    | ConsoleSession
)


class Reply(WireModel):
    v: Literal[1] = WIRE_VERSION
    id: str
    host: HostName
    ok: bool
    result: Result | None = None
    error: ErrorBody | None = Field(default=None)
