"""Domain event callbacks: every event the bus carries, as the event a libvirt driver
emits for the same change.

``EVENT_ROWS`` is the whole mapping, one row per libvirt event ID: the bus stream that
feeds it and the callback message(s) a bus event becomes. An event ID without a row is
registered all the same (libvirtd accepts every ID it knows, whatever its driver emits)
and never fires. A memory change (a ``tunable`` event with ``memory_kib`` on the bus) is
libvirt's balloon change; a device event is libvirt's device added or removed, as its
``event_id`` says; a CPU change (``vcpus``) is libvirt's tunable event with its
typed ``cputune.*`` keys (a domain's CPUs are a CFS quota); a health check's verdict
(libvirt has no such event) is the guest agent's lifecycle, healthy as connected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.client import VirtbusError
from agent.client.events import EventKind
from agent.gateway.procedures import REPLIED, Session, handles, ints, read_domain
from agent.gateway.protocol import REMOTE_PROGRAM, Proc, WireDomain, message
from agent.gateway.xdr import Packer, Unpacker
from schemas.codes import ErrorCode, EventId
from schemas.events import (
    DeviceEvent,
    DomainEventBase,
    DomainRef,
    Event,
    HealthEvent,
    LifecycleEvent,
    MetadataChangeEvent,
    RebootEvent,
    TunableEvent,
)

EVENT_ID_LIMIT = 64
"""Event IDs at or above this are refused (libvirt 9.0 knows 0 to 26)."""
CFS_PERIOD_US = 100_000
"""The CFS period: a domain's CPUs are a quota of this many microseconds each."""


class TypedParam:
    """``virTypedParameterType`` values used in events."""

    LLONG = 3
    ULLONG = 4


Body = Callable[[Packer], None]
"""Packs a callback message after its callback ID."""


@dataclass(frozen=True)
class EventRow:
    """One libvirt event ID: the bus stream that feeds it, and what a bus event becomes:
    the callback procedure and its body, or None when the event does not concern it."""

    kind: EventKind
    procedure: Proc
    body: Callable[[Event], Body | None]


def _domain(packer: Packer, ref: DomainRef) -> None:
    WireDomain(ref.name, ref.uuid, ref.id).pack(packer)


def _lifecycle(event: Event) -> Body | None:
    if not isinstance(event, LifecycleEvent):
        return None

    def body(packer: Packer) -> None:
        _domain(packer, event.domain)
        packer.int32(event.event_code)
        packer.int32(event.detail_code)

    return body


def _reboot(event: Event) -> Body | None:
    if not isinstance(event, RebootEvent):
        return None
    return lambda packer: _domain(packer, event.domain)


def _running_change(event: Event) -> TunableEvent | None:
    """A tunable event of a running domain: libvirt tells of no change to a shut-off
    domain's definition."""
    return event if isinstance(event, TunableEvent) and event.domain.id > 0 else None


def _balloon(event: Event) -> Body | None:
    """``remote_domain_event_callback_balloon_change_msg``: the new memory, KiB."""
    tunable = _running_change(event)
    if tunable is None or "memory_kib" not in tunable.params:
        return None
    actual = tunable.params["memory_kib"]

    def body(packer: Packer) -> None:
        _domain(packer, tunable.domain)
        packer.uint64(actual)

    return body


def _tunable(event: Event) -> Body | None:
    """``remote_domain_event_callback_tunable_msg``: typed parameters, as libvirt's
    VIR_DOMAIN_TUNABLE_CPU_CPU_SHARES (ullong), _CPU_GLOBAL_PERIOD (ullong) and
    _GLOBAL_QUOTA (llong). A change of memory limits alone is no tunable event in libvirt."""
    tunable = _running_change(event)
    if tunable is None:
        return None
    params: list[tuple[str, int, int]] = []
    if "cpu_shares" in tunable.params:
        params.append(("cputune.cpu_shares", TypedParam.ULLONG, tunable.params["cpu_shares"]))
    if "vcpus" in tunable.params:
        params.append(("cputune.global_period", TypedParam.ULLONG, CFS_PERIOD_US))
        quota = tunable.params["vcpus"] * CFS_PERIOD_US
        params.append(("cputune.global_quota", TypedParam.LLONG, quota))
    if not params:
        return None

    def body(packer: Packer) -> None:
        _domain(packer, tunable.domain)
        packer.uint32(len(params))
        for field, kind, value in params:
            packer.string(field)
            packer.int32(kind)
            if kind == TypedParam.ULLONG:
                packer.uint64(value)
            else:
                packer.int64(value)

    return body


AGENT_CONNECTED = 1
AGENT_DISCONNECTED = 2
AGENT_REASON_CHANNEL = 2


def _health(event: Event) -> Body | None:
    """``remote_domain_event_callback_agent_lifecycle_msg``: a healthy domain is a
    connected guest agent, an unhealthy one a disconnected agent (reason: channel)."""
    if not isinstance(event, HealthEvent):
        return None
    state = AGENT_CONNECTED if event.status == "healthy" else AGENT_DISCONNECTED

    def body(packer: Packer) -> None:
        _domain(packer, event.domain)
        packer.int32(state)
        packer.int32(AGENT_REASON_CHANNEL)

    return body


def _metadata(event: Event) -> Body | None:
    """``remote_domain_event_callback_metadata_change_msg``: type and namespace URI."""
    if not isinstance(event, MetadataChangeEvent):
        return None

    def body(packer: Packer) -> None:
        _domain(packer, event.domain)
        packer.int32(event.type_code)
        packer.optional(event.nsuri, packer.string)

    return body


def _device(event_id: EventId) -> Callable[[Event], Body | None]:
    """``remote_domain_event_callback_device_added_msg`` (or ``_removed_``): the
    device's alias; the bus carries both IDs on one stream."""

    def row(event: Event) -> Body | None:
        if not isinstance(event, DeviceEvent) or event.event_id != event_id:
            return None
        alias = event.alias

        def body(packer: Packer) -> None:
            _domain(packer, event.domain)
            packer.string(alias)

        return body

    return row


EVENT_ROWS: dict[int, EventRow] = {
    EventId.LIFECYCLE: EventRow("lifecycle", Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE, _lifecycle),
    EventId.REBOOT: EventRow("reboot", Proc.DOMAIN_EVENT_CALLBACK_REBOOT, _reboot),
    EventId.BALLOON_CHANGE: EventRow(
        "tunable", Proc.DOMAIN_EVENT_CALLBACK_BALLOON_CHANGE, _balloon
    ),
    EventId.TUNABLE: EventRow("tunable", Proc.DOMAIN_EVENT_CALLBACK_TUNABLE, _tunable),
    EventId.AGENT_LIFECYCLE: EventRow(
        "health", Proc.DOMAIN_EVENT_CALLBACK_AGENT_LIFECYCLE, _health
    ),
    EventId.METADATA_CHANGE: EventRow(
        "metadata_change", Proc.DOMAIN_EVENT_CALLBACK_METADATA_CHANGE, _metadata
    ),
    EventId.DEVICE_ADDED: EventRow(
        "device", Proc.DOMAIN_EVENT_CALLBACK_DEVICE_ADDED, _device(EventId.DEVICE_ADDED)
    ),
    EventId.DEVICE_REMOVED: EventRow(
        "device", Proc.DOMAIN_EVENT_CALLBACK_DEVICE_REMOVED, _device(EventId.DEVICE_REMOVED)
    ),
}


def event_message(callback_id: int, event_id: int, event: Event) -> bytes | None:
    """The MESSAGE packet that tells callback ``callback_id`` (registered for
    ``event_id``) about ``event``; None when the event is not one of that ID's."""
    row = EVENT_ROWS.get(event_id)
    body = row.body(event) if row is not None else None
    if row is None or body is None:
        return None
    packer = Packer()
    packer.int32(callback_id)
    body(packer)
    return message(REMOTE_PROGRAM, row.procedure, packer.data())


@handles(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY)
async def register_any(session: Session, args: Unpacker) -> bytes:
    """A callback fed by its own event stream from now on; one domain's, by UUID as
    libvirt (a rename keeps it), or every domain's."""
    event_id = args.int32()
    domain = args.optional(lambda: read_domain(args))
    if not 0 <= event_id < EVENT_ID_LIMIT:
        raise VirtbusError.of(ErrorCode.INTERNAL_ERROR, f"unsupported event ID {event_id}")
    if len(session.callbacks) >= session.max_callbacks:
        raise VirtbusError.of(
            ErrorCode.RESOURCE_BUSY,
            f"this connection has {len(session.callbacks)} event callbacks, the most allowed",
        )
    callback_id = 0
    replied = REPLIED.get()

    async def deliver(event: Event) -> None:
        """After the reply that gave the client its callback ID: a client drops
        events for an ID it has not been told yet."""
        if replied is not None:
            await replied.wait()
        if isinstance(event, DomainEventBase) and domain and event.domain.uuid != domain.uuid:
            return
        packet = event_message(callback_id, event_id, event)
        if packet is not None:
            await session.send(packet)

    row = EVENT_ROWS.get(event_id)
    callback_id = await session.conn.subscribe(
        session.target, None, row.kind if row else None, deliver
    )
    session.callbacks.add(callback_id)
    session.changed()
    return ints(callback_id)


@handles(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY)
async def deregister_any(session: Session, args: Unpacker) -> bytes:
    callback_id = args.int32()
    if callback_id not in session.callbacks:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"callback {callback_id} is not registered")
    session.callbacks.discard(callback_id)
    await session.conn.domain_event_deregister_any(callback_id)
    session.changed()
    return b""
