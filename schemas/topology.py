"""Names on the broker, shared by agents and clients (docs/protocol.md#topology)."""

from __future__ import annotations

COMMANDS_EXCHANGE = "virtbus.commands"
BROADCAST_EXCHANGE = "virtbus.broadcast"
EVENTS_EXCHANGE = "virtbus.events"
DEAD_EXCHANGE = "virtbus.dead"
DEAD_QUEUE = "virtbus.dead"
"""Keeps dead letters: without a queue bound to it the fanout would drop them."""

BROADCAST_ALL = "all"


def host_queue(host: str) -> str:
    return f"virtbus.host.{host}"


def group_key(group: str) -> str:
    return f"group.{group}"
