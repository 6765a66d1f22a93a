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
domain's console), ``wire`` (one command as JSON, without the models). The package
loads a room only when one of its names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY = {
    "DEFAULT_TIMEOUT_S": "agent.client.connection",
    "BroadcastResult": "agent.client.connection",
    "Connection": "agent.client.connection",
    "Progress": "agent.client.connection",
    "connect": "agent.client.connection",
    "Domain": "agent.client.domain",
    "EventKind": "agent.client.events",
    "EventStream": "agent.client.events",
    "binding_keys": "agent.client.events",
    "EventHistory": "agent.client.history",
    "Replayed": "agent.client.history",
    "Since": "agent.client.history",
    "HostRegistry": "agent.client.registry",
    "HostState": "agent.client.registry",
    "HostStatus": "agent.client.registry",
    "DomainSnapshot": "agent.client.storage",
    "StoragePool": "agent.client.storage",
    "StorageVol": "agent.client.storage",
    "Console": "agent.client.streams",
    "BrokerUnreachable": "agent.errors",
    "NoHost": "agent.errors",
    "NotConnected": "agent.errors",
    "OperationTimeout": "agent.errors",
    "ReplyError": "agent.errors",
    "VirtbusError": "agent.errors",
    "StreamError": "agent.streams",
    "HealthEvent": "schemas.events",
    "LifecycleEvent": "schemas.events",
    "MetadataChangeEvent": "schemas.events",
    "RebootEvent": "schemas.events",
    "TunableEvent": "schemas.events",
}

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


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'agent.client' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
