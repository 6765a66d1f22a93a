"""The tally of the hostile-input tests; the security suite's conftest prints it."""

from __future__ import annotations

from collections import Counter

TRIED: Counter[str] = Counter()
"""Inputs tried, as ``"<target>: <outcome>"`` (target ``decoder``, ``dispatcher``,
``live agent``)."""
