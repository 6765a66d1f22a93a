"""The agent's start-up while Docker restarts: a step that needs Docker waits for it
(bounded) instead of ending the agent."""

from __future__ import annotations

import pytest

from agent.errors import VirtError
from agent.host import agent
from agent.host.agent import with_engine
from schemas.codes import ErrorCode

DOWN = VirtError(ErrorCode.OPERATION_FAILED, "Cannot connect to Docker Engine")


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "ENGINE_RETRY_S", 0.01)


async def test_a_step_docker_fails_while_restarting_is_tried_until_it_answers() -> None:
    calls = 0

    async def engine() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise DOWN
        return "facts"

    assert await with_engine(engine, timeout_s=5) == "facts"
    assert calls == 3


async def test_docker_still_down_after_the_time_given_is_an_error() -> None:
    async def engine() -> str:
        raise DOWN

    with pytest.raises(VirtError) as failed:
        await with_engine(engine, timeout_s=0.05)
    assert failed.value is DOWN
