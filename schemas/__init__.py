"""virtbus wire models: pydantic v2, no I/O. Everything a peer on the bus can observe."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from schemas.commands import COMMAND_ADAPTER, Command, InvalidCommand, parse_command
from schemas.domain import DomainRecord, DomainSpec
from schemas.events import EVENT_ADAPTER, Event
from schemas.replies import Reply

__all__ = [
    "COMMAND_ADAPTER",
    "EVENT_ADAPTER",
    "Command",
    "DomainRecord",
    "DomainSpec",
    "Event",
    "InvalidCommand",
    "Reply",
    "json_schemas",
    "parse_command",
]


def json_schemas() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of every wire model, by name."""
    adapters: dict[str, TypeAdapter[Any]] = {
        "Command": COMMAND_ADAPTER,
        "Reply": TypeAdapter(Reply),
        "Event": EVENT_ADAPTER,
        "DomainSpec": TypeAdapter(DomainSpec),
        "DomainRecord": TypeAdapter(DomainRecord),
    }
    return {name: adapter.json_schema() for name, adapter in adapters.items()}
