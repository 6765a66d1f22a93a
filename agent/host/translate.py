"""Docker's container events → libvirt domain events, as a table.

A Docker event alone does not say which libvirt transition happened: a ``die`` is a
graceful shutdown, a destroy, a crash or a failure depending on the signals Docker sent
before it, and a ``create`` is a new definition, an update or nothing at all depending on
what the agent was doing. ``Evidence`` gathers what came before; ``Mode`` says what the
agent is doing to the domain; ``TABLE`` and ``STOP_CAUSES`` say the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum

from schemas.codes import Lifecycle


class Mode(StrEnum):
    """What the agent is doing to a domain while Docker reports its steps."""

    PLAIN = "plain"
    """Nothing special: every step is reported as it is."""
    REBOOT = "reboot"
    """``domain.reboot``: Docker's stop and start are one libvirt reboot."""
    REDEFINE = "redefine"
    """A definition update recreates the container: one defined/updated."""
    REFRESH = "refresh"
    """A pending definition is applied before a start: nothing to report."""
    DESTROY = "destroy"
    """``domain.destroy``: the domain stops destroyed even if it died by itself first,
    as libvirt reports a domain that dies while being destroyed."""
    SHUTDOWN = "shutdown"
    """``domain.shutdown``: every step reported as it is; a stop found only by a re-list
    (its signal lost) is the shutdown's."""
    RESTART = "restart"
    """The agent restarts a crashed ``on_crash: restart`` domain: its start is a reboot."""
    REVERT = "revert"
    """``domain.snapshot_revert`` rebuilds the container from the snapshot's image beside
    the old one: every step is libvirt's "from snapshot"."""
    SOFT_REBOOT = "soft_reboot"
    """``domain.reboot`` without escalation: the domain stops by itself after a signal
    and the agent starts it; the stop is not reported, the start is the reboot."""


class Special(Enum):
    STOPPED = "stopped"
    """A stopped event whose detail ``STOP_CAUSES`` decides."""
    REBOOT = "reboot"
    TUNABLE = "tunable"


Transition = Lifecycle | Special


@dataclass(frozen=True)
class Row:
    """Docker ``action`` in the given situation emits ``emits``; None matches anything."""

    action: str
    emits: tuple[Transition, ...]
    mode: Mode | None = None
    persistent: bool | None = None
    stopping: bool | None = None

    def matches(self, action: str, mode: Mode, persistent: bool, stopping: bool) -> bool:
        return (
            self.action == action
            and self.mode in (None, mode)
            and self.persistent in (None, persistent)
            and self.stopping in (None, stopping)
        )


L = Lifecycle
TABLE: tuple[Row, ...] = (
    # A definition update builds the new container beside the old one, removes the old
    # and renames the new into place: the rename is the moment the update takes effect.
    Row("create", (), mode=Mode.REDEFINE),
    Row("destroy", (), mode=Mode.REDEFINE),
    Row("rename", (L.DEFINED_UPDATED,), mode=Mode.REDEFINE),
    Row("create", (), mode=Mode.REVERT),
    Row("destroy", (), mode=Mode.REVERT),
    Row("die", (L.STOPPED_FROM_SNAPSHOT,), mode=Mode.REVERT),
    Row("rename", (L.DEFINED_FROM_SNAPSHOT,), mode=Mode.REVERT),
    Row("start", (L.STARTED_FROM_SNAPSHOT,), mode=Mode.REVERT),
    Row("create", (), mode=Mode.REFRESH),
    Row("destroy", (), mode=Mode.REFRESH),
    Row("rename", (), mode=Mode.REFRESH),
    Row("create", (L.DEFINED_ADDED,), persistent=True),
    Row("create", (), persistent=False),
    Row("start", (), mode=Mode.REBOOT),
    Row("start", (Special.REBOOT,), mode=Mode.RESTART),
    Row("start", (Special.REBOOT,), mode=Mode.SOFT_REBOOT),
    Row("start", (L.STARTED_BOOTED,)),
    Row("pause", (L.SUSPENDED_PAUSED,)),
    # Docker unpauses a paused container on its way down: not a resume.
    Row("unpause", (), stopping=True),
    Row("unpause", (L.RESUMED_UNPAUSED,)),
    Row("die", (), mode=Mode.REBOOT),
    Row("die", (), mode=Mode.SOFT_REBOOT),
    Row("die", (L.STOPPED_DESTROYED,), mode=Mode.DESTROY),
    Row("die", (Special.STOPPED,)),
    Row("restart", (Special.REBOOT,)),
    Row("destroy", (L.UNDEFINED_REMOVED,), persistent=True),
    Row("destroy", (), persistent=False),
    Row("rename", (L.UNDEFINED_RENAMED, L.DEFINED_RENAMED), persistent=True),
    Row("rename", (), persistent=False),
    Row("update", (Special.TUNABLE,)),
)
"""First matching row wins; an action with no row (kill, stop, oom, exec…) emits nothing."""

_ROWS_OF: dict[str, tuple[Row, ...]] = {
    action: tuple(row for row in TABLE if row.action == action)
    for action in dict.fromkeys(row.action for row in TABLE)
}
"""TABLE's rows by action, in TABLE's order: an event is matched against its own."""

SIGKILL = 9


class StopCause(StrEnum):
    OOM = "oom"
    KILLED = "killed"
    SIGNALLED = "signalled"
    CLEAN_EXIT = "clean_exit"
    ERROR_EXIT = "error_exit"
    SIGNAL_EXIT = "signal_exit"


STOP_CAUSES: dict[StopCause, Lifecycle] = {
    StopCause.OOM: L.STOPPED_CRASHED,
    StopCause.KILLED: L.STOPPED_DESTROYED,
    StopCause.SIGNALLED: L.STOPPED_SHUTDOWN,
    StopCause.CLEAN_EXIT: L.STOPPED_SHUTDOWN,
    StopCause.ERROR_EXIT: L.STOPPED_FAILED,
    StopCause.SIGNAL_EXIT: L.STOPPED_CRASHED,
}


@dataclass
class Evidence:
    """What Docker reported about a domain since it last started."""

    signals: list[int] = field(default_factory=list)
    oom: bool = False
    stopping: bool = False
    """The step before this one was a signal: Docker is taking the domain down."""

    def copy(self) -> Evidence:
        return Evidence(list(self.signals), self.oom, self.stopping)

    def stop_cause(self, exit_code: int | None) -> StopCause:
        if self.oom:
            return StopCause.OOM
        if SIGKILL in self.signals:
            return StopCause.KILLED
        if self.signals:
            return StopCause.SIGNALLED
        if exit_code is None or exit_code == 0:
            return StopCause.CLEAN_EXIT
        if exit_code <= 128:
            return StopCause.ERROR_EXIT
        return StopCause.SIGNAL_EXIT

    def observe(self, action: str, signal: int | None) -> None:
        """Take in a Docker action; call before translating it."""
        signalled = action == "kill" and signal is not None
        self.stopping = signalled or (action == "unpause" and self.stopping)
        if action == "start":
            self.signals.clear()
            self.oom = False
        elif signalled and signal is not None:
            self.signals.append(signal)
        elif action == "oom":
            self.oom = True


def translate(
    action: str,
    *,
    mode: Mode,
    persistent: bool,
    evidence: Evidence,
    exit_code: int | None = None,
) -> tuple[Transition, ...]:
    """The libvirt transitions one Docker action stands for, with ``STOPPED`` resolved."""
    for row in _ROWS_OF.get(action, ()):
        if row.matches(action, mode, persistent, evidence.stopping):
            return tuple(
                STOP_CAUSES[evidence.stop_cause(exit_code)] if emit is Special.STOPPED else emit
                for emit in row.emits
            )
    return ()


def stop_cause_of_exit(
    exit_code: int, oom_killed: bool, evidence: Evidence | None = None
) -> Lifecycle:
    """The stopped detail for a stop seen only as a final state (reconciliation), read
    with the signals Docker reported before its events were lost."""
    signals = list(evidence.signals) if evidence else []
    return STOP_CAUSES[Evidence(signals, oom=oom_killed).stop_cause(exit_code)]
