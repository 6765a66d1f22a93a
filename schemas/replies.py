"""Replies: success with a typed result, or a libvirt error."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import WIRE_VERSION, HostName, Timestamp, WireModel
from schemas.codes import ErrorCode
from schemas.domain import DomainRecord
from schemas.storage import (
    PoolList,
    PoolRecord,
    SnapshotList,
    SnapshotRecord,
    VolumeList,
    VolumeRecord,
)


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
    """virDomainGetXMLDesc: the domain's libvirt domain XML; also the XML of a storage
    pool, a volume or a snapshot (their GetXMLDesc)."""

    xml: str


class Done(WireModel):
    """The result of an op that has nothing to return."""


Result = (
    DomainRecord
    | DomainList
    | DomainInfo
    | DomainStateInfo
    | HostInfo
    | Pong
    | DomainXml
    | Done
    | PoolRecord
    | PoolList
    | VolumeRecord
    | VolumeList
    | SnapshotRecord
    | SnapshotList
)


class Reply(WireModel):
    v: Literal[1] = WIRE_VERSION
    id: str
    host: HostName
    ok: bool
    result: Result | None = None
    error: ErrorBody | None = Field(default=None)
