"""What the machine running the tests offers, and what a missing part means there."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


def under_ci() -> bool:
    """CI sets ``CI`` to a truthy word (``true``, ``1``, ``yes``…), whatever its case."""
    return os.environ.get("CI", "").strip().lower() not in FALSE_WORDS


def unavailable(what: str) -> NoReturn:
    """A service or tool the test needs is missing: a failure under CI, a skip elsewhere."""
    if under_ci():
        pytest.fail(f"{what} is not available (required under CI)")
    pytest.skip(f"{what} is not available; run scripts/setup.sh")
