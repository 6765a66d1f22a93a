"""The profile summary a report quotes: busy time is the time the event loop did not wait."""

from __future__ import annotations

from dataclasses import dataclass

from bench.procs import REPO
from bench.profiling import busy_call_tree, summarize

RUNNER = "run\x00/usr/lib/python3.11/asyncio/runners.py\x0086"
SELECT = "select\x00/usr/lib/python3.11/selectors.py\x00451"
POLL = "poll\x00<built-in>\x000"
APPLY = f"_apply\x00{REPO}/agent/host/monitor.py\x00537"
EXECUTE = "execute\x00<built-in>\x000"


@dataclass
class Recorded:
    """What ``summarize`` reads of a pyinstrument session."""

    frame_records: list[tuple[list[str], float]]


def test_a_uvloop_wait_is_idle_as_asyncios_select_is() -> None:
    summary = summarize(
        Recorded(
            [
                ([RUNNER], 60.0),
                ([RUNNER, SELECT, POLL], 30.0),
                ([RUNNER, APPLY], 0.25),
                ([RUNNER, APPLY, EXECUTE], 0.75),
            ]
        )  # type: ignore[arg-type]
    )
    assert (summary["wall_s"], summary["busy_s"]) == (91.0, 1.0)
    assert [row["frame"] for row in summary["top_self"]] == [
        "execute [C] ← _apply (agent/host/monitor.py:537)",
        "_apply (agent/host/monitor.py:537)",
    ]


def test_the_call_tree_shows_the_busy_time_only() -> None:
    from pyinstrument.session import Session

    session = Session(
        frame_records=[
            ([RUNNER], 60.0),
            ([RUNNER, SELECT, POLL], 30.0),
            ([RUNNER, APPLY], 0.25),
            ([RUNNER, APPLY, EXECUTE], 0.75),
        ],
        start_time=0.0,
        duration=91.0,
        min_interval=0.0002,
        max_interval=0.0002,
        sample_count=4,
        start_call_stack=[RUNNER],
        target_description="an agent",
        cpu_time=1.5,
        sys_path=[],
        sys_prefixes=[],
    )
    tree = busy_call_tree(session)
    assert "busy 1.00 s of 91.00 s" in tree
    assert "1.0000 run" in tree
    assert "1.0000 _apply" in tree
    assert "0.7500 execute" in tree
    assert "select" not in tree
