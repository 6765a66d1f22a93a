"""``virtbus agent`` raises its soft descriptor limit to the hard one before it starts."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator

import pytest

from agent.cli.agent import raise_descriptor_limit


@pytest.fixture
def lowered_limit() -> Iterator[int]:
    """The soft limit lowered to 256 (below the hard one) for the test; restored after."""
    original = resource.getrlimit(resource.RLIMIT_NOFILE)
    setrlimit = resource.setrlimit  # the real one, whatever a test patches in
    setrlimit(resource.RLIMIT_NOFILE, (256, original[1]))
    try:
        yield original[1]
    finally:
        setrlimit(resource.RLIMIT_NOFILE, original)


def test_the_soft_limit_is_raised_to_the_hard_one(lowered_limit: int) -> None:
    assert raise_descriptor_limit() == lowered_limit
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (lowered_limit, lowered_limit)


def test_a_refused_raise_keeps_the_limit_and_says_so(
    lowered_limit: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(_: int, __: tuple[int, int]) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    with caplog.at_level(logging.WARNING):
        assert raise_descriptor_limit() == 256
    assert "kept the descriptor limit at 256" in caplog.text


def test_an_unlimited_hard_limit_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, resource.RLIM_INFINITY))

    def unexpected(_: int, __: tuple[int, int]) -> None:
        raise AssertionError("setrlimit called")

    monkeypatch.setattr(resource, "setrlimit", unexpected)
    assert raise_descriptor_limit() == 1024
