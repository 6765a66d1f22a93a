"""The history checker shared by the fault suite and the soak.

A history is what a run leaves behind: every command sent (its op, domain, how often it
was sent and every reply that came for it) and every domain event the broker kept. The
checker proves, or reports why not:

- every command was answered, and every reply for one id is the same reply;
- a command answered ``ok`` caused exactly its effect once (or, where libvirt succeeds
  without an effect, the domain was already where the op leads); a command answered
  with an error caused nothing, and its code is one the run tolerates;
- each domain's events are a legal path of libvirt's state machine, with libvirt's codes;
- ``seq`` has no gap and one ``seq`` never carries two different events;
- the events end where the agent (and Docker, when given) says each domain is;
- the events a fault itself causes (``external``) happened, exactly as named;
- the fault interrupted work: something was re-sent, redelivered, refused or reconciled.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.codes import Lifecycle
from schemas.events import DomainEvent, LifecycleEvent

Effect = tuple[str, ...]

EFFECTS: dict[str, Effect] = {
    "define": ("lifecycle", "defined", "added"),
    "create": ("lifecycle", "started", "booted"),
    "suspend": ("lifecycle", "suspended", "paused"),
    "resume": ("lifecycle", "resumed", "unpaused"),
    "destroy": ("lifecycle", "stopped", "destroyed"),
    "shutdown": ("lifecycle", "stopped", "shutdown"),
    "reboot": ("reboot",),
    "undefine": ("lifecycle", "undefined", "removed"),
}
"""The one event each op causes when it succeeds."""
ALSO: dict[str, frozenset[Effect]] = {
    "shutdown": frozenset({("lifecycle", "stopped", "destroyed")}),
}
"""Other effects an op may have: a shutdown whose grace period ran out kills."""
IDEMPOTENT: dict[str, str] = {"suspend": "paused", "resume": "running"}
"""Ops libvirt answers ``ok`` without an effect when the domain is already where they
lead, with that state."""
INACTIVE = frozenset({"shutoff", None})
REFUSED_IN: dict[str, frozenset[str | None]] = {
    "create": frozenset({"running", "paused"}),
    **dict.fromkeys(("suspend", "resume", "destroy", "shutdown", "reboot"), INACTIVE),
}
"""The states in which libvirt refuses an op with OPERATION_INVALID: a start of an active
domain, any other lifecycle op of an inactive one."""
TOLERATED = frozenset({"OPERATION_FAILED", "OPERATION_INVALID", "NO_DOMAIN"})
"""Errors a command may meet while Docker is down, or once a fault has moved a domain
behind its orchestrator's back."""
STATES = {1: "running", 3: "paused", 5: "shutoff"}
"""libvirt's state numbers as the agent lists them."""
REMOVING = "removing"
"""Docker's state for a container it is removing, or failed to remove and marked dead
(its own overlay mount still busy after an engine restart): not running, and gone once
Docker manages. It matches a domain shut off (an undefine Docker refused) or gone (a
stopped transient domain, an undefine whose removal Docker left half done)."""


@dataclass
class Sent:
    """One command as its sender saw it. ``replies`` is every reply that came for its id,
    including those after the first (the client keeps appending to the same list)."""

    domain: str
    op: str
    reply: dict[str, Any]
    replies: list[dict[str, Any]] = field(default_factory=list)
    sends: int = 1

    def __post_init__(self) -> None:
        if self.reply and not self.replies:
            self.replies.append(self.reply)

    @property
    def answer(self) -> dict[str, Any]:
        """The reply the sender got or, when it stopped waiting first (``reply`` empty),
        the first that came after."""
        return self.reply or (self.replies[0] if self.replies else {})

    @property
    def id(self) -> str:
        return str(self.answer.get("id", ""))


@dataclass
class Run:
    sent: list[Sent] = field(default_factory=list)
    answered: int = 0

    @property
    def total(self) -> int:
        return len(self.sent)


@dataclass
class Report:
    scenario: str
    commands: int
    events: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    illegal: list[str] = field(default_factory=list)
    vacuous: list[str] = field(default_factory=list)
    redelivered: int = 0
    resent: int = 0
    reanswered: int = 0
    """Replies after a command's first: the agent answered it again when the broker
    delivered it again (its connection lost before the ack)."""
    reconnects: int = 0
    """Times the agent lost its broker connection and connected again."""
    errors: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    """OPERATION_INVALID replies to an op the domain's own events show it was in a state
    to refuse (a fault had stopped it behind its orchestrator's back): right answers,
    not counted among the failures a run may have."""
    reconciled: int = 0

    @property
    def problems(self) -> list[str]:
        return [*self.lost, *self.duplicated, *self.illegal, *self.vacuous]

    def line(self) -> str:
        errors = ", ".join(f"{code} {n}" for code, n in sorted(self.errors.items())) or "none"
        if self.refused:
            errors += f" ({self.refused} refused in a state that forbids the op)"
        return (
            f"{self.scenario}: commands {self.commands}, events {self.events}, "
            f"re-sent {self.resent}, redelivered {self.redelivered}, "
            f"answered again {self.reanswered}, reconnects {self.reconnects}, "
            f"reconciled {self.reconciled}, errors: {errors}\n"
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
            f"illegal {len(self.illegal)}"
        )


def effect(event: DomainEvent) -> Effect:
    if isinstance(event, LifecycleEvent):
        return ("lifecycle", event.event, event.detail)
    return (event.kind,)


def _codes_wrong(event: DomainEvent) -> str | None:
    if not isinstance(event, LifecycleEvent):
        return None
    try:
        known = Lifecycle.of(event.event, event.detail)
    except ValueError:
        return f"no libvirt event {event.event}/{event.detail}"
    if (event.event_code, event.detail_code) != (known.event_code, known.detail_code):
        return (
            f"{event.event}/{event.detail} carries codes {event.event_code}/"
            f"{event.detail_code}, libvirt's are {known.event_code}/{known.detail_code}"
        )
    return None


@dataclass
class Step:
    event: DomainEvent
    before: str | None
    after: str | None
    persistent: bool = True
    """Whether the domain is persistent after the step (an undefine of an active domain
    leaves it transient until it stops)."""


def walk(events: list[DomainEvent]) -> tuple[list[str], dict[str, list[Step]]]:
    """Each domain's events (in ``seq`` order) as libvirt's state machine, transient
    domains gone once stopped: the illegal steps, and each domain's legal steps by name.
    A domain is known by its UUID; a name may be reused by a new domain once the old
    one is gone."""
    states: dict[uuid.UUID, tuple[str | None, bool]] = {}
    steps: dict[str, list[Step]] = defaultdict(list)
    wrong: list[str] = []
    for event in events:
        name = event.domain.name
        state, persistent = states.get(event.domain.uuid, (None, True))
        where = f"{name}: {'/'.join(effect(event))} from {state} (seq {event.seq})"
        codes = _codes_wrong(event)
        if codes is not None:
            wrong.append(f"{where}: {codes}")
            continue
        step = effect(event)
        after: tuple[str | None, bool] | None = None
        if step == EFFECTS["define"] and state is None:
            after = ("shutoff", True)
        elif step == ("lifecycle", "defined", "updated") and state is not None:
            after = (state, True)
        elif step == EFFECTS["create"] and state == "shutoff":
            after = ("running", persistent)
        elif step == EFFECTS["suspend"] and state == "running":
            after = ("paused", persistent)
        elif (step, state) in ((EFFECTS["resume"], "paused"), (EFFECTS["reboot"], "running")):
            after = ("running", persistent)
        elif step[:2] == ("lifecycle", "stopped") and state in ("running", "paused"):
            after = ("shutoff", True) if persistent else (None, True)
        elif step == EFFECTS["undefine"] and state == "shutoff":
            after = (None, True)
        elif step == EFFECTS["undefine"] and state in ("running", "paused") and persistent:
            after = (state, False)
        if after is None:
            wrong.append(f"{where}: not a step of libvirt's state machine")
            continue
        states[event.domain.uuid] = after
        steps[name].append(Step(event, state, *after))
    return wrong, steps


def final_states(steps: Mapping[str, list[Step]]) -> dict[str, str | None]:
    return {name: path[-1].after for name, path in steps.items() if path}


def check(
    scenario: str,
    run: Run,
    events: list[DomainEvent],
    listed: Mapping[str, int],
    *,
    external: Mapping[str, list[Effect]] | None = None,
    tolerated: frozenset[str] = frozenset(),
    max_tolerated: float = 0.25,
    strict: bool = True,
    docker: Mapping[str, str | None] | None = None,
    must_interrupt: bool = True,
    reconnects: int = 0,
) -> Report:
    """Check one run's history; see the module's docstring for what is proved.

    ``listed`` is the agent's own list at the end (name to libvirt state number),
    ``docker`` the engine's (name to running/paused/shutoff). ``external`` names, by
    domain, the events the fault itself causes (with no command behind them). Errors
    whose code is in ``tolerated`` are accepted, but at most ``max_tolerated`` of all
    commands, and never with an effect. ``reconnects`` is how many times the agent's log
    says it lost the broker. ``strict`` also requires each domain's events to
    be exactly its commands' effects (plus ``external``), in order.
    """
    report = Report(scenario, run.total, 0)
    by_seq: dict[int, DomainEvent] = {}
    for event in events:
        known = by_seq.get(event.seq)
        if known is None:
            by_seq[event.seq] = event
        elif known == event:
            report.redelivered += 1
        else:
            report.duplicated.append(f"seq {event.seq} carries two different events")
    seqs = sorted(by_seq)
    if seqs:
        report.lost += [f"seq {n} missing" for n in range(seqs[0], seqs[-1] + 1) if n not in by_seq]
    unique = [by_seq[n] for n in seqs]
    report.events = len(unique)
    report.reconciled = sum(e.origin == "reconcile" for e in unique)

    wrong, steps = walk(unique)
    report.illegal += wrong
    caused: dict[str, list[DomainEvent]] = defaultdict(list)
    for event in unique:
        if event.cause:
            caused[event.cause].append(event)
    _replies(run, report, tolerated)
    _effects(run, report, caused, steps)
    _failures(run, report, tolerated, max_tolerated)
    _external(report, steps, external or {})
    _final(report, steps, listed, docker)
    if strict:
        _sequences(run, report, unique, external or {})
    report.reconnects = reconnects
    interrupted = (
        report.resent
        + report.redelivered
        + report.reanswered
        + report.reconnects
        + sum(report.errors.values())
    )
    if must_interrupt and interrupted + report.reconciled == 0:
        report.vacuous.append(
            "the fault interrupted nothing: no re-send, redelivery, second answer, "
            "reconnection, error, reconcile"
        )
    return report


def _replies(run: Run, report: Report, tolerated: frozenset[str]) -> None:
    for sent in run.sent:
        report.resent += max(sent.sends - 1, 0)
        report.reanswered += max(len(sent.replies) - 1, 0)
        if not sent.replies:
            report.lost.append(f"{sent.domain} {sent.op}: no reply")
            continue
        kinds = {json.dumps(reply, sort_keys=True) for reply in sent.replies}
        if len(kinds) > 1:
            report.duplicated.append(
                f"{sent.domain} {sent.op} {sent.id}: {len(kinds)} different replies"
            )
        error = sent.answer.get("error")
        if error:
            report.errors[error["code"]] += 1
            if error["code"] not in tolerated:
                report.lost.append(f"{sent.domain} {sent.op} failed: {error['message']}")


def _failures(run: Run, report: Report, tolerated: frozenset[str], max_tolerated: float) -> None:
    tolerated_errors = sum(n for code, n in report.errors.items() if code in tolerated)
    tolerated_errors -= report.refused
    if tolerated_errors and tolerated_errors > math.floor(max_tolerated * run.total):
        report.lost.append(
            f"{tolerated_errors} of {run.total} commands failed (at most {max_tolerated:.0%} may)"
        )


def _effects(
    run: Run, report: Report, caused: dict[str, list[DomainEvent]], steps: dict[str, list[Step]]
) -> None:
    claimed: set[int] = set()
    by_domain: dict[str, list[Sent]] = defaultdict(list)
    for sent in run.sent:
        by_domain[sent.domain].append(sent)
    for name, sents in by_domain.items():
        path = steps.get(name, [])
        marks = [[e.seq for e in caused.get(s.id, [])] for s in sents]
        for index, sent in enumerate(sents):
            mine = caused.get(sent.id, [])
            if len(mine) > 1:
                report.duplicated.append(f"command {sent.id} caused {len(mine)} events")
            if not sent.replies:
                continue
            if not sent.answer.get("ok"):
                code = sent.answer["error"]["code"]
                if mine:
                    report.illegal.append(
                        f"{name} {sent.op} answered {code} "
                        f"but caused {'/'.join(effect(mine[0]))} (seq {mine[0].seq})"
                    )
                elif code == "OPERATION_INVALID":
                    _, seen = _between(path, marks, index)
                    report.refused += _forbids(sent.op, seen)
                continue
            if sent.op not in EFFECTS:
                continue
            wanted = {EFFECTS[sent.op], *ALSO.get(sent.op, ())}
            if mine:
                if effect(mine[0]) not in wanted:
                    report.illegal.append(
                        f"{name} {sent.op} caused {'/'.join(effect(mine[0]))} (seq {mine[0].seq})"
                    )
                continue
            window, seen = _between(path, marks, index)
            if sent.op in IDEMPOTENT and IDEMPOTENT[sent.op] in {state for state, _ in seen}:
                continue
            excuse = next(
                (
                    st
                    for st in window
                    if st.event.cause is None
                    and st.event.seq not in claimed
                    and effect(st.event) in wanted
                ),
                None,
            )
            if excuse is not None:
                claimed.add(excuse.event.seq)
                continue
            report.lost.append(f"{name} {sent.op} answered ok with no event")


Held = tuple[str | None, bool]
"""A domain's state and whether it was persistent."""


def _between(path: list[Step], marks: list[list[int]], index: int) -> tuple[list[Step], set[Held]]:
    """The steps of a domain's ``path`` between command ``index``'s neighbours (by the
    ``seq`` of the events each caused), and every state the domain was in meanwhile."""
    low = max((s for m in marks[:index] for s in m), default=0)
    high = min((s for m in marks[index + 1 :] for s in m), default=math.inf)
    window = [st for st in path if low < st.event.seq < high]
    at_low = [st for st in path if st.event.seq <= low]
    before: Held = (at_low[-1].after, at_low[-1].persistent) if at_low else (None, True)
    return window, {(st.after, st.persistent) for st in window} | {before}


def _forbids(op: str, seen: set[Held]) -> bool:
    """Whether the domain was, at some point, where libvirt refuses ``op`` with
    OPERATION_INVALID: in one of ``REFUSED_IN``'s states, or, for an undefine, active and
    transient ("cannot undefine transient domain")."""
    return any(
        state in REFUSED_IN.get(op, frozenset())
        or (op == "undefine" and state is not None and not persistent)
        for state, persistent in seen
    )


def _external(
    report: Report, steps: dict[str, list[Step]], external: Mapping[str, list[Effect]]
) -> None:
    for name, wanted in external.items():
        uncaused = Counter(effect(st.event) for st in steps.get(name, []) if st.event.cause is None)
        missing = Counter(wanted) - uncaused
        for step, n in missing.items():
            report.lost.append(f"{name}: the fault's {'/'.join(step)} never came ({n})")


def _final(
    report: Report,
    steps: dict[str, list[Step]],
    listed: Mapping[str, int],
    docker: Mapping[str, str | None] | None,
) -> None:
    final = final_states(steps)
    for name, state in final.items():
        if STATES.get(listed.get(name, -1)) != state:
            report.lost.append(f"{name}: events end in {state}, the agent lists {listed.get(name)}")
        if docker is not None and not _as_docker_has_it(docker.get(name), state):
            report.lost.append(f"{name}: events end in {state}, Docker has {docker.get(name)}")
    for name, number in listed.items():
        if name not in final:
            report.lost.append(f"{name}: listed in state {number} without any event")
    for name, state in (docker or {}).items():
        if name not in final:
            report.lost.append(f"{name}: Docker has it {state} without any event")


def _as_docker_has_it(docker_state: str | None, state: str | None) -> bool:
    return docker_state == state or (docker_state == REMOVING and state in (None, "shutoff"))


def _sequences(
    run: Run, report: Report, unique: list[DomainEvent], external: Mapping[str, list[Effect]]
) -> None:
    for name in sorted({s.domain for s in run.sent}):
        ops = [s.op for s in run.sent if s.domain == name and s.op in EFFECTS]
        expected = [EFFECTS[op] for op in ops]
        mine = [e for e in unique if e.domain.name == name]
        remaining = Counter(external.get(name, []))
        kept: list[Effect] = []
        for event in mine:
            if event.cause is None and remaining[effect(event)] > 0:
                remaining[effect(event)] -= 1
            else:
                kept.append(effect(event))
        allowed = [{EFFECTS[op], *ALSO.get(op, ())} for op in ops]
        matched = len(kept) == len(allowed) and all(map(set.__contains__, allowed, kept))
        if not matched:
            observed = [effect(e) for e in mine]
            report.lost.append(f"{name}: events {observed} for commands {expected}")
