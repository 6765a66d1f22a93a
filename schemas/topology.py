"""The broker topology as data, shared by agents, clients and provisioning
(docs/protocol.md#topology).

Exchanges, queues and bindings are defined here once, with their AMQP arguments as plain
fields. Everything that puts them on a broker or describes them is generated from these
objects: the agent's declarer (agent/host/bus.py), provisioning through the management API
(agent/admin/provision.py) and the AsyncAPI document (schemas/asyncapi.py). No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

ExchangeKind = Literal["direct", "topic", "fanout"]
QueueType = Literal["quorum", "classic"]
Arguments = Mapping[str, str | int]

COMMANDS_EXCHANGE = "virtbus.commands"
BROADCAST_EXCHANGE = "virtbus.broadcast"
EVENTS_EXCHANGE = "virtbus.events"
DEAD_EXCHANGE = "virtbus.dead"
DEAD_QUEUE = "virtbus.dead"
"""Keeps dead letters: without a queue bound to it the fanout would drop them."""
HISTORY_QUEUE = "virtbus.events.history"
"""The fleet's recent events, a stream: read from any offset or time, never consumed away."""

BROADCAST_ALL = "all"

DEAD_LETTERS_MAX_LENGTH = 10_000
DEAD_LETTERS_MAX_BYTES = 64 * 1024 * 1024
DEAD_LETTERS_TTL_MS = 7 * 24 * 3600 * 1000
"""The dead-letter queue keeps at most this many letters, bytes of bodies and this age;
past a length or byte bound the oldest letters are dropped first."""
DEAD_LETTER_BODY_BYTES = 64 * 1024
"""An agent dead-letters a refused body larger than this as a truncated copy."""
COMMAND_MAX_AGE_MS = 3600 * 1000
"""A command waits in a host queue at most this long (the queue's message TTL), deadline
or not; then the broker dead-letters it as expired."""

POLICY_PRIORITY = 10
"""Priority of the operator policies `virtbus provision` sets: they bound queues declared
before the bounds existed (a queue's arguments cannot change). An operator policy
combines with the queue's arguments and with any user policy: the lowest bound wins."""


@dataclass(frozen=True)
class Exchange:
    name: str
    kind: ExchangeKind
    durable: bool = True
    auto_delete: bool = False
    arguments: Arguments = field(default_factory=dict)


@dataclass(frozen=True)
class Queue:
    name: str
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    arguments: Arguments = field(default_factory=dict)


@dataclass(frozen=True)
class Binding:
    """``queue`` receives what ``exchange`` routes with ``routing_key``."""

    exchange: Exchange
    queue: Queue
    routing_key: str = ""


COMMANDS = Exchange(COMMANDS_EXCHANGE, "direct")
"""Commands to one host: the routing key is the host name."""
BROADCAST = Exchange(BROADCAST_EXCHANGE, "topic")
"""Commands to every host (``all``) or to a group (``group.<g>``)."""
EVENTS = Exchange(EVENTS_EXCHANGE, "topic")
"""Domain and presence events; routing keys start with the host name."""
DEAD = Exchange(DEAD_EXCHANGE, "fanout")
"""The dead-letter exchange of every host queue."""
EXCHANGES = (COMMANDS, BROADCAST, EVENTS, DEAD)

DEAD_LETTERS = Queue(
    DEAD_QUEUE,
    arguments={
        "x-queue-type": "quorum",
        "x-max-length": DEAD_LETTERS_MAX_LENGTH,
        "x-max-length-bytes": DEAD_LETTERS_MAX_BYTES,
        "x-message-ttl": DEAD_LETTERS_TTL_MS,
    },
)
"""Quorum, so that it outlives any one node of a cluster; bounded in length, bytes and
age. Nothing consumes it."""
DEAD_LETTER_BINDING = Binding(DEAD, DEAD_LETTERS)


HISTORY_MAX_AGE = "7D"
HISTORY_MAX_BYTES = 1024 * 1024 * 1024
HISTORY_SEGMENT_BYTES = 16 * 1024 * 1024
"""The history keeps at most this age and these bytes; the oldest segment goes first."""
HISTORY_KEYS = (
    "*.lifecycle.#",
    "*.reboot",
    "*.tunable",
    "*.agent.online",
    "*.agent.offline",
)
"""What the history keeps: every domain event and the agents' arrivals and goodbyes, not
their heartbeats (at a 1,000-host fleet's rate they would push real events out)."""
HISTORY = Queue(
    HISTORY_QUEUE,
    arguments={
        "x-queue-type": "stream",
        "x-max-age": HISTORY_MAX_AGE,
        "x-max-length-bytes": HISTORY_MAX_BYTES,
        "x-stream-max-segment-size-bytes": HISTORY_SEGMENT_BYTES,
    },
)
"""A stream queue (replicated on every node of a cluster); a reader attaches with the
consumer argument ``x-stream-offset`` (``first``, ``last``, ``next``, an offset, or a
timestamp) and acknowledges nothing away."""
HISTORY_BINDINGS = tuple(Binding(EVENTS, HISTORY, key) for key in HISTORY_KEYS)


def host_queue(host: str) -> str:
    return f"virtbus.host.{host}"


def group_key(group: str) -> str:
    return f"group.{group}"


def broadcast_keys(groups: Sequence[str]) -> list[str]:
    """The broadcast routing keys a host in ``groups`` receives."""
    return [BROADCAST_ALL, *(group_key(group) for group in groups)]


def command_queue(host: str, queue_type: QueueType = "quorum", max_age: bool = True) -> Queue:
    """A host's command queue: consumed by its agent only; what it refuses, or what
    expires in it, goes to the dead-letter exchange. A command waits in it at most
    ``COMMAND_MAX_AGE_MS``; without ``max_age``, the queue as a release before that
    bound declared it (a queue's arguments cannot change)."""
    arguments: dict[str, str | int] = {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": DEAD_EXCHANGE,
    }
    if max_age:
        arguments["x-message-ttl"] = COMMAND_MAX_AGE_MS
    return Queue(host_queue(host), arguments=arguments)


def command_bindings(queue: Queue, host: str, groups: Sequence[str]) -> tuple[Binding, ...]:
    """The host's name on the command exchange; ``all`` and its groups on the broadcast
    exchange."""
    return (
        Binding(COMMANDS, queue, host),
        *(Binding(BROADCAST, queue, key) for key in broadcast_keys(groups)),
    )


def operator_policies() -> dict[str, tuple[str, dict[str, int]]]:
    """Operator policies by name: (queue name pattern, definition); they bound queues that
    an older release declared without these arguments."""
    return {
        "virtbus-dead-letters": (
            f"^{DEAD_QUEUE.replace('.', '[.]')}$",
            {
                "max-length": DEAD_LETTERS_MAX_LENGTH,
                "max-length-bytes": DEAD_LETTERS_MAX_BYTES,
                "message-ttl": DEAD_LETTERS_TTL_MS,
            },
        ),
        "virtbus-host-queues": (
            f"^{host_queue('').replace('.', '[.]')}",
            {"message-ttl": COMMAND_MAX_AGE_MS},
        ),
    }
