"""Hostile-input tests: each counts the inputs it threw, and the counts close the run."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.hostile import TRIED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    targets: dict[str, Counter[str]] = {}
    for key, count in TRIED.items():
        target, _, outcome = key.partition(": ")
        targets.setdefault(target, Counter())[outcome] += count
    for target, outcomes in sorted(targets.items()):
        detail = ", ".join(f"{outcome} {n}" for outcome, n in outcomes.most_common())
        terminalreporter.write_line(
            f"hostile inputs tried on the {target}: {outcomes.total()} ({detail})"
        )
