"""The history checker of the fault suite and the soak, on made-up histories: every
detection path fires, strict and tolerant, and a clean history passes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from schemas.codes import Lifecycle
from schemas.events import DomainEvent, DomainRef, LifecycleEvent, Origin, RebootEvent
from tests.faults.history import REMOVING, TOLERATED, Report, Run, Sent, check

OPS = {
    "define": Lifecycle.DEFINED_ADDED,
    "create": Lifecycle.STARTED_BOOTED,
    "suspend": Lifecycle.SUSPENDED_PAUSED,
    "resume": Lifecycle.RESUMED_UNPAUSED,
    "destroy": Lifecycle.STOPPED_DESTROYED,
    "shutdown": Lifecycle.STOPPED_SHUTDOWN,
    "undefine": Lifecycle.UNDEFINED_REMOVED,
}


@dataclass
class History:
    """A run and its events, built one command at a time."""

    run: Run = field(default_factory=Run)
    events: list[DomainEvent] = field(default_factory=list)
    uuids: dict[str, uuid.UUID] = field(default_factory=dict)
    number: int = 0

    def event(
        self,
        name: str,
        what: Lifecycle | None,
        cause: str | None = None,
        origin: Origin = "agent",
        codes: tuple[int, int] | None = None,
    ) -> DomainEvent:
        domain = DomainRef(name=name, uuid=self.uuids.setdefault(name, uuid.uuid4()), id=-1)
        common = {
            "host": "h1",
            "time": datetime.now(UTC),
            "seq": len(self.events) + 1,
            "domain": domain,
            "origin": origin,
            "cause": cause,
        }
        made: DomainEvent
        if what is None:
            made = RebootEvent.model_validate(common)
        else:
            event_code, detail_code = codes or (what.event_code, what.detail_code)
            made = LifecycleEvent.model_validate(
                {
                    **common,
                    "event": what.event,
                    "event_code": event_code,
                    "detail": what.detail,
                    "detail_code": detail_code,
                }
            )
        self.events.append(made)
        return made

    def command(
        self,
        name: str,
        op: str,
        error: str | None = None,
        events: int = 1,
        sends: int = 1,
    ) -> Sent:
        self.number += 1
        command_id = f"c{self.number}"
        reply: dict[str, object] = {"v": 1, "id": command_id, "host": "h1", "ok": error is None}
        if error is not None:
            reply["error"] = {"code": error, "message": f"{op} failed"}
            events = 0
        for _ in range(events):
            self.event(name, OPS.get(op), command_id)
        sent = Sent(name, op, reply, sends=sends)
        self.run.sent.append(sent)
        return sent

    def script(self, name: str, *ops: str) -> None:
        for op in ops:
            self.command(name, op)

    def check(self, listed: dict[str, int], **options: object) -> Report:
        return check("made-up", self.run, self.events, listed, **options)  # type: ignore[arg-type]


TOLERANT: dict[str, object] = {"tolerated": TOLERATED, "strict": False}
MODES = pytest.mark.parametrize("mode", [{}, TOLERANT], ids=["strict", "tolerant"])


def interrupted(history: History) -> History:
    """Mark the first command as re-sent: the fault interrupted something."""
    history.run.sent[0].sends = 2
    return history


def clean() -> History:
    history = History()
    history.script("a", "define", "create", "suspend", "resume", "destroy")
    history.script("b", "define", "create", "reboot", "shutdown", "undefine")
    return interrupted(history)


@MODES
def test_a_clean_history_passes(mode: dict[str, object]) -> None:
    report = clean().check({"a": 5}, docker={"a": "shutoff"}, **mode)
    assert report.problems == []
    assert "lost 0, duplicated 0, illegal 0" in report.line()
    assert report.resent == 1


@MODES
def test_a_seq_gap_is_lost(mode: dict[str, object]) -> None:
    history = clean()
    del history.events[3]
    assert "seq 4 missing" in history.check({"a": 5}, **mode).lost


@MODES
def test_one_seq_with_two_events_is_duplicated(mode: dict[str, object]) -> None:
    history = clean()
    history.events.append(history.events[1].model_copy(update={"origin": "reconcile"}))
    report = history.check({"a": 5}, **mode)
    assert report.duplicated == ["seq 2 carries two different events"]


def test_the_same_event_twice_is_a_redelivery_not_a_duplicate() -> None:
    history = clean()
    history.events.append(history.events[1])
    report = history.check({"a": 5})
    assert report.problems == []
    assert report.redelivered == 1


@MODES
def test_a_command_with_two_effects_is_duplicated(mode: dict[str, object]) -> None:
    history = History()
    history.command("a", "define")
    history.command("a", "create")
    history.command("a", "suspend")
    history.command("a", "resume", events=2)
    report = interrupted(history).check({"a": 1}, **mode)
    assert "command c4 caused 2 events" in report.duplicated


@MODES
def test_every_reply_is_checked_not_only_the_first(mode: dict[str, object]) -> None:
    history = clean()
    sent = history.run.sent[2]
    sent.replies.append({**sent.reply, "ok": False, "error": {"code": "OPERATION_INVALID"}})
    report = history.check({"a": 5}, **mode)
    assert report.duplicated == ["a suspend c3: 2 different replies"]


@MODES
def test_a_reply_after_the_sender_stopped_waiting_is_checked(mode: dict[str, object]) -> None:
    history = clean()
    late = history.run.sent[2]
    refusal = {**late.reply, "ok": False, "error": {"code": "OPERATION_TIMEOUT", "message": "x"}}
    history.run.sent[2] = Sent(late.domain, late.op, {}, [refusal])
    report = history.check({"a": 5}, **mode)
    assert report.errors["OPERATION_TIMEOUT"] == 1
    assert "a suspend failed: x" in report.lost
    assert any("answered OPERATION_TIMEOUT but caused" in line for line in report.illegal)


def test_the_same_reply_twice_is_fine() -> None:
    history = clean()
    history.run.sent[2].replies.append(dict(history.run.sent[2].reply))
    assert history.check({"a": 5}).problems == []


@MODES
def test_a_command_never_answered_is_lost(mode: dict[str, object]) -> None:
    history = clean()
    history.run.sent.append(Sent("a", "create", {}, [], sends=20))
    assert "a create: no reply" in history.check({"a": 5}, **mode).lost


def test_strict_mode_tolerates_no_error() -> None:
    history = clean()
    history.command("a", "create", error="OPERATION_FAILED")
    assert "a create failed: create failed" in history.check({"a": 5}).lost


def test_tolerant_mode_accepts_a_few_tolerated_errors_only() -> None:
    history = clean()
    history.command("a", "create", error="OPERATION_FAILED")
    assert history.check({"a": 5}, **TOLERANT).problems == []
    history.command("a", "suspend", error="INTERNAL_ERROR")
    assert "a suspend failed: suspend failed" in history.check({"a": 5}, **TOLERANT).lost


def test_tolerant_mode_fails_when_every_command_failed() -> None:
    history = History()
    history.command("a", "define")
    for op in ("create", "suspend", "resume", "destroy", "create", "reboot"):
        history.command("a", op, error="OPERATION_FAILED")
    report = history.check({"a": 5}, **TOLERANT)
    assert report.lost == ["6 of 7 commands failed (at most 25% may)"]


def stopped_behind_its_back(refusal: str) -> History:
    """A running domain Docker stopped (no command behind it), then every op that needs
    it active answered ``refusal``, then started again."""
    history = History()
    history.script("a", "define", "create")
    history.event("a", Lifecycle.STOPPED_FAILED, origin="external")
    for op in ("suspend", "resume", "destroy", "shutdown", "reboot"):
        history.command("a", op, error=refusal)
    history.command("a", "create")
    return history


def test_a_refusal_the_domains_events_explain_is_not_a_failure() -> None:
    report = stopped_behind_its_back("OPERATION_INVALID").check({"a": 1}, **TOLERANT)
    assert report.problems == []
    assert report.refused == 5
    assert "(5 refused in a state that forbids the op)" in report.line()


def test_the_same_errors_where_no_state_explains_them_are_failures() -> None:
    failed = stopped_behind_its_back("OPERATION_FAILED").check({"a": 1}, **TOLERANT)
    assert failed.lost == ["5 of 8 commands failed (at most 25% may)"]
    history = History()
    history.script("a", "define", "create")
    for op in ("suspend", "resume", "reboot"):
        history.command("a", op, error="OPERATION_INVALID")
    history.command("a", "create", error="OPERATION_INVALID")
    report = interrupted(history).check({"a": 1}, **TOLERANT)
    assert report.refused == 1
    assert report.lost == ["3 of 6 commands failed (at most 25% may)"]


@MODES
def test_an_error_with_an_effect_is_illegal(mode: dict[str, object]) -> None:
    history = clean()
    sent = history.command("a", "create", error="OPERATION_FAILED")
    history.event("a", Lifecycle.STARTED_BOOTED, sent.id)
    report = history.check({"a": 1}, **mode)
    assert report.illegal == [
        "a create answered OPERATION_FAILED but caused lifecycle/started/booted (seq 11)"
    ]


@MODES
def test_an_ok_with_no_event_is_lost(mode: dict[str, object]) -> None:
    history = clean()
    history.command("a", "create", events=0)
    assert "a create answered ok with no event" in history.check({"a": 5}, **mode).lost


def test_tolerant_mode_fails_when_both_events_of_a_suspend_resume_pair_are_lost() -> None:
    history = History()
    history.script("a", "define", "create")
    history.command("a", "suspend", events=0)
    history.command("a", "resume", events=0)
    history.command("a", "destroy")
    lost = interrupted(history).check({"a": 5}, **TOLERANT).lost
    assert lost == ["a suspend answered ok with no event"]


def test_tolerant_mode_accepts_a_suspend_of_a_paused_domain() -> None:
    history = History()
    history.script("a", "define", "create", "suspend")
    history.command("a", "suspend", events=0)
    history.command("a", "destroy")
    assert interrupted(history).check({"a": 5}, **TOLERANT).problems == []


@MODES
def test_another_domains_reconcile_event_excuses_nothing(mode: dict[str, object]) -> None:
    history = History()
    history.script("a", "define", "create")
    history.command("a", "destroy", events=0)
    history.script("b", "define", "create")
    history.event("b", Lifecycle.STOPPED_DESTROYED, origin="reconcile")
    report = interrupted(history).check({"a": 1, "b": 5}, **mode)
    assert "a destroy answered ok with no event" in report.lost


@MODES
def test_a_reconcile_event_of_the_same_domain_excuses_once(mode: dict[str, object]) -> None:
    history = History()
    history.script("a", "define", "create")
    history.command("a", "destroy", events=0)
    history.event("a", Lifecycle.STOPPED_DESTROYED, origin="reconcile")
    history.command("a", "create")
    assert interrupted(history).check({"a": 1}, **mode).problems == []
    history.command("a", "destroy", events=0)
    report = history.check({"a": 1}, **mode)
    assert "a destroy answered ok with no event" in report.lost


@MODES
def test_an_illegal_step_is_reported(mode: dict[str, object]) -> None:
    history = clean()
    history.event("a", Lifecycle.SUSPENDED_PAUSED, origin="external")
    report = history.check({"a": 5}, **mode)
    assert report.illegal == [
        "a: lifecycle/suspended/paused from shutoff (seq 11): not a step of libvirt's state machine"
    ]


@MODES
def test_codes_other_than_libvirts_are_illegal(mode: dict[str, object]) -> None:
    history = History()
    history.command("a", "define")
    history.event("a", Lifecycle.STARTED_BOOTED, origin="external", codes=(2, 1))
    report = interrupted(history).check({"a": 5}, **mode)
    assert report.illegal[0].endswith("carries codes 2/1, libvirt's are 2/0")


@MODES
def test_a_final_state_other_than_the_agents_or_dockers_is_lost(mode: dict[str, object]) -> None:
    report = clean().check({"a": 1, "c": 5}, docker={"a": "paused", "b": "shutoff"}, **mode)
    assert sorted(report.lost) == [
        "a: events end in shutoff, Docker has paused",
        "a: events end in shutoff, the agent lists 1",
        "b: events end in None, Docker has shutoff",
        "c: listed in state 5 without any event",
    ]
    report = clean().check({"a": 5}, docker={"a": "shutoff", "d": "running"}, **mode)
    assert report.lost == ["d: Docker has it running without any event"]


@MODES
def test_a_container_docker_is_removing_is_a_domain_shut_off_or_gone(
    mode: dict[str, object],
) -> None:
    report = clean().check({"a": 5}, docker={"a": REMOVING, "b": REMOVING}, **mode)
    assert report.lost == []
    report = clean().check({"a": 5}, docker={"a": "shutoff", "d": REMOVING}, **mode)
    assert report.lost == [f"d: Docker has it {REMOVING} without any event"]
    running = History()
    running.script("a", "define", "create")
    report = interrupted(running).check({"a": 1}, docker={"a": REMOVING}, **mode)
    assert report.lost == [f"a: events end in running, Docker has {REMOVING}"]


def crash(detail: Lifecycle | None) -> History:
    history = History()
    history.script("victim", "define", "create")
    if detail is not None:
        history.event("victim", detail, origin="external")
    return interrupted(history)


CRASHED = {"victim": [("lifecycle", "stopped", "crashed")]}


@MODES
def test_the_faults_own_crash_is_verified(mode: dict[str, object]) -> None:
    assert (
        crash(Lifecycle.STOPPED_CRASHED).check({"victim": 5}, external=CRASHED, **mode).problems
        == []
    )
    for other in (Lifecycle.STOPPED_DESTROYED, None):
        state = 1 if other is None else 5
        report = crash(other).check({"victim": state}, external=CRASHED, **mode)
        assert "victim: the fault's lifecycle/stopped/crashed never came (1)" in report.lost


def test_strict_mode_wants_each_domains_effects_in_order() -> None:
    history = History()
    history.script("a", "define", "create")
    history.event("a", Lifecycle.STOPPED_SHUTDOWN, origin="external")
    report = interrupted(history).check({"a": 5})
    assert report.lost == [
        "a: events [('lifecycle', 'defined', 'added'), ('lifecycle', 'started', 'booted'), "
        "('lifecycle', 'stopped', 'shutdown')] for commands [('lifecycle', 'defined', 'added'), "
        "('lifecycle', 'started', 'booted')]"
    ]
    assert interrupted(history).check({"a": 5}, **TOLERANT).problems == []


@MODES
def test_a_command_with_the_wrong_effect_is_illegal(mode: dict[str, object]) -> None:
    history = History()
    history.command("a", "define")
    sent = history.command("a", "create", events=0)
    history.event("a", Lifecycle.STARTED_BOOTED, origin="external")
    history.event("a", Lifecycle.STOPPED_CRASHED, sent.id)
    report = interrupted(history).check({"a": 5}, **mode)
    assert "a create caused lifecycle/stopped/crashed (seq 3)" in report.illegal


@MODES
def test_a_fault_that_interrupted_nothing_proves_nothing(mode: dict[str, object]) -> None:
    history = clean()
    history.run.sent[0].sends = 1
    report = history.check({"a": 5}, **mode)
    assert report.vacuous == [
        "the fault interrupted nothing: no re-send, redelivery, second answer, "
        "reconnection, error, reconcile"
    ]


@MODES
def test_a_second_answer_or_a_reconnection_shows_the_fault_struck(
    mode: dict[str, object],
) -> None:
    """The agent lost the broker: a command it had not acked came again and was answered
    again, or its log says it reconnected; either shows the fault reached it."""
    history = clean()
    history.run.sent[0].sends = 1
    assert history.check({"a": 5}, reconnects=1, **mode).vacuous == []
    first = history.run.sent[0]
    first.replies.append(first.reply)
    report = history.check({"a": 5}, **mode)
    assert (report.reanswered, report.vacuous) == (1, [])


@MODES
def test_a_shutdown_whose_grace_period_ran_out_may_destroy(mode: dict[str, object]) -> None:
    """A shutdown that had to kill is reported stopped/destroyed (DESIGN's sequences):
    accepted for a shutdown, in its place; a destroy reported as a shutdown is not."""
    history = History()
    history.script("a", "define", "create")
    history.command("a", "shutdown", events=0)
    history.event("a", Lifecycle.STOPPED_DESTROYED, history.run.sent[-1].id)
    assert interrupted(history).check({"a": 5}, **mode).problems == []

    wrong = History()
    wrong.script("a", "define", "create")
    wrong.command("a", "destroy", events=0)
    wrong.event("a", Lifecycle.STOPPED_SHUTDOWN, wrong.run.sent[-1].id)
    assert interrupted(wrong).check({"a": 5}, **mode).problems != []


def test_an_undefine_of_a_domain_already_transient_is_a_right_refusal() -> None:
    history = History()
    history.script("a", "define", "create", "undefine")
    history.command("a", "undefine", error="OPERATION_INVALID")
    report = history.check({"a": 1}, **TOLERANT)
    assert report.refused == 1
    assert report.problems == []
    persistent = History()
    persistent.script("a", "define", "create")
    persistent.command("a", "undefine", error="OPERATION_INVALID")
    assert persistent.check({"a": 1}, **TOLERANT).refused == 0
