"""Log lines carry host and command context; the JSON form is one object per line."""

from __future__ import annotations

import json
import logging

import pytest

from agent import logs


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_command_context(
    restore_logging: object, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("info", "json", "h1")
    token = logs.command_context.set({"command_id": "c-1", "op": "domain.create", "domain": "web"})
    try:
        logging.getLogger("agent.test").warning("started %s", "web")
    finally:
        logs.command_context.reset(token)
    logging.getLogger("agent.test").info("outside")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "started web"
    assert first["level"] == "WARNING"
    assert (first["host"], first["command_id"], first["op"], first["domain"]) == (
        "h1",
        "c-1",
        "domain.create",
        "web",
    )
    assert second["host"] == "h1"
    assert second["command_id"] == ""


def test_text_lines_name_the_command(
    restore_logging: object, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("info", "text", "h1")
    token = logs.command_context.set({"command_id": "c-2", "op": "domain.destroy"})
    try:
        logging.getLogger("agent.test").info("done")
    finally:
        logs.command_context.reset(token)
    line = capsys.readouterr().err.strip()
    assert "[h1] done command_id=c-2 op=domain.destroy" in line
