"""virtbus wire models: pydantic v2, no I/O. Everything a peer on the bus can observe.

The package loads no model until one is asked for (``schemas.Reply``, or a submodule),
so ``schemas.codes``, ``schemas.errors``, ``schemas.names`` and ``schemas.topology`` cost
no pydantic: the CLI's one-command verbs use only those."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.commands import COMMAND_ADAPTER, Command, InvalidCommand, parse_command
    from schemas.domain import DomainRecord, DomainSpec
    from schemas.events import EVENT_ADAPTER, Event
    from schemas.replies import Reply

_LAZY = {
    "COMMAND_ADAPTER": "schemas.commands",
    "Command": "schemas.commands",
    "InvalidCommand": "schemas.commands",
    "parse_command": "schemas.commands",
    "DomainRecord": "schemas.domain",
    "DomainSpec": "schemas.domain",
    "EVENT_ADAPTER": "schemas.events",
    "Event": "schemas.events",
    "Reply": "schemas.replies",
}

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


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def json_schemas() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of every wire model, by name."""
    from pydantic import TypeAdapter

    from schemas.commands import COMMAND_ADAPTER
    from schemas.domain import DomainRecord, DomainSpec
    from schemas.events import EVENT_ADAPTER
    from schemas.replies import Reply

    adapters: dict[str, TypeAdapter[Any]] = {
        "Command": COMMAND_ADAPTER,
        "Reply": TypeAdapter(Reply),
        "Event": EVENT_ADAPTER,
        "DomainSpec": TypeAdapter(DomainSpec),
        "DomainRecord": TypeAdapter(DomainRecord),
    }
    return {name: adapter.json_schema() for name, adapter in adapters.items()}
