"""Logging: every line carries the host, and, inside a command, its id, op and domain."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
FIELDS = ("host", "command_id", "op", "domain")

command_context: ContextVar[Mapping[str, str]] = ContextVar(
    "command_context", default=MappingProxyType({})
)
"""Set by the dispatcher for the task that runs a command."""


class _Context(logging.Filter):
    def __init__(self, host: str) -> None:
        super().__init__()
        self._host = host

    def filter(self, record: logging.LogRecord) -> bool:
        context = {"host": self._host, **command_context.get()}
        for name in FIELDS:
            setattr(record, name, context.get(name, ""))
        record.context = " ".join(
            f"{name}={context[name]}" for name in FIELDS[1:] if context.get(name)
        )
        return True


def configure(level: str, log_format: LogFormat, host: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_Context(host))
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(host)s %(command_id)s "
                "%(op)s %(domain)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(host)s] %(message)s %(context)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
