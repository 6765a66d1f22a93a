"""The client reads a reply's result by its keys: the same result as ``Reply`` gives,
with one model validated instead of every one in the union."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from agent.client.replies import ANY, model_of, parse_reply
from agent.errors import VirtError
from schemas.codes import ErrorCode
from schemas.domain import DomainRecord
from schemas.replies import DomainList, DomainStateInfo, Done, Pong, Reply, Result


def record(name: str) -> DomainRecord:
    return DomainRecord(
        name=name, uuid=uuid.uuid4(), id=-1, state=5, reason=0, persistent=True, autostart=False
    )


RESULTS: list[Result] = [
    DomainList(domains=[record(f"d{index}") for index in range(3)]),
    DomainStateInfo(state=1, reason=1),
    record("web"),
    Pong(host="h1", time=datetime.now(UTC)),
    Done(),
]


@pytest.mark.parametrize("result", RESULTS, ids=lambda result: type(result).__name__)
def test_a_result_reads_as_reply_reads_it(result: Result) -> None:
    body = Reply(id="c1", host="h1", ok=True, result=result).model_dump_json(exclude_none=True)
    parsed = parse_reply(body)
    assert parsed == Reply.model_validate_json(body)
    assert type(parsed.result) is type(result) and parsed.result == result


def test_the_keys_of_a_list_of_domains_name_one_model() -> None:
    assert model_of({"domains": []}) == "DomainList"
    assert model_of({"state": 1, "reason": 1}) == "DomainStateInfo"
    assert model_of({"no such key": 1}) == ANY


def test_an_error_reply_and_a_bad_result_are_read_as_before() -> None:
    error = VirtError(ErrorCode.NO_DOMAIN, "no domain 'x'").to_wire()
    body = Reply(id="c1", host="h1", ok=False, error=error).model_dump_json(exclude_none=True)
    assert parse_reply(body) == Reply.model_validate_json(body)
    bad = '{"v":1,"id":"c1","host":"h1","ok":true,"result":{"domains":[{"name":"x"}]}}'
    with pytest.raises(ValidationError):
        Reply.model_validate_json(bad)
    with pytest.raises(ValidationError):
        parse_reply(bad)
