"""Names on the broker, shared by agents and clients (DESIGN §2), and the bounds the
queues are declared with: whoever declares a queue (agent, `virtbus provision`) uses
these, and the AsyncAPI document describes them."""

from __future__ import annotations

from typing import Literal

COMMANDS_EXCHANGE = "virtbus.commands"
BROADCAST_EXCHANGE = "virtbus.broadcast"
EVENTS_EXCHANGE = "virtbus.events"
DEAD_EXCHANGE = "virtbus.dead"
DEAD_QUEUE = "virtbus.dead"
"""Keeps dead letters: without a queue bound to it the fanout would drop them."""

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


def host_queue(host: str) -> str:
    return f"virtbus.host.{host}"


def group_key(group: str) -> str:
    return f"group.{group}"


def host_queue_arguments(
    queue_type: Literal["quorum", "classic"], max_age: bool = True
) -> dict[str, str | int]:
    """The host queue's arguments; without ``max_age``, those of a queue declared before
    commands had a maximum age."""
    arguments: dict[str, str | int] = {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": DEAD_EXCHANGE,
    }
    if max_age:
        arguments["x-message-ttl"] = COMMAND_MAX_AGE_MS
    return arguments


def dead_queue_arguments() -> dict[str, str | int]:
    return {
        "x-queue-type": "quorum",
        "x-max-length": DEAD_LETTERS_MAX_LENGTH,
        "x-max-length-bytes": DEAD_LETTERS_MAX_BYTES,
        "x-message-ttl": DEAD_LETTERS_TTL_MS,
    }


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
