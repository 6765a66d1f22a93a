"""One method per op: libvirt's rules about domains, carried out through the driver.

Every op that changes a domain through Docker opens an expectation with the monitor and
returns only once the monitor has seen Docker report the change, so its reply describes
the domain after the events it caused, and those events carry its command id.

A reply may go out at Docker's report while Docker's call is still finishing; the next
command on that domain starts only once that call has ended, so a correctly ordered
sequence of commands never races Docker (libvirt's per-domain job lock).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from agent import __version__
from agent.errors import VirtError, invalid
from agent.host.credentials import RegistryCredentials
from agent.host.domains import DomainObj, DomainTable, affected
from agent.host.driver import (
    CREATED_LABEL,
    SNAPSHOT_LABEL,
    UUID_LABEL,
    Driver,
    EngineFacts,
)
from agent.host.monitor import STOPPED, Expectation, Monitor
from agent.host.mounts import MountGuard
from agent.host.node import host_facts
from agent.host.policy import Policy
from agent.host.pulls import PullReporter
from agent.host.store import StoreUnwritable
from agent.host.translate import Mode, Special, Transition
from schemas.codes import DomainState, ErrorCode, Lifecycle
from schemas.commands import (
    Command,
    CommandBase,
    Create,
    CreateXml,
    Define,
    Destroy,
    DomainCommand,
    GetHostInfo,
    GetInfo,
    GetState,
    GetXmlDesc,
    ListDomains,
    Login,
    Logout,
    Lookup,
    Ping,
    Reboot,
    Rename,
    Resume,
    SetAutostart,
    SetMemory,
    SetTuning,
    SetVcpus,
    Shutdown,
    Suspend,
    Undefine,
)
from schemas.domain import TUNABLES, DomainRecord, DomainSpec
from schemas.domxml import domain_xml
from schemas.replies import (
    DomainCounts,
    DomainInfo,
    DomainList,
    DomainStateInfo,
    DomainXml,
    Done,
    HostInfo,
    Pong,
    Result,
)
from schemas.xmldoc import XmlError

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[object]]

EVENT_WAIT_S = 10.0
"""How long an op waits for Docker's report of what it did, beyond its own duration."""
ORPHAN_WAIT_S = 20.0
"""How long a retried command waits for Docker to finish its first attempt's work."""
JOB_WAIT_S = 30.0
"""How long a command waits for Docker to finish the previous call on its domain, as
libvirt waits for a domain's job lock."""
CATCH_UP_S = 5.0
"""How long a refusal waits to bring its domain in line with Docker (``_caught_up``)."""


Handler = Callable[["Operations", Any], "Awaitable[Result] | Result"]
HANDLERS: dict[type[CommandBase], Handler] = {}
"""The handler of each command model: ``Operations.run`` dispatches on the model's type."""
H = TypeVar("H", bound=Callable[..., Any])


def handles(model: type[CommandBase]) -> Callable[[H], H]:
    """Register the decorated method as the handler of ``model``'s commands."""

    def register(handler: H) -> H:
        if model in HANDLERS:
            raise RuntimeError(f"{model.__name__} has two handlers")
        HANDLERS[model] = handler
        return handler

    return register


class DefinitionClash(VirtError):
    """A definition the host's domains refuse because another domain holds its name or
    its UUID (OPERATION_FAILED), or, to ``create_xml``, because the same domain is
    running (OPERATION_INVALID) or defined and shut off (OPERATION_FAILED, where libvirt
    would start it): libvirt's domain list refuses them with these codes and words. A
    retried command that meets its own earlier effect is told apart by this class, and
    no refusal of it asks Docker to catch up."""


class Operations:
    def __init__(
        self,
        host: str,
        groups: list[str],
        domains: DomainTable,
        driver: Driver,
        monitor: Monitor,
        credentials: RegistryCredentials,
        engine: EngineFacts,
        heartbeat_s: float = 10.0,
        gone: Callable[[str | None, UUID | None], DomainRecord | None] = lambda *_: None,
        intent_reached: Callable[[str], bool] = lambda _: False,
        policy: Policy | None = None,
    ) -> None:
        self._policy = policy or Policy()
        self._mounts = MountGuard(self._policy, domains)
        self._restarts = monitor.restarts
        self._restarts.bind(self._restart_after_crash)
        self._intent_reached = intent_reached
        self._gone = gone
        self.host = host
        self.heartbeat_s = heartbeat_s
        self.groups = groups
        self._domains = domains
        self._driver = driver
        self._monitor = monitor
        self._credentials = credentials
        self._engine = engine
        self._finishing: dict[UUID, asyncio.Future[object]] = {}
        self._rebooting: dict[UUID, asyncio.Task[None]] = {}
        self.sessions: Any = None
        """The console sessions (agent/host/console.py), set where the agent is composed."""
        self.pulls: PullReporter | None = None
        """Where pulls report their progress (agent/host/pulls.py), set where composed."""

    @property
    def domains(self) -> DomainTable:
        return self._domains

    @property
    def engine(self) -> EngineFacts:
        return self._engine

    @property
    def driver(self) -> Driver:
        return self._driver

    @property
    def monitor(self) -> Monitor:
        return self._monitor

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def mounts(self) -> MountGuard:
        return self._mounts

    def admit(self, spec: DomainSpec, uuid: UUID | None) -> None:
        """Raise Denied unless the domain ``uuid`` may have the definition ``spec``."""
        self._mounts.admit(spec, uuid)

    def handle_of(self, domain: DomainObj) -> str:
        """The handle of the domain's container; OPERATION_FAILED if it has none."""
        return self._handle(domain)

    async def verify_mounts(self, domain: DomainObj, spec: DomainSpec) -> None:
        """Raise Denied unless the host paths Docker holds for the domain may be mounted
        now: the last step before Docker mounts them."""
        await self._verify_mounts(domain, spec)

    def saved(self, domain: DomainObj) -> DomainRecord:
        """The domain's record, once its state is stored."""
        return self._saved(domain)

    async def act(
        self,
        domain: DomainObj,
        cause: str,
        until: frozenset[Transition],
        *steps: Step,
        mode: Mode = Mode.PLAIN,
        via: frozenset[Transition] = frozenset(),
    ) -> None:
        """Run driver steps on the domain until the monitor sees ``until`` (``_act``);
        ``via``: the transitions on the way, which carry ``cause`` too."""
        await self._act(domain, cause, until, *steps, mode=mode, via=via)

    async def count_snapshots(self) -> None:
        """Each domain's snapshot count and current snapshot (its newest), from the
        snapshot images Docker holds: at start-up, as libvirtd loads its metadata."""
        newest: dict[str, tuple[int, str]] = {}
        counts: dict[str, int] = {}
        for image in await self._driver.snapshot_images():
            uuid = image.labels.get(UUID_LABEL, "")
            counts[uuid] = counts.get(uuid, 0) + 1
            created = int(image.labels.get(CREATED_LABEL, "0") or 0)
            name = image.labels.get(SNAPSHOT_LABEL, "")
            newest[uuid] = max(newest.get(uuid, (created, name)), (created, name))
        for domain in self._domains:
            domain.snapshots = counts.get(str(domain.uuid), 0)
            domain.current_snapshot = newest[str(domain.uuid)][1] if domain.snapshots else None

    async def run(self, command: Command, retry: bool = False) -> Result:
        """Carry out one command. A ``retry`` (a command delivered again after the agent
        died running it) whose effect is already there answers success, as the first
        delivery would have. It starts once Docker has finished the previous call on
        the command's domain."""
        subject = self._domains.subject(command)
        if subject is not None:
            await self.docker_done(subject, command.op)
        if retry and (
            self._intent_reached(command.id)
            or await self._monitor.orphan_settled(command.id, ORPHAN_WAIT_S)
        ):
            done = self._record_of(command)
            if done is not None:
                log.info(
                    "retried %s %s: its effect was seen before the restart", command.op, command.id
                )
                return done
        try:
            return await self._run(command)
        except VirtError as error:
            if error.code is ErrorCode.OPERATION_INVALID and not isinstance(error, DefinitionClash):
                await self._caught_up(command)
            done = self._already_done(command, error) if retry else None
            if done is None:
                raise
            log.info("retried %s %s: already done", command.op, command.id)
            return done

    async def _caught_up(self, command: Command) -> None:
        """Docker refused an op on a domain held active: its container may have gone down
        unreported (the engine restarted before its events were read). Bring the domain
        in line with Docker first, so that the stop is published, external, before the
        refusal is answered. Best effort, for at most ``CATCH_UP_S`` (the monitor may be
        busy with a re-list): the refusal stands either way."""
        domain = self._domains.subject(command)
        if domain is None or not domain.active or isinstance(command, Create):
            return
        try:
            async with asyncio.timeout(CATCH_UP_S):
                await self._monitor.resync(domain)
        except (VirtError, StoreUnwritable, TimeoutError) as error:
            log.info("domain %s not brought in line after a refusal: %s", domain.name, repr(error))

    async def docker_done(self, domain: DomainObj, op: str) -> None:
        """Return once Docker has finished the last call made on the domain (whose op
        may have answered at Docker's report); OPERATION_TIMEOUT if it takes longer than
        ``JOB_WAIT_S``. Its outcome was logged when it ended."""
        acting = self._finishing.get(domain.uuid)
        if acting is None:
            return
        _, pending = await asyncio.wait([acting], timeout=JOB_WAIT_S)
        if pending:
            raise VirtError(
                ErrorCode.OPERATION_TIMEOUT,
                f"cannot acquire state change lock of domain '{domain.name}' for {op}: "
                f"Docker has not finished the previous call within {JOB_WAIT_S:g} s",
            )

    def _record_of(self, command: Command) -> DomainRecord | None:
        domain = self._domains.subject(command)
        if domain is not None:
            return domain.record()
        if isinstance(command, DomainCommand):
            return self._gone(command.target.name, command.target.uuid)
        return None

    def _already_done(self, command: Command, error: VirtError) -> DomainRecord | None:
        if isinstance(command, Define | CreateXml):
            spec = command.args.spec
            existing = self._domains.by_name(spec.name)
            if not isinstance(error, DefinitionClash) or existing is None:
                return None
            made_by_it = spec.uuid in (None, existing.uuid) and (
                isinstance(command, Define) or (existing.active and not existing.persistent)
            )
            same = existing.spec.model_copy(update={"uuid": None}) == spec.model_copy(
                update={"uuid": None}
            )
            return existing.record() if made_by_it and same else None
        if not isinstance(command, DomainCommand):
            return None
        domain = self._domains.find(command.target)
        if error.code is ErrorCode.NO_DOMAIN and isinstance(command, Undefine | Destroy | Shutdown):
            return self._gone(command.target.name, command.target.uuid)
        if error.code is not ErrorCode.OPERATION_INVALID or domain is None:
            return None
        if isinstance(command, Create) and domain.active:
            return domain.record()
        if isinstance(command, Destroy | Shutdown) and not domain.active:
            return domain.record()
        return None

    async def _run(self, command: Command) -> Result:
        handler = HANDLERS[type(command)]
        result = handler(self, command)
        return await result if inspect.isawaitable(result) else result

    @handles(Lookup)
    def lookup(self, command: Lookup) -> DomainRecord:
        return self._domains.get(command.target).record()

    @handles(GetState)
    def get_state(self, command: GetState) -> DomainStateInfo:
        domain = self._domains.get(command.target)
        return DomainStateInfo(state=int(domain.state), reason=int(domain.reason))

    @handles(SetMemory)
    async def set_memory(self, command: SetMemory) -> DomainRecord:
        return await self.set_tunables(command, memory_kib=command.args.memory_kib)

    @handles(SetVcpus)
    async def set_vcpus(self, command: SetVcpus) -> DomainRecord:
        return await self.set_tunables(command, vcpus=command.args.vcpus)

    @handles(ListDomains)
    def list_domains(self, command: ListDomains) -> DomainList:
        records = [d.record() for d in self._domains if d.matches(command.args.flags)]
        return DomainList(domains=sorted(records, key=lambda r: r.name))

    @handles(Ping)
    def ping(self, command: Ping) -> Pong:
        return Pong(host=self.host, time=datetime.now(UTC))

    @handles(Login)
    def login(self, command: Login) -> Done:
        args = command.args
        self._credentials.login(args.registry, args.username, args.password)
        return Done()

    @handles(Logout)
    def logout(self, command: Logout) -> Done:
        if not self._credentials.logout(command.args.registry):
            raise VirtError(ErrorCode.INVALID_ARG, f"not logged in to '{command.args.registry}'")
        return Done()

    async def _act(
        self,
        domain: DomainObj,
        cause: str,
        until: frozenset[Transition],
        *steps: Step,
        mode: Mode = Mode.PLAIN,
        params: dict[str, int] | None = None,
        wait_s: float | None = None,
        answer_at_report: bool = False,
        via: frozenset[Transition] = frozenset(),
    ) -> None:
        """Run driver steps on the domain and wait until the monitor sees ``until``;
        the transitions ``via`` and ``until`` carry ``cause``, no other.

        ``answer_at_report``: the last step only acts on the container (its answer
        carries nothing the domain needs), so the op may end at Docker's report."""
        wait_s = EVENT_WAIT_S if wait_s is None else wait_s
        with self._monitor.expect(domain, cause, until, mode, params, via) as expectation:
            *before, last = steps
            for step in before:
                await step()
            if answer_at_report:
                await self._until_reported(domain, last, expectation)
            else:
                await last()
            if not await expectation.wait(wait_s):
                if self._monitor.behind:
                    # Docker's report waits in Docker: read there, not guessed from its state
                    raise StoreUnwritable("Docker's report of the effect waits for the store")
                await self._monitor.resync(domain, acted=True)
            if not expectation.reached.is_set() and self._monitor.behind:
                raise StoreUnwritable("Docker's report of the effect waits for the store")
            if not expectation.reached.is_set():
                log.warning(
                    "Docker did not report %s of domain %s within %.0f s",
                    "/".join(sorted(str(t) for t in until)),
                    domain.name,
                    wait_s,
                )
                _unseen(domain, until, via, mode)
        if not domain.persistent and not domain.active:
            await self._monitor.name_free(domain.name)

    async def _until_reported(
        self, domain: DomainObj, step: Step, expectation: Expectation
    ) -> None:
        """Run the step that brings the effect about, returning when Docker reports the
        effect or answers the call, whichever comes first. Docker reports before it
        answers (a pause is answered after its state is written to disk, a kill after
        the container's cleanup); the rest of the call finishes in the background, and
        the domain's next command waits for it (``docker_done``)."""
        acting = asyncio.ensure_future(step())
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake(*_: object) -> None:
            if not woken.done():
                woken.set_result(None)

        acting.add_done_callback(wake)
        expectation.on_reach(wake)
        try:
            await woken
        except BaseException:
            acting.cancel()
            raise
        finally:
            acting.remove_done_callback(wake)
        if acting.done():
            acting.result()
            return
        self._finishing[domain.uuid] = acting

        def finished(acting: asyncio.Future[object]) -> None:
            if self._finishing.get(domain.uuid) is acting:
                del self._finishing[domain.uuid]
            if not acting.cancelled() and acting.exception() is not None:
                # the command was answered at the report, rightly: the effect happened
                log.warning(
                    "Docker's call on domain %s failed after Docker had reported its "
                    "effect (command %s succeeded): %s",
                    domain.name,
                    expectation.cause,
                    acting.exception(),
                )

        acting.add_done_callback(finished)

    def _handle(self, domain: DomainObj) -> str:
        if domain.handle is None:
            raise VirtError(ErrorCode.OPERATION_FAILED, f"domain '{domain.name}' has no container")
        return domain.handle

    async def _check_image(self, spec: DomainSpec, cause: str) -> None:
        credentials = self._credentials.for_pulls()
        if self.pulls is None:
            default = await self._driver.default_command(spec.image, credentials)
        else:
            async with self.pulls.pull(spec.image, cause) as listener:
                default = await self._driver.default_command(spec.image, credentials, listener)
        if spec.command is None and default is None:
            raise VirtError(
                ErrorCode.INVALID_ARG,
                f"image '{spec.image}' has no default command: the spec needs 'command'",
            )

    def _check_vcpus(self, vcpus: int | None) -> None:
        if vcpus is not None and vcpus > self._engine.cpus:
            raise VirtError(
                ErrorCode.INVALID_ARG,
                f"requested vcpus is greater than max allowable vcpus for the host: "
                f"{vcpus} > {self._engine.cpus}",
            )

    def _retune(self, domain: DomainObj, spec: DomainSpec) -> Step:
        """A step that gives the container the controls of ``spec`` in a Docker update,
        keeping the container and its filesystem. ``spec`` is the running definition from
        then on (stored once Docker has it), so Docker's report of the update is no
        tunable change."""

        async def retune() -> None:
            before = domain.spec
            domain.spec = spec
            try:
                await self._driver.update(self._handle(domain), spec)
            except BaseException:
                domain.spec = before
                raise
            self._saved(domain)

        return retune

    async def _pinned_still(self, domain: DomainObj, spec: DomainSpec) -> bool:
        """Whether each mount source of ``spec`` resolves to the path the container holds
        (else a new container pins the path it resolves to now)."""
        if not spec.mounts:
            return True
        observed = await self._driver.observe(self._handle(domain))
        held = observed.mounts if observed else {}
        return all(held.get(m.target) == m.source for m in self._mounts.pinned(spec).mounts)

    def _rebuild(self, domain: DomainObj, spec: DomainSpec) -> list[Step]:
        """Steps that replace the domain's container by one built from ``spec``: built
        beside the old one first, so a definition Docker refuses leaves the old in place."""
        old = self._handle(domain)

        async def build_beside() -> None:
            domain.handle = await self._driver.create(
                f"_{domain.name}", domain.uuid, self._mounts.pinned(spec)
            )

        async def swap() -> None:
            await self._driver.remove(old)
            await self._driver.rename(self._handle(domain), domain.name)

        return [build_beside, swap]

    @handles(Define)
    async def define(self, command: Define) -> DomainRecord:
        spec = command.args.spec
        existing = self._domains.by_name(spec.name)
        self._mounts.admit(spec, existing.uuid if existing else None)
        self._check_vcpus(spec.vcpus)
        self._check_controls(spec.tunables())
        same_uuid = self._domains.by_uuid(spec.uuid) if spec.uuid else None
        if same_uuid is not None and same_uuid.name != spec.name:
            raise _defined_with_uuid(same_uuid)
        if existing is not None:
            if spec.uuid != existing.uuid:
                raise _exists_with_uuid(existing)
            return await self._redefine(existing, spec, command.id)
        await self._check_image(spec, command.id)
        domain = await self._new_domain(spec, persistent=True)
        try:
            await self._act(
                domain, command.id, frozenset({Lifecycle.DEFINED_ADDED}), self._create(domain)
            )
        except StoreUnwritable:
            # not defined: its retry defines it afresh, under the same name
            self._domains.remove(domain)
            if domain.handle is not None:
                await self._driver.remove(domain.handle)
            raise
        except BaseException:
            self._domains.remove(domain)
            if domain.handle is None:
                self._monitor.discard_made(domain.name, domain.uuid)
            raise
        return self._saved(domain)

    async def _new_domain(self, spec: DomainSpec, persistent: bool) -> DomainObj:
        uuid = spec.uuid or uuid4()
        await self._monitor.claim(spec.name)
        domain = DomainObj(
            uuid=uuid,
            name=spec.name,
            spec=spec.model_copy(update={"uuid": uuid}),
            persistent=persistent,
            autostart=spec.autostart and persistent,
        )
        self._domains.add(domain)
        return domain

    async def _redefine(self, domain: DomainObj, spec: DomainSpec, cause: str) -> DomainRecord:
        await self._check_image(spec, cause)
        if domain.active:
            with self._monitor.kept(domain):
                domain.autostart, domain.pending = spec.autostart, spec
                was_persistent, domain.persistent = domain.persistent, True
                added = Lifecycle.DEFINED_UPDATED if was_persistent else Lifecycle.DEFINED_ADDED
                self._monitor.announce(domain, added, cause, whole=True)
            return domain.record()
        domain.autostart = spec.autostart
        change = _change(domain.spec, spec)
        if change is not Change.REBUILD and await self._pinned_still(domain, spec):
            # the container stays, and with it the domain's filesystem
            if change is Change.RETUNE:
                await self._retune(domain, spec)()
            with self._monitor.kept(domain):
                domain.spec, domain.pending = spec, None
                self._monitor.announce(domain, Lifecycle.DEFINED_UPDATED, cause, whole=True)
            return domain.record()
        steps = self._rebuild(domain, spec)
        await self._act(
            domain, cause, frozenset({Lifecycle.DEFINED_UPDATED}), *steps, mode=Mode.REDEFINE
        )
        domain.spec, domain.pending = spec, None
        return self._saved(domain)

    def _saved(self, domain: DomainObj) -> DomainRecord:
        if self._domains.by_uuid(domain.uuid) is domain:
            self._monitor.save(domain)
        return domain.record()

    @handles(CreateXml)
    async def create_xml(self, command: CreateXml) -> DomainRecord:
        spec = command.args.spec
        self._mounts.admit(spec)
        self._check_vcpus(spec.vcpus)
        self._check_controls(spec.tunables())
        same_uuid = self._domains.by_uuid(spec.uuid) if spec.uuid else None
        if same_uuid is not None and same_uuid.name != spec.name:
            raise _defined_with_uuid(same_uuid)
        existing = self._domains.by_name(spec.name)
        if existing is not None and existing.uuid == spec.uuid and existing.active:
            raise DefinitionClash(
                ErrorCode.OPERATION_INVALID, f"domain '{existing.name}' is already active"
            )
        if existing is not None and existing.uuid == spec.uuid:
            # libvirt would start it with this definition for the run; virtbus keeps one
            # definition per domain
            raise DefinitionClash(
                ErrorCode.OPERATION_FAILED,
                f"domain '{existing.name}' is already defined and shut off: start it, or "
                "define it anew first (virtbus keeps one definition per domain)",
            )
        if existing is not None:
            raise _exists_with_uuid(existing)
        await self._check_image(spec, command.id)
        domain = await self._new_domain(spec, persistent=False)
        try:
            await self.start(domain, command.id, command.args.start_paused, [self._create(domain)])
        except BaseException:
            self._domains.remove(domain)
            if domain.handle is not None:
                await self._driver.remove(domain.handle)
            raise
        return self._saved(domain)

    def _create(self, domain: DomainObj) -> Step:
        async def create() -> None:
            domain.handle = await self._driver.create(
                domain.name, domain.uuid, self._mounts.pinned(domain.spec)
            )

        return create

    async def start(
        self, domain: DomainObj, cause: str, paused: bool, before: list[Step] | None = None
    ) -> DomainRecord:
        """Start a domain, applying its pending definition first; the definition is
        checked against the policy again, as it may be older than the policy, and its
        mount sources right before Docker mounts them."""
        pending = domain.pending
        spec = pending or domain.spec
        self._mounts.admit(spec, domain.uuid)
        steps = list(before or [])
        mode = Mode.PLAIN
        change = Change.NONE if pending is None else _change(domain.spec, pending)
        if change is Change.RETUNE:
            steps.append(self._retune(domain, spec))
        elif change is Change.REBUILD:
            steps += self._rebuild(domain, spec)
            mode = Mode.REFRESH
        steps.append(lambda: self._verify_mounts(domain, spec))
        steps.append(lambda: self._driver.start(self._handle(domain)))
        until, via = Lifecycle.STARTED_BOOTED, frozenset[Transition]()
        if paused:
            steps.append(lambda: self._driver.pause(self._handle(domain)))
            until, via = Lifecycle.SUSPENDED_PAUSED, frozenset({Lifecycle.STARTED_BOOTED})
        await self._act(
            domain, cause, frozenset({until}), *steps, mode=mode, answer_at_report=True, via=via
        )
        if pending is not None:
            domain.spec, domain.pending = pending, None
        return self._saved(domain)

    @handles(Create)
    async def create(self, command: Create) -> DomainRecord:
        domain = self._domains.get(command.target)
        if domain.active:
            raise invalid("domain is already running")
        return await self.start(domain, command.id, command.args.start_paused)

    def _active(self, command: Shutdown | Destroy | Reboot | Suspend | Resume) -> DomainObj:
        domain = self._domains.get(command.target)
        if not domain.active:
            raise invalid("domain is not running")
        return domain

    async def _running(self, command: Reboot | Suspend | Resume) -> DomainObj:
        """The targeted active domain, its crash restart done first if one is waiting."""
        await self._restarts.now(self._domains.get(command.target).uuid)
        return self._active(command)

    @handles(Shutdown)
    async def shutdown(self, command: Shutdown) -> DomainRecord:
        timeout_s = command.args.timeout_s
        if not command.args.escalate:
            domain = self._active(command)
            await self._cancel_reboot(domain.uuid)
            await self._driver.signal(self._handle(domain), "TERM")
            return domain.record()
        return await self._take_down(
            command,
            Lifecycle.STOPPED_SHUTDOWN,
            lambda domain: self._driver.stop(self._handle(domain), timeout_s),
            timeout_s + EVENT_WAIT_S,
            Mode.SHUTDOWN,
        )

    @handles(Destroy)
    async def destroy(self, command: Destroy) -> DomainRecord:
        return await self._take_down(
            command,
            Lifecycle.STOPPED_DESTROYED,
            lambda domain: self._driver.kill(self._handle(domain)),
            EVENT_WAIT_S,
            Mode.DESTROY,
        )

    async def _take_down(
        self,
        command: Shutdown | Destroy,
        stopped: Lifecycle,
        act: Callable[[DomainObj], Awaitable[object]],
        wait_s: float,
        mode: Mode,
    ) -> DomainRecord:
        """Stop an active domain, which then stays down: no crash restart is started
        while this runs, and one still waiting is cancelled (the domain, whose container
        is already down, stops with ``stopped`` at once)."""
        domain = self._domains.get(command.target)
        await self._cancel_reboot(domain.uuid)
        with self._restarts.held(domain.uuid):
            if await self._restarts.cancel(domain.uuid):
                self._monitor.stopped(domain, stopped, command.id)
                if not domain.persistent:
                    await self._monitor.name_free(domain.name)
                return domain.record()
            domain = self._active(command)

            async def take_down() -> None:
                try:
                    await act(domain)
                except VirtError as error:
                    # down by itself as Docker was told to stop it: its die ends the op
                    if error.code is not ErrorCode.OPERATION_INVALID or await self._up(domain):
                        raise

            await self._act(
                domain,
                command.id,
                STOPPED,
                take_down,
                mode=mode,
                wait_s=wait_s,
                answer_at_report=True,
            )
        return domain.record()

    async def _up(self, domain: DomainObj) -> bool:
        observed = await self._driver.observe(self._handle(domain))
        return observed is not None and observed.status in ("running", "paused", "restarting")

    @handles(Reboot)
    async def reboot(self, command: Reboot) -> DomainRecord:
        """Docker's restart mounts the sources again: they are checked first. Without
        ``escalate``: the domain's init gets SIGTERM and the reply goes out; when the
        domain has stopped, however long that takes, the agent starts it again (one
        reboot event). A shutdown or destroy in the meantime cancels the restart."""
        domain = await self._running(command)
        await self._verify_mounts(domain, domain.spec)
        handle = self._handle(domain)
        if not command.args.escalate:

            async def reboot_when_stopped() -> None:
                await self._act(
                    domain,
                    command.id,
                    frozenset({Special.REBOOT}),
                    lambda: self._driver.signal(handle, "TERM"),
                    lambda: self._driver.wait_stopped(handle),
                    lambda: self._verify_mounts(domain, domain.spec),
                    lambda: self._driver.start(handle),
                    mode=Mode.SOFT_REBOOT,
                )

            self._in_background(domain.uuid, reboot_when_stopped(), f"reboot of {domain.name}")
            return domain.record()
        grace_s = command.args.timeout_s
        await self._act(
            domain,
            command.id,
            frozenset({Special.REBOOT}),
            lambda: self._driver.restart(handle, grace_s),
            mode=Mode.REBOOT,
            wait_s=grace_s + 2 * EVENT_WAIT_S,
            answer_at_report=True,
        )
        return domain.record()

    def _in_background(self, uuid: UUID, work: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(work)
        self._rebooting[uuid] = task

        def done(task: asyncio.Task[None]) -> None:
            if self._rebooting.get(uuid) is task:
                del self._rebooting[uuid]
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s failed: %s", what, task.exception())

        task.add_done_callback(done)

    async def _cancel_reboot(self, uuid: UUID) -> None:
        """A reboot waiting for the domain to stop by itself will not start it again."""
        task = self._rebooting.pop(uuid, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _restart_after_crash(
        self, domain: DomainObj, crash: Lifecycle, exit_code: int | None
    ) -> None:
        """The crash restart of an ``on_crash: restart`` domain, checked as a start is
        (its mounts right before Docker's); refused or failed, the domain stops with the
        crash's event."""
        if self._domains.by_uuid(domain.uuid) is not domain or not domain.active:
            return
        cause = f"restart-{domain.uuid}"
        try:
            await self.docker_done(domain, "restart")
            self._mounts.admit(domain.spec, domain.uuid)
            await self._act(
                domain,
                cause,
                frozenset({Special.REBOOT}),
                lambda: self._verify_mounts(domain, domain.spec),
                lambda: self._driver.start(self._handle(domain)),
                mode=Mode.RESTART,
                answer_at_report=True,
            )
        except VirtError as error:
            log.warning("domain %s is not restarted: %s", domain.name, error.message)
            if domain.active:
                self._monitor.stopped(domain, crash, cause, exit_code)
                if not domain.persistent:
                    await self._monitor.name_free(domain.name)

    async def _verify_mounts(self, domain: DomainObj, spec: DomainSpec) -> None:
        """Raise Denied unless the sources Docker holds for the domain may be mounted."""
        if not spec.mounts:
            return
        observed = await self._driver.observe(self._handle(domain))
        self._mounts.verify(spec, domain.uuid, observed.mounts if observed else {})

    @handles(Suspend)
    async def suspend(self, command: Suspend) -> DomainRecord:
        domain = await self._running(command)
        if domain.state is not DomainState.PAUSED:
            await self._act(
                domain,
                command.id,
                frozenset({Lifecycle.SUSPENDED_PAUSED}),
                lambda: self._driver.pause(self._handle(domain)),
                answer_at_report=True,
            )
        return domain.record()

    @handles(Resume)
    async def resume(self, command: Resume) -> DomainRecord:
        domain = await self._running(command)
        if domain.state is DomainState.PAUSED:
            await self._act(
                domain,
                command.id,
                frozenset({Lifecycle.RESUMED_UNPAUSED}),
                lambda: self._driver.unpause(self._handle(domain)),
                answer_at_report=True,
            )
        return domain.record()

    @handles(Undefine)
    async def undefine(self, command: Undefine) -> DomainRecord:
        """Volumes stay unless ``volumes`` asks; snapshots go only with ``snapshots``,
        without which a domain that has any stays defined (libvirt's rule)."""
        domain = self._domains.get(command.target)
        if not domain.persistent:
            raise invalid("cannot undefine transient domain")
        if domain.snapshots and not command.args.snapshots:
            raise invalid(f"cannot delete inactive domain with {domain.snapshots} snapshots")
        defined = domain.next_definition
        volumes = [v.volume for v in defined.volumes] if command.args.volumes else []
        if domain.active:
            with self._monitor.kept(domain):
                domain.persistent, domain.autostart, domain.pending = False, False, None
                self._monitor.announce(domain, Lifecycle.UNDEFINED_REMOVED, command.id)
        else:
            await self._act(
                domain,
                command.id,
                frozenset({Lifecycle.UNDEFINED_REMOVED}),
                lambda: self._monitor.remove(self._handle(domain)),
            )
        await self._drop_storage(domain, volumes)
        return domain.record()

    async def _drop_storage(self, domain: DomainObj, volumes: list[str]) -> None:
        """Remove the undefined domain's snapshot images and the given volumes that no
        other domain mounts; a volume still in use (the domain runs on) is kept."""
        if domain.snapshots:
            for image in await self._driver.snapshot_images():
                if image.labels.get(UUID_LABEL) == str(domain.uuid):
                    await self._driver.remove_snapshot_image(image.tag)
        domain.snapshots, domain.current_snapshot = 0, None
        # the image a revert left the domain running from, once no snapshot names it
        await self._driver.prune_snapshot_images()
        used = {
            v.volume
            for d in self._domains
            if d is not domain
            for spec in (d.spec, d.pending)
            if spec is not None
            for v in spec.volumes
        }
        for name in volumes:
            if name in used:
                continue
            try:
                await self._driver.remove_volume(name)
            except VirtError as error:
                log.warning("volume %s of domain %s is kept: %s", name, domain.name, error)

    @handles(GetInfo)
    async def get_info(self, command: GetInfo) -> DomainInfo:
        domain = self._domains.get(command.target)
        definition = domain.definition
        max_mem_kib = definition.memory_kib or self._engine.memory_kib
        memory_kib, cpu_time_ns = max_mem_kib, 0
        if domain.active:
            usage = await self._driver.usage(self._handle(domain))
            memory_kib, cpu_time_ns = usage.memory_kib, usage.cpu_time_ns
        return DomainInfo(
            state=int(domain.state),
            max_mem_kib=max_mem_kib,
            memory_kib=memory_kib,
            nr_virt_cpu=definition.vcpus or self._engine.cpus,
            cpu_time_ns=cpu_time_ns,
        )

    @handles(SetAutostart)
    def set_autostart(self, command: SetAutostart) -> DomainRecord:
        domain = self._domains.get(command.target)
        if not domain.persistent:
            raise invalid("cannot set autostart for transient domain")
        domain.autostart = command.args.autostart
        return self._saved(domain)

    async def set_tunables(self, command: SetMemory | SetVcpus, **changes: int) -> DomainRecord:
        """setmem and setvcpus: the running definition and the persistent one at once."""
        domain = self._domains.get(command.target)
        self._check_vcpus(changes.get("vcpus"))
        self._policy.check_limits(changes.get("memory_kib"), changes.get("vcpus"))
        self._check_controls(changes)
        running = _tuned(domain.spec, changes)
        pending = None if domain.pending is None else _tuned(domain.pending, changes)
        await self._update(domain, command.id, running, changes)
        domain.pending = pending
        return self._saved(domain)

    @handles(SetTuning)
    async def set_tuning(self, command: SetTuning) -> DomainRecord:
        """The running definition (its container changed at once), the persistent one,
        or both (libvirt's VIR_DOMAIN_AFFECT_*). Every definition it would change is
        checked before anything changes.

        A change to the running definition alone lasts until the next start, which gives
        the container the persistent definition's controls again in a Docker update. A
        control the persistent definition does not have reaches it too: Docker cannot
        take a control away from a container, and a new container would not keep the
        domain's filesystem."""
        args = command.args
        changes = args.changes()
        domain = self._domains.get(command.target)
        live, config = affected(domain, args.live, args.config)
        self._check_vcpus(changes.get("vcpus"))
        self._policy.check_limits(changes.get("memory_kib"), changes.get("vcpus"))
        self._check_controls(changes)
        before = domain.spec
        # a shut-off domain's container is built from ``spec``: the persistent definition
        # unless a pending one replaces it at the next start
        in_place = live or (not domain.active and domain.pending is None)
        running = _tuned(before, changes) if in_place else before
        persistent = domain.next_definition
        if config:
            persistent = _tuned(persistent, changes)
        elif domain.persistent and _alike_but_controls(running, persistent):
            # the next start gives the container ``persistent``'s controls by an update
            persistent = _keeping(persistent, running)
        if in_place:
            await self._update(domain, command.id, running, changes)
        if domain.persistent:
            domain.pending = None if persistent == domain.spec else persistent
        return self._saved(domain)

    def _check_controls(self, changes: dict[str, int]) -> None:
        """CONFIG_UNSUPPORTED for a control the host's kernel does not have: Docker would
        drop it with a warning."""
        missing = sorted(name for name in changes if name not in self._engine.controls)
        if missing:
            raise VirtError(
                ErrorCode.CONFIG_UNSUPPORTED,
                f"the host's kernel has no control for {', '.join(missing)} "
                "(Docker's info reports it unsupported)",
            )

    async def _update(
        self, domain: DomainObj, cause: str, spec: DomainSpec, changes: dict[str, int]
    ) -> None:
        """Give the domain's container the controls of ``spec``, which becomes its running
        definition; one TUNABLE event carries ``changes``."""
        await self._act(
            domain,
            cause,
            frozenset({Special.TUNABLE}),
            lambda: self._driver.update(self._handle(domain), spec),
            params=changes,
        )
        domain.spec = spec

    @handles(Rename)
    async def rename(self, command: Rename) -> DomainRecord:
        domain = self._domains.get(command.target)
        new_name = command.args.new_name
        if not domain.persistent:
            raise invalid("cannot rename a transient domain")
        if domain.active:
            raise invalid("cannot rename active domain")
        if new_name == domain.name:
            raise invalid("Can't rename domain to itself")
        if self._domains.by_name(new_name) is not None:
            raise invalid(f"domain with name '{new_name}' already exists")
        await self._monitor.claim(new_name)
        await self._act(
            domain,
            command.id,
            frozenset({Lifecycle.DEFINED_RENAMED}),
            lambda: self._driver.rename(self._handle(domain), new_name),
            via=frozenset({Lifecycle.UNDEFINED_RENAMED}),
        )
        domain.spec = domain.spec.model_copy(update={"name": new_name})
        if domain.pending is not None:
            domain.pending = domain.pending.model_copy(update={"name": new_name})
        return self._saved(domain)

    @handles(GetXmlDesc)
    def xml_desc(self, command: GetXmlDesc) -> DomainXml:
        """The domain's XML as virDomainGetXMLDesc: the definition it runs with (and its
        ID) or, ``inactive``, the one it will have at its next start."""
        domain = self._domains.get(command.target)
        inactive = command.args.inactive
        spec = domain.next_definition if inactive else domain.definition
        spec = spec.model_copy(update={"autostart": domain.autostart})
        try:
            return DomainXml(xml=domain_xml(spec, None if inactive else domain.record().id))
        except XmlError as error:
            raise VirtError(error.code, error.detail) from None

    @handles(GetHostInfo)
    def host_info(self, command: GetHostInfo) -> HostInfo:
        domains = list(self._domains)
        active = sum(d.active for d in domains)
        persistent = sum(d.persistent for d in domains)
        node = host_facts()
        return HostInfo(
            hostname=self.host,
            groups=self.groups,
            cpus=self._engine.cpus,
            memory_kib=self._engine.memory_kib,
            engine_version=self._engine.version,
            agent_version=__version__,
            heartbeat_s=self.heartbeat_s,
            domains=DomainCounts(
                total=len(domains),
                active=active,
                inactive=len(domains) - active,
                persistent=persistent,
                transient=len(domains) - persistent,
            ),
            arch=node.arch,
            cpu_model=node.cpu_model,
            mhz=node.mhz,
            nodes=len(node.cells),
            sockets=node.topology.sockets,
            cores=node.topology.cores,
            threads=node.topology.threads,
        )

    async def autostart(self) -> None:
        """Start every shut-off domain marked autostart, as libvirtd does at its start."""
        for domain in self._domains:
            if domain.autostart and not domain.active:
                try:
                    await self.start(domain, f"autostart-{domain.uuid}", paused=False)
                except VirtError as error:
                    log.warning("autostart of domain %s failed: %s", domain.name, error)


_SEEN_IN_STATE: frozenset[Transition] = STOPPED | {
    Lifecycle.STARTED_BOOTED,
    Lifecycle.SUSPENDED_PAUSED,
    Lifecycle.RESUMED_UNPAUSED,
    Lifecycle.UNDEFINED_REMOVED,
    Special.REBOOT,
}
"""The effects a re-read of the domain shows (or their absence): not a changed
definition, tunable or name."""


def _unseen(
    domain: DomainObj, until: frozenset[Transition], via: frozenset[Transition], mode: Mode
) -> None:
    """Raise OPERATION_FAILED when the re-read after the grace period shows the op's effect
    absent: Docker answered the call without acting, or the domain went another way, as
    with an engine going down as the call came. An op that brought about a step on the
    way (``via``) answers with what it did; a crash restart, which no command waits for,
    is left to the next re-list."""
    if Lifecycle.DEFINED_ADDED in until:
        # the re-read finds no container: Docker answered the create and lost it (its
        # engine restarted), so nothing was defined
        raise VirtError(
            ErrorCode.OPERATION_FAILED,
            f"Docker lost the container of domain '{domain.name}' it had just created (its "
            "engine restarted); nothing was defined",
        )
    if via or mode is Mode.RESTART or not until <= _SEEN_IN_STATE:
        return
    if Special.REBOOT in until:
        found = "running its old init" if domain.active else "shut off"
        raise VirtError(
            ErrorCode.OPERATION_FAILED, f"domain '{domain.name}' did not reboot: it is {found}"
        )
    state = "still running" if until <= STOPPED and domain.active else domain.state.name.lower()
    raise VirtError(
        ErrorCode.OPERATION_FAILED, f"Docker answered, and domain '{domain.name}' is {state}"
    )


_OUTSIDE_THE_CONTAINER = {"title", "description", "metadata", "metadata_xml", "autostart"}


def _tuned(spec: DomainSpec, changes: dict[str, int]) -> DomainSpec:
    """``spec`` with ``changes``; INVALID_ARG if its memory limits are then out of order."""
    tuned = spec.model_copy(update=changes)
    try:
        tuned.check_memory_limits()
    except ValueError as error:
        raise VirtError(ErrorCode.INVALID_ARG, str(error)) from None
    return tuned


def _irrevocable(running: DomainSpec, persistent: DomainSpec) -> dict[str, int]:
    """The controls of ``running`` that ``persistent`` lacks and Docker cannot take back
    from a container (all but swap, which goes back to the memory limit)."""
    kept = persistent.tunables()
    return {
        name: value
        for name, value in running.tunables().items()
        if name not in kept and name != "swap_hard_limit_kib"
    }


def _keeping(persistent: DomainSpec, running: DomainSpec) -> DomainSpec:
    """``persistent`` with the controls of ``running`` it cannot be given back without (its
    limits out of order beside them: all of ``running``'s)."""
    kept = persistent.model_copy(update=_irrevocable(running, persistent))
    try:
        kept.check_memory_limits()
    except ValueError:
        return persistent.model_copy(update={name: getattr(running, name) for name in TUNABLES})
    return kept


def _alike_but_controls(one: DomainSpec, other: DomainSpec) -> bool:
    """Whether the containers of two definitions differ in their controls at most."""
    untuned = dict.fromkeys(TUNABLES)
    return _container_of(one).model_copy(update=untuned) == _container_of(other).model_copy(
        update=untuned
    )


class Change(enum.Enum):
    """What it takes to give a domain's container another definition."""

    NONE = "none"
    """They differ outside the container (metadata) or not at all."""
    RETUNE = "retune"
    """They differ in controls a Docker update can set."""
    REBUILD = "rebuild"
    """A new container: anything else differs, or a control is taken away."""


def _change(running: DomainSpec, new: DomainSpec) -> Change:
    if not _alike_but_controls(running, new):
        return Change.REBUILD
    if running.tunables() == new.tunables():
        return Change.NONE
    return Change.REBUILD if _irrevocable(running, new) else Change.RETUNE


def _container_of(spec: DomainSpec) -> DomainSpec:
    """The part of a definition its container is built from: a definition that differs
    from the running one only in its description or metadata needs no new container."""
    return spec.model_copy(update=dict.fromkeys(_OUTSIDE_THE_CONTAINER))


def _defined_with_uuid(holder: DomainObj) -> DefinitionClash:
    """A definition whose UUID is another name's domain."""
    return DefinitionClash(
        ErrorCode.OPERATION_FAILED,
        f"domain '{holder.name}' is already defined with uuid {holder.uuid}",
    )


def _exists_with_uuid(holder: DomainObj) -> DefinitionClash:
    """A definition whose name is a domain of another (or no) UUID."""
    return DefinitionClash(
        ErrorCode.OPERATION_FAILED, f"domain '{holder.name}' already exists with uuid {holder.uuid}"
    )
