"""A gather reads each reply's host and outcome only; ``BroadcastResult`` validates the
replies when they are read, keeps out one that does not validate, and tells who is
missing and who failed as before."""

from __future__ import annotations

import json

from agent.client import BroadcastResult
from schemas.replies import Pong, Reply

OK = {"v": 1, "id": "c1", "host": "h1", "ok": True}
PONG = {"host": "h1", "time": "2026-12-06T06:00:00Z"}
FAILED = {
    "v": 1,
    "id": "c1",
    "host": "h2",
    "ok": False,
    "error": {"code": "NO_DOMAIN", "vir_error": 42, "message": "Domain not found"},
}
INVALID = {"v": 1, "id": "c1", "host": "h3", "ok": True, "result": {"no such": "field"}}


def body(document: dict[str, object]) -> bytes:
    return json.dumps(document).encode()


def gathered() -> BroadcastResult:
    return BroadcastResult(
        bodies={
            "h1": body({**OK, "result": PONG}),
            "h2": body(FAILED),
            "h3": body(INVALID),
        },
        succeeded=frozenset({"h1", "h3"}),
        expected=frozenset({"h1", "h2", "h3", "h4"}),
        elapsed_s=0.1,
    )


def test_missing_and_failed_come_from_the_envelopes() -> None:
    result = gathered()
    assert result.missing == {"h4"}
    failed = result.failed
    assert list(failed) == ["h2"]
    assert failed["h2"].error is not None and failed["h2"].error.vir_error == 42
    assert "replies" not in result.__dict__


def test_replies_are_typed_when_read_and_an_invalid_one_is_left_out() -> None:
    result = gathered()
    replies = result.replies
    assert replies.keys() == {"h1", "h2"}
    assert isinstance(replies["h1"], Reply) and isinstance(replies["h1"].result, Pong)
    assert result.replies is replies
    assert result.failed["h2"] is replies["h2"]
