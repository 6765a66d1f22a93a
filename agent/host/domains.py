"""The agent's view of its domains: what libvirt would keep in its domain list."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from uuid import UUID

from agent.errors import VirtError, invalid, no_domain
from agent.host.translate import Evidence
from schemas.codes import DomainState, ErrorCode, ShutoffReason, reason_of
from schemas.commands import Command, CreateXml, Define, DomainCommand, ListFlag, Target
from schemas.domain import DomainRecord, DomainSpec
from schemas.events import DomainRef

ACTIVE_STATES = frozenset(
    {DomainState.RUNNING, DomainState.BLOCKED, DomainState.PAUSED, DomainState.SHUTDOWN}
)


@dataclass
class DomainObj:
    """One domain as the agent keeps it, libvirt's virDomainObj: its definition, the one
    pending for its next start, and its state. (The client's handle is ``Domain``.)"""

    uuid: UUID
    name: str
    spec: DomainSpec
    persistent: bool
    autostart: bool
    handle: str | None = None
    """The driver's handle on the domain's container; None until it exists."""
    state: DomainState = DomainState.SHUTOFF
    reason: int = ShutoffReason.UNKNOWN
    pid: int = 0
    pending: DomainSpec | None = None
    """A definition given while running, applied at the next start."""
    evidence: Evidence = field(default_factory=Evidence)
    snapshots: int = 0
    """How many snapshots the domain has."""
    current_snapshot: str | None = None
    """The snapshot last taken or reverted to, libvirt's current snapshot."""
    applied_ns: int = 0
    """Docker's time of the last event of the domain's container the agent applied: a
    replay of Docker's events skips those up to it."""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def next_definition(self) -> DomainSpec:
        """The definition its next start applies: libvirt's persistent one."""
        return self.pending or self.spec

    @property
    def definition(self) -> DomainSpec:
        """The definition libvirt shows as the domain's own: the one it runs with while
        active; once shut off, the one its next start applies (libvirt drops a stopped
        domain's live definition)."""
        return self.spec if self.active else self.next_definition

    def copy(self) -> DomainObj:
        """A copy to put the domain back as it was with ``restore``. Its definitions are
        frozen models, shared; its evidence, the one part changed in place, is copied
        (a deep copy of the definitions was a quarter of applying a Docker event, and
        ``dataclasses.replace`` three times this copy of the fields)."""
        saved = object.__new__(DomainObj)
        saved.__dict__.update(self.__dict__)
        saved.evidence = self.evidence.copy()
        return saved

    def restore(self, saved: DomainObj) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(saved, item.name))

    @property
    def id(self) -> int:
        return self.pid if self.active and self.pid > 0 else -1

    def record(self) -> DomainRecord:
        """Built as its validators would build it (the state a DomainState, the reason
        its state's reason member), without validating what the agent holds: a
        listing builds one per domain."""
        state = DomainState(int(self.state))
        return DomainRecord.model_construct(
            name=self.name,
            uuid=self.uuid,
            id=self.id,
            state=state,
            reason=reason_of(state, int(self.reason)),
            persistent=self.persistent,
            autostart=self.autostart,
        )

    def ref(self) -> DomainRef:
        return DomainRef(name=self.name, uuid=self.uuid, id=self.id)

    def matches(self, flags: list[ListFlag]) -> bool:
        """libvirt's list filter: any flag within a group, every group that has one."""
        if not flags:
            return True
        facts: dict[str, bool] = {
            "active": self.active,
            "inactive": not self.active,
            "persistent": self.persistent,
            "transient": not self.persistent,
            "running": self.state == DomainState.RUNNING,
            "paused": self.state == DomainState.PAUSED,
            "shutoff": self.state == DomainState.SHUTOFF,
            "autostart": self.autostart,
            "no_autostart": not self.autostart,
            "has_snapshot": self.snapshots > 0,
            "no_snapshot": self.snapshots == 0,
        }
        for group in _FLAG_GROUPS:
            asked = [flag for flag in flags if flag in group]
            if asked and not any(facts[flag] for flag in asked):
                return False
        return True


_FLAG_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"active", "inactive"}),
    frozenset({"persistent", "transient"}),
    frozenset({"running", "paused", "shutoff"}),
    frozenset({"autostart", "no_autostart"}),
    frozenset({"has_snapshot", "no_snapshot"}),
)


def affected(domain: DomainObj, live: bool, config: bool) -> tuple[bool, bool]:
    """libvirt's VIR_DOMAIN_AFFECT_* rules: neither flag means the running definition of
    an active domain and the persistent one of an inactive one."""
    if not live and not config:
        live, config = domain.active, not domain.active
    if live and not domain.active:
        raise invalid("domain is not running")
    if config and not domain.persistent:
        raise invalid("transient domains do not have any persistent config")
    return live, config


def read_live(domain: DomainObj, live: bool, config: bool) -> bool:
    """For a call that reads one definition: True for the running one. Both flags are
    INVALID_ARG, as libvirt's getters answer."""
    if live and config:
        raise VirtError(
            ErrorCode.INVALID_ARG,
            "Flags 'VIR_DOMAIN_AFFECT_LIVE' and 'VIR_DOMAIN_AFFECT_CONFIG' are mutually exclusive",
        )
    return affected(domain, live, config)[0]


class DomainTable:
    """Domains by UUID and by name; the agent's single source of what exists."""

    def __init__(self) -> None:
        self._by_uuid: dict[UUID, DomainObj] = {}
        self._by_name: dict[str, DomainObj] = {}

    def __iter__(self) -> Iterator[DomainObj]:
        return iter(list(self._by_uuid.values()))

    def __len__(self) -> int:
        return len(self._by_uuid)

    def add(self, domain: DomainObj) -> None:
        self._by_uuid[domain.uuid] = domain
        self._by_name[domain.name] = domain

    def remove(self, domain: DomainObj) -> None:
        self._by_uuid.pop(domain.uuid, None)
        if self._by_name.get(domain.name) is domain:
            del self._by_name[domain.name]

    def rename(self, domain: DomainObj, new_name: str) -> None:
        if self._by_name.get(domain.name) is domain:
            del self._by_name[domain.name]
        domain.name = new_name
        self._by_name[new_name] = domain

    def by_uuid(self, uuid: UUID) -> DomainObj | None:
        return self._by_uuid.get(uuid)

    def by_name(self, name: str) -> DomainObj | None:
        return self._by_name.get(name)

    def find(self, target: Target) -> DomainObj | None:
        if target.name is not None:
            return self.by_name(target.name)
        if target.uuid is not None:
            return self.by_uuid(target.uuid)
        return next((d for d in self._by_uuid.values() if d.id == target.id), None)

    def subject(self, command: Command) -> DomainObj | None:
        """The existing domain a command is about, if any: the one a define or
        create_xml names, or the one a domain command targets. Every part of the agent
        that asks "which domain" asks here."""
        if isinstance(command, Define | CreateXml):
            return self.by_name(command.args.spec.name)
        if isinstance(command, DomainCommand):
            return self.find(command.target)
        return None

    def lane(self, command: Command) -> str | None:
        """The ordering lane of a command: commands about one domain share one, keyed
        by the domain's name (a define names the domain it makes); host commands have
        none."""
        if isinstance(command, Define | CreateXml):
            return f"name:{command.args.spec.name}"
        if isinstance(command, DomainCommand):
            domain = self.find(command.target)
            name = domain.name if domain else command.target.name
            return f"name:{name}" if name else f"target:{command.target}"
        return None

    def get(self, target: Target) -> DomainObj:
        """The targeted domain, or NO_DOMAIN."""
        domain = self.find(target)
        if domain is None:
            raise no_domain(str(target))
        return domain
