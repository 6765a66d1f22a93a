"""The orchestrator's side of the bus: typed, libvirt-shaped and async.

    async with connect("amqp://guest:guest@127.0.0.1:5672/") as conn:
        web = await conn.lookup_by_name("h1", "web")
        await web.suspend()
        async with conn.events(host="h1", event="stopped") as stream:
            async for event in stream: ...

Every failure is a ``VirtbusError`` (the root of ``schemas/errors.py``), as
libvirt-python's ``libvirtError``: code (an ErrorCode), ``vir_error`` number, message,
host. An agent's error reply is a ``ReplyError``; a reply that does not come in time an
``OperationTimeout`` (also a TimeoutError); a broker out of reach ``BrokerUnreachable``
(also a ConnectionError); a host or group that has no queue on the broker ``NoHost``
(NO_CONNECT, at once: the broker returns the command).

A call's timeout is also the command's ``deadline`` and its AMQP ``expiration``: an
agent that gets the command after the caller gave up does not run it, and a command no
agent took by then leaves the host queue (dead-lettered as expired).

The rooms: ``connection`` (the broker connection, commands and replies), ``domain``
(the handle on one domain), ``events`` (event streams), ``registry`` (the fleet as
presence events tell it), ``history`` (the recorded events, replayed), ``streams`` (a
domain's console).
"""

from agent.client.connection import (
    DEFAULT_TIMEOUT_S,
    BroadcastResult,
    Connection,
    Progress,
    connect,
)
from agent.client.domain import Domain
from agent.client.events import EventKind, EventStream, binding_keys
from agent.client.history import EventHistory, Replayed, Since
from agent.client.registry import HostRegistry, HostState, HostStatus
from agent.client.storage import DomainSnapshot, StoragePool, StorageVol
from agent.client.streams import Console
from agent.errors import (
    BrokerUnreachable,
    NoHost,
    NotConnected,
    OperationTimeout,
    ReplyError,
    VirtbusError,
)
from agent.streams import StreamError
from schemas.events import (
    HealthEvent,
    LifecycleEvent,
    MetadataChangeEvent,
    RebootEvent,
    TunableEvent,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "BroadcastResult",
    "BrokerUnreachable",
    "Connection",
    "Console",
    "Domain",
    "DomainSnapshot",
    "EventHistory",
    "EventKind",
    "EventStream",
    "HealthEvent",
    "HostRegistry",
    "HostState",
    "HostStatus",
    "LifecycleEvent",
    "MetadataChangeEvent",
    "NoHost",
    "NotConnected",
    "OperationTimeout",
    "Progress",
    "RebootEvent",
    "Replayed",
    "ReplyError",
    "Since",
    "StoragePool",
    "StorageVol",
    "StreamError",
    "TunableEvent",
    "VirtbusError",
    "binding_keys",
    "connect",
]
