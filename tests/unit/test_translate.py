"""Docker events → libvirt events: the table row by row, stop causes, recorded replays."""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.host.translate import (
    STOP_CAUSES,
    TABLE,
    Evidence,
    Mode,
    Row,
    Special,
    StopCause,
    Transition,
    stop_cause_of_exit,
    translate,
)
from schemas.codes import DomainState, Lifecycle

L = Lifecycle
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "docker_events"
SIGTERM, SIGKILL = 15, 9


def first_match(action: str, mode: Mode, persistent: bool, stopping: bool) -> int | None:
    for index, row in enumerate(TABLE):
        if row.matches(action, mode, persistent, stopping):
            return index
    return None


def row_id(row: Row) -> str:
    facts = [f"{key}={value}" for key, value in vars(row).items() if key != "emits"]
    return ",".join(facts)


# -- the table, row by row -------------------------------------------------------------------


@pytest.mark.parametrize("row", TABLE, ids=[row_id(row) for row in TABLE])
def test_row_emits_what_it_says(row: Row) -> None:
    """The situation a row describes (unconstrained facts at their plainest) gives its
    emits, a stop after SIGTERM being a shutdown."""
    stopping = bool(row.stopping)
    evidence = Evidence(signals=[SIGTERM] if stopping else [], stopping=stopping)
    got = translate(
        row.action,
        mode=row.mode or Mode.PLAIN,
        persistent=True if row.persistent is None else row.persistent,
        evidence=evidence,
        exit_code=143 if stopping else 0,
    )
    want = tuple(L.STOPPED_SHUTDOWN if emit is Special.STOPPED else emit for emit in row.emits)
    assert got == want


@pytest.mark.parametrize("index", range(len(TABLE)), ids=[row_id(row) for row in TABLE])
def test_every_row_is_reachable(index: int) -> None:
    row = TABLE[index]
    situations = itertools.product(list(Mode), [True, False], [True, False])
    firsts = {first_match(row.action, *situation) for situation in situations}
    assert index in firsts, f"row {index} is shadowed by an earlier row"


@pytest.mark.parametrize("action", sorted({row.action for row in TABLE}))
def test_an_action_is_matched_as_by_a_scan_of_the_whole_table(action: str) -> None:
    for mode, persistent, stopping in itertools.product(list(Mode), [True, False], [True, False]):
        index = first_match(action, mode, persistent, stopping)
        evidence = Evidence(signals=[SIGTERM], stopping=stopping)
        got = translate(action, mode=mode, persistent=persistent, evidence=evidence, exit_code=0)
        emits = () if index is None else TABLE[index].emits
        want = tuple(L.STOPPED_SHUTDOWN if emit is Special.STOPPED else emit for emit in emits)
        assert got == want, (mode, persistent, stopping)


def test_a_copy_of_the_evidence_is_equal_and_apart() -> None:
    evidence = Evidence(signals=[SIGTERM, SIGKILL], oom=True, stopping=True)
    assert {field.name for field in dataclasses.fields(Evidence)} == {"signals", "oom", "stopping"}
    copied = evidence.copy()
    copied.signals.append(2)
    assert evidence == Evidence(signals=[SIGTERM, SIGKILL], oom=True, stopping=True)
    assert copied == Evidence(signals=[SIGTERM, SIGKILL, 2], oom=True, stopping=True)


@pytest.mark.parametrize("action", ["kill", "stop", "oom", "exec_start", "health_status", "x"])
@pytest.mark.parametrize("mode", list(Mode))
def test_actions_without_a_row_emit_nothing(action: str, mode: Mode) -> None:
    assert translate(action, mode=mode, persistent=True, evidence=Evidence()) == ()


@dataclass(frozen=True)
class Case:
    action: str
    want: tuple[Transition, ...]
    mode: Mode = Mode.PLAIN
    persistent: bool = True
    signals: tuple[int, ...] = ()
    exit_code: int | None = None


CONTRACT = {
    "define new": Case("create", (L.DEFINED_ADDED,)),
    "transient create": Case("create", (), persistent=False),
    "start": Case("start", (L.STARTED_BOOTED,)),
    "transient start": Case("start", (L.STARTED_BOOTED,), persistent=False),
    "reboot start": Case("start", (), mode=Mode.REBOOT),
    "reboot die": Case("die", (), mode=Mode.REBOOT, signals=(SIGTERM,), exit_code=143),
    "reboot restart": Case("restart", (Special.REBOOT,), mode=Mode.REBOOT),
    "pause": Case("pause", (L.SUSPENDED_PAUSED,)),
    "unpause": Case("unpause", (L.RESUMED_UNPAUSED,)),
    "unpause on the way down": Case("unpause", (), signals=(SIGTERM,)),
    "destroy": Case("die", (L.STOPPED_DESTROYED,), signals=(SIGKILL,), exit_code=137),
    "undefine": Case("destroy", (L.UNDEFINED_REMOVED,)),
    "transient gone": Case("destroy", (), persistent=False),
    "rename": Case("rename", (L.UNDEFINED_RENAMED, L.DEFINED_RENAMED)),
    "transient rename": Case("rename", (), persistent=False),
    "update": Case("update", (Special.TUNABLE,)),
    "redefine create": Case("create", (), mode=Mode.REDEFINE),
    "redefine destroy": Case("destroy", (), mode=Mode.REDEFINE),
    "redefine rename": Case("rename", (L.DEFINED_UPDATED,), mode=Mode.REDEFINE),
    "refresh create": Case("create", (), mode=Mode.REFRESH),
    "refresh destroy": Case("destroy", (), mode=Mode.REFRESH),
    "refresh rename": Case("rename", (), mode=Mode.REFRESH),
    "refresh start": Case("start", (L.STARTED_BOOTED,), mode=Mode.REFRESH),
}


@pytest.mark.parametrize("case", CONTRACT.values(), ids=CONTRACT.keys())
def test_situations_of_design_5(case: Case) -> None:
    evidence = Evidence(signals=list(case.signals), stopping=bool(case.signals))
    got = translate(
        case.action,
        mode=case.mode,
        persistent=case.persistent,
        evidence=evidence,
        exit_code=case.exit_code,
    )
    assert got == case.want


# -- stop causes -----------------------------------------------------------------------------

STOPS: dict[str, tuple[list[int], bool, int | None, StopCause, Lifecycle]] = {
    "oom": ([], True, 137, StopCause.OOM, L.STOPPED_CRASHED),
    "oom and SIGKILL": ([SIGKILL], True, 137, StopCause.OOM, L.STOPPED_CRASHED),
    "SIGKILL": ([SIGKILL], False, 137, StopCause.KILLED, L.STOPPED_DESTROYED),
    "SIGTERM then SIGKILL": ([SIGTERM, SIGKILL], False, 137, StopCause.KILLED, L.STOPPED_DESTROYED),
    "SIGTERM": ([SIGTERM], False, 143, StopCause.SIGNALLED, L.STOPPED_SHUTDOWN),
    "SIGTERM, handled": ([SIGTERM], False, 0, StopCause.SIGNALLED, L.STOPPED_SHUTDOWN),
    "SIGINT": ([2], False, 130, StopCause.SIGNALLED, L.STOPPED_SHUTDOWN),
    "exit 0": ([], False, 0, StopCause.CLEAN_EXIT, L.STOPPED_SHUTDOWN),
    "no exit code": ([], False, None, StopCause.CLEAN_EXIT, L.STOPPED_SHUTDOWN),
    "exit 1": ([], False, 1, StopCause.ERROR_EXIT, L.STOPPED_FAILED),
    "exit 3": ([], False, 3, StopCause.ERROR_EXIT, L.STOPPED_FAILED),
    "exit 128": ([], False, 128, StopCause.ERROR_EXIT, L.STOPPED_FAILED),
    "exit 129": ([], False, 129, StopCause.SIGNAL_EXIT, L.STOPPED_CRASHED),
    "exit 137, no signal": ([], False, 137, StopCause.SIGNAL_EXIT, L.STOPPED_CRASHED),
    "exit 139 (SIGSEGV)": ([], False, 139, StopCause.SIGNAL_EXIT, L.STOPPED_CRASHED),
}


@pytest.mark.parametrize(
    ("signals", "oom", "exit_code", "cause", "stopped"), STOPS.values(), ids=STOPS.keys()
)
def test_stop_cause(
    signals: list[int], oom: bool, exit_code: int | None, cause: StopCause, stopped: Lifecycle
) -> None:
    evidence = Evidence(signals=signals, oom=oom)
    assert evidence.stop_cause(exit_code) is cause
    assert STOP_CAUSES[cause] is stopped
    assert translate(
        "die", mode=Mode.PLAIN, persistent=True, evidence=evidence, exit_code=exit_code
    ) == (stopped,)


EXITS: dict[str, tuple[int, bool, Lifecycle]] = {
    "exit 0": (0, False, L.STOPPED_SHUTDOWN),
    "exit 1": (1, False, L.STOPPED_FAILED),
    "exit 128": (128, False, L.STOPPED_FAILED),
    "exit 129": (129, False, L.STOPPED_CRASHED),
    "exit 139": (139, False, L.STOPPED_CRASHED),
    "oom-killed": (137, True, L.STOPPED_CRASHED),
    "oom-killed, exit 0": (0, True, L.STOPPED_CRASHED),
}


@pytest.mark.parametrize(("exit_code", "oom_killed", "stopped"), EXITS.values(), ids=EXITS.keys())
def test_stop_cause_of_exit(exit_code: int, oom_killed: bool, stopped: Lifecycle) -> None:
    assert stop_cause_of_exit(exit_code, oom_killed) is stopped


def test_start_forgets_the_previous_life() -> None:
    evidence = Evidence()
    for action, signal in [("kill", SIGKILL), ("oom", None), ("die", None), ("start", None)]:
        evidence.observe(action, signal)
    assert evidence == Evidence()
    assert not evidence.stopping


def test_kill_without_signal_is_not_evidence() -> None:
    evidence = Evidence()
    evidence.observe("kill", None)
    assert evidence.signals == []


# -- replays of recorded Docker event streams -----------------------------------------------


def replay(
    steps: list[tuple[str, int | None, int | None]], mode: Mode, persistent: bool
) -> list[Transition]:
    evidence = Evidence()
    emitted: list[Transition] = []
    for action, signal, exit_code in steps:
        evidence.observe(action, signal)
        emitted += translate(
            action, mode=mode, persistent=persistent, evidence=evidence, exit_code=exit_code
        )
    return emitted


def recorded(name: str) -> list[tuple[str, int | None, int | None]]:
    steps: list[tuple[str, int | None, int | None]] = []
    for line in (FIXTURES / name).read_text().splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        assert event["Type"] == "container"
        attributes = event["Actor"]["Attributes"]
        exit_code, signal = attributes.get("exitCode"), attributes.get("signal")
        steps.append(
            (
                event["Action"].split(":", 1)[0],
                None if signal is None else int(signal),
                None if exit_code is None else int(exit_code),
            )
        )
    return steps


PLAIN, REBOOT = Mode.PLAIN, Mode.REBOOT
REPLAYS: list[tuple[str, Mode, bool, list[Transition]]] = [
    ("create.jsonl", PLAIN, True, [L.DEFINED_ADDED]),
    ("create.jsonl", PLAIN, False, []),
    ("start.jsonl", PLAIN, True, [L.STARTED_BOOTED]),
    ("pause.jsonl", PLAIN, True, [L.SUSPENDED_PAUSED]),
    ("unpause.jsonl", PLAIN, True, [L.RESUMED_UNPAUSED]),
    ("docker_stop.jsonl", PLAIN, True, [L.STOPPED_SHUTDOWN]),
    ("docker_stop_paused.jsonl", PLAIN, True, [L.STOPPED_SHUTDOWN]),
    ("docker_kill.jsonl", PLAIN, True, [L.STOPPED_DESTROYED]),
    ("docker_kill_paused.jsonl", PLAIN, True, [L.STOPPED_DESTROYED]),
    ("docker_kill_term.jsonl", PLAIN, True, [L.STOPPED_SHUTDOWN]),
    (
        "stop_grace_expired.jsonl",
        PLAIN,
        True,
        [L.DEFINED_ADDED, L.STARTED_BOOTED, L.STOPPED_DESTROYED],
    ),
    ("docker_restart.jsonl", PLAIN, True, [L.STOPPED_SHUTDOWN, L.STARTED_BOOTED, Special.REBOOT]),
    ("docker_restart.jsonl", REBOOT, True, [Special.REBOOT]),
    ("docker_rename.jsonl", PLAIN, True, [L.UNDEFINED_RENAMED, L.DEFINED_RENAMED]),
    ("docker_rename.jsonl", PLAIN, False, []),
    ("docker_rm_force.jsonl", PLAIN, True, [L.STOPPED_DESTROYED, L.UNDEFINED_REMOVED]),
    (
        "docker_rm_force_running.jsonl",
        PLAIN,
        True,
        [L.DEFINED_ADDED, L.STARTED_BOOTED, L.STOPPED_DESTROYED, L.UNDEFINED_REMOVED],
    ),
    (
        "docker_rm_force_running.jsonl",
        PLAIN,
        False,
        [L.STARTED_BOOTED, L.STOPPED_DESTROYED],
    ),
    ("run_exit0.jsonl", PLAIN, True, [L.DEFINED_ADDED, L.STARTED_BOOTED, L.STOPPED_SHUTDOWN]),
    ("run_exit0.jsonl", PLAIN, False, [L.STARTED_BOOTED, L.STOPPED_SHUTDOWN]),
    ("run_exit3.jsonl", PLAIN, True, [L.DEFINED_ADDED, L.STARTED_BOOTED, L.STOPPED_FAILED]),
    ("run_segv.jsonl", PLAIN, True, [L.DEFINED_ADDED, L.STARTED_BOOTED, L.STOPPED_CRASHED]),
    ("oom.jsonl", PLAIN, True, [L.DEFINED_ADDED, L.STARTED_BOOTED, L.STOPPED_CRASHED]),
    ("update.jsonl", PLAIN, True, [L.DEFINED_ADDED, L.STARTED_BOOTED, Special.TUNABLE]),
]


@pytest.mark.parametrize(
    ("name", "mode", "persistent", "want"),
    REPLAYS,
    ids=[
        f"{name[:-6]}-{mode}-{'persistent' if p else 'transient'}" for name, mode, p, _ in REPLAYS
    ],
)
def test_replay(name: str, mode: Mode, persistent: bool, want: list[Transition]) -> None:
    assert replay(recorded(name), mode, persistent) == want


def test_every_fixture_is_replayed() -> None:
    assert {path.name for path in FIXTURES.glob("*.jsonl")} == {name for name, *_ in REPLAYS}


def test_redefine_reports_one_update() -> None:
    steps: list[tuple[str, int | None, int | None]] = [
        ("create", None, None),
        ("destroy", None, None),
        ("rename", None, None),
    ]
    assert replay(steps, Mode.REDEFINE, persistent=True) == [L.DEFINED_UPDATED]


def test_refresh_reports_only_the_start() -> None:
    steps: list[tuple[str, int | None, int | None]] = [
        ("create", None, None),
        ("destroy", None, None),
        ("rename", None, None),
        ("start", None, None),
    ]
    assert replay(steps, Mode.REFRESH, persistent=True) == [L.STARTED_BOOTED]


def test_revert_of_a_running_domain_is_libvirts_from_snapshot_sequence() -> None:
    """The new container is built beside the old, the old removed (Docker kills it),
    the new renamed into place and started: stopped, defined and started, each "from
    snapshot", and nothing else."""
    steps: list[tuple[str, int | None, int | None]] = [
        ("create", None, None),
        ("kill", 9, None),
        ("die", None, 137),
        ("destroy", None, None),
        ("rename", None, None),
        ("start", None, None),
    ]
    assert replay(steps, Mode.REVERT, persistent=True) == [
        L.STOPPED_FROM_SNAPSHOT,
        L.DEFINED_FROM_SNAPSHOT,
        L.STARTED_FROM_SNAPSHOT,
    ]


def test_resume_after_a_signal_that_did_not_stop() -> None:
    steps: list[tuple[str, int | None, int | None]] = [
        ("kill", 1, None),
        ("pause", None, None),
        ("unpause", None, None),
    ]
    assert replay(steps, Mode.PLAIN, persistent=True) == [L.SUSPENDED_PAUSED, L.RESUMED_UNPAUSED]


# -- libvirt's codes -------------------------------------------------------------------------

CODES: dict[Lifecycle, tuple[str, int, str, int]] = {
    L.DEFINED_ADDED: ("defined", 0, "added", 0),
    L.DEFINED_UPDATED: ("defined", 0, "updated", 1),
    L.DEFINED_RENAMED: ("defined", 0, "renamed", 2),
    L.UNDEFINED_REMOVED: ("undefined", 1, "removed", 0),
    L.UNDEFINED_RENAMED: ("undefined", 1, "renamed", 1),
    L.STARTED_BOOTED: ("started", 2, "booted", 0),
    L.SUSPENDED_PAUSED: ("suspended", 3, "paused", 0),
    L.RESUMED_UNPAUSED: ("resumed", 4, "unpaused", 0),
    L.STOPPED_SHUTDOWN: ("stopped", 5, "shutdown", 0),
    L.STOPPED_DESTROYED: ("stopped", 5, "destroyed", 1),
    L.STOPPED_CRASHED: ("stopped", 5, "crashed", 2),
    L.STOPPED_FAILED: ("stopped", 5, "failed", 5),
    L.DEFINED_FROM_SNAPSHOT: ("defined", 0, "from_snapshot", 3),
    L.STARTED_FROM_SNAPSHOT: ("started", 2, "from_snapshot", 3),
    L.STOPPED_FROM_SNAPSHOT: ("stopped", 5, "from_snapshot", 6),
}
"""The lifecycle table of docs/events.md#events."""

OUTCOMES: dict[Lifecycle, tuple[int, int] | None] = {
    L.DEFINED_ADDED: None,
    L.DEFINED_UPDATED: None,
    L.DEFINED_RENAMED: None,
    L.UNDEFINED_REMOVED: None,
    L.UNDEFINED_RENAMED: None,
    L.STARTED_BOOTED: (1, 1),
    L.SUSPENDED_PAUSED: (3, 1),
    L.RESUMED_UNPAUSED: (1, 5),
    L.STOPPED_SHUTDOWN: (5, 1),
    L.STOPPED_DESTROYED: (5, 2),
    L.STOPPED_CRASHED: (5, 3),
    L.STOPPED_FAILED: (5, 6),
    L.DEFINED_FROM_SNAPSHOT: None,
    L.STARTED_FROM_SNAPSHOT: (1, 4),
    L.STOPPED_FROM_SNAPSHOT: (5, 7),
}
"""The state and reason numbers of docs/events.md#states-and-reasons-virdomainstate."""


def test_every_lifecycle_member_is_listed() -> None:
    assert set(CODES) == set(Lifecycle) == set(OUTCOMES)


@pytest.mark.parametrize(("member", "codes"), CODES.items(), ids=[m.name for m in CODES])
def test_lifecycle_codes(member: Lifecycle, codes: tuple[str, int, str, int]) -> None:
    assert (member.event, member.event_code, member.detail, member.detail_code) == codes
    assert Lifecycle.of(member.event, member.detail) is member


@pytest.mark.parametrize(("member", "outcome"), OUTCOMES.items(), ids=[m.name for m in OUTCOMES])
def test_lifecycle_outcome(member: Lifecycle, outcome: tuple[int, int] | None) -> None:
    got = member.outcome
    assert (None if got is None else (int(got[0]), int(got[1]))) == outcome
    if got is not None:
        assert isinstance(got[0], DomainState)


def test_unknown_lifecycle_is_refused() -> None:
    with pytest.raises(ValueError, match="stopped/rebooted"):
        Lifecycle.of("stopped", "rebooted")


def test_a_stop_seen_late_is_read_with_the_signals_reported_before() -> None:
    terminated = Evidence()
    terminated.observe("kill", 15)
    assert stop_cause_of_exit(143, False, terminated) is L.STOPPED_SHUTDOWN
    assert stop_cause_of_exit(143, False) is L.STOPPED_CRASHED
