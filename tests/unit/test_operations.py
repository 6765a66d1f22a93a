"""The operations over the fake driver: an op that changes a domain answers only once
Docker reported the change, with the events already queued and credited to it; a
retried command whose effect is there answers success."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, get_args
from uuid import UUID

import pytest

from agent.errors import VirtError
from agent.host import monitor, operations
from agent.host.domains import DomainTable
from agent.host.driver import RuntimeEvent
from agent.host.monitor import Monitor
from agent.host.operations import HANDLERS, Operations
from agent.host.store import Store
from agent.host.translate import Mode, Special
from schemas.codes import DomainState, ErrorCode, Lifecycle
from schemas.commands import (
    Command,
    CommandBase,
    Create,
    CreateXml,
    Define,
    Destroy,
    GetInfo,
    GetXmlDesc,
    Reboot,
    Shutdown,
    Suspend,
    Undefine,
)
from schemas.domain import DomainRecord, DomainSpec
from schemas.events import EVENT_ADAPTER, LifecycleEvent, RebootEvent
from schemas.replies import DomainInfo, DomainXml
from tests.fakes import FakeHost, fake_host

SPEC = {"name": "web", "image": "virtbus-test:latest", "command": ["sleep", "60"]}
WAIT_S = 5.0
C = TypeVar("C", bound=CommandBase)
_ids = iter(range(1, 1_000_000))


def command(model: type[C], target: str | None = None, **args: Any) -> C:
    """A command of ``model`` with a fresh id; its op is the model's own."""
    (op,) = get_args(model.model_fields["op"].annotation)
    document: dict[str, Any] = {"op": op, "id": f"cmd-{next(_ids)}", "args": args}
    if target is not None:
        document["target"] = {"name": target}
    return model.model_validate(document)


class Rig:
    def __init__(self, host: FakeHost, operations: Operations) -> None:
        self.host = host
        self.operations = operations
        self.muted: list[RuntimeEvent] = []

    async def run(self, cmd: CommandBase, retry: bool = False) -> Any:
        return await asyncio.wait_for(self.operations.run(cmd, retry), WAIT_S)  # type: ignore[arg-type]

    def events(self) -> list[LifecycleEvent]:
        return [event for event in self._queued() if isinstance(event, LifecycleEvent)]

    def reboots(self) -> list[RebootEvent]:
        return [event for event in self._queued() if isinstance(event, RebootEvent)]

    def _queued(self) -> Iterator[object]:
        return (EVENT_ADAPTER.validate_json(p.body) for p in self.host.store.pending(1000))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with Store(tmp_path / "h1") as store:
        async with fake_host(store, tmp_path) as host:
            yield Rig(host, host.operations())


async def test_a_change_is_answered_after_its_events_which_carry_the_command_id(
    rig: Rig,
) -> None:
    define = command(Define, spec=SPEC)
    create = command(Create, "web")
    await rig.run(define)
    record = await rig.run(create)
    assert isinstance(record, DomainRecord) and record.state == DomainState.RUNNING
    assert record.id > 0
    assert [(e.lifecycle, e.origin, e.cause) for e in rig.events()] == [
        (Lifecycle.DEFINED_ADDED, "agent", define.id),
        (Lifecycle.STARTED_BOOTED, "agent", create.id),
    ]


async def test_an_op_ends_at_dockers_report_when_its_answer_comes_later(rig: Rig) -> None:
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    answered = asyncio.Event()
    rig.host.driver.answers["pause"] = answered
    record = await rig.run(command(Suspend, "web"))
    assert record.state == DomainState.PAUSED
    assert not answered.is_set()
    answered.set()


async def test_a_redefinition_docker_refuses_leaves_the_old_container(rig: Rig) -> None:
    first = await rig.run(command(Define, spec=SPEC))
    (old,) = rig.host.driver.containers.values()
    rig.host.driver.failures["create"] = VirtError(ErrorCode.OPERATION_FAILED, "no space")
    changed = {**SPEC, "uuid": str(first.uuid), "command": ["sleep", "1"]}
    with pytest.raises(VirtError) as refused:
        await rig.run(command(Define, spec=changed))
    assert refused.value.detail == "no space"
    assert list(rig.host.driver.containers.values()) == [old]
    assert old.spec.command == ["sleep", "60"]
    domain = rig.host.domains.by_name("web")
    assert domain is not None and domain.spec.command == ["sleep", "60"]


async def test_a_definition_given_while_running_applies_at_the_next_start(rig: Rig) -> None:
    first = await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    await rig.run(
        command(
            Define,
            spec={
                **SPEC,
                "uuid": str(first.uuid),
                "command": ["sleep", "5"],
                "memory_kib": 131072,
                "vcpus": 2,
            },
        )
    )
    (running,) = rig.host.driver.containers.values()
    assert running.spec.command == ["sleep", "60"]
    inactive = await rig.run(command(GetXmlDesc, "web", inactive=True))
    active = await rig.run(command(GetXmlDesc, "web"))
    assert isinstance(inactive, DomainXml) and isinstance(active, DomainXml)
    assert inactive.xml != active.xml
    running_info = await rig.run(command(GetInfo, "web"))
    assert isinstance(running_info, DomainInfo) and running_info.max_mem_kib == 1 << 20
    await rig.run(command(Destroy, "web"))
    # shut off, the domain is what its next start makes it, as libvirt shows it
    shut_off = await rig.run(command(GetXmlDesc, "web"))
    assert isinstance(shut_off, DomainXml) and shut_off.xml == inactive.xml
    assert "<initarg>5</initarg>" in shut_off.xml
    info = await rig.run(command(GetInfo, "web"))
    assert isinstance(info, DomainInfo)
    assert (info.max_mem_kib, info.nr_virt_cpu) == (131072, 2)
    await rig.run(command(Create, "web"))
    (rebuilt,) = rig.host.driver.containers.values()
    assert rebuilt.spec.command == ["sleep", "5"] and rebuilt.status == "running"


async def test_a_transient_domain_that_cannot_start_leaves_nothing(rig: Rig) -> None:
    rig.host.driver.failures["start"] = VirtError(ErrorCode.OPERATION_FAILED, "no")
    with pytest.raises(VirtError):
        await rig.run(command(CreateXml, spec=SPEC))
    assert rig.host.domains.by_name("web") is None
    assert rig.host.driver.containers == {}


async def test_an_undefined_domain_that_stops_leaves_no_container_when_docker_balks(
    rig: Rig,
) -> None:
    """Docker refuses the first removal (its overlay mount still busy right after the
    stop): the container goes all the same, and the name is free for a define."""
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    await rig.run(command(Undefine, "web"))
    rig.host.driver.failures["remove"] = VirtError(
        ErrorCode.OPERATION_FAILED, "unlinkat …/merged: device or resource busy"
    )
    await rig.run(command(Shutdown, "web"))
    assert rig.host.driver.calls.count("remove") == 2
    assert rig.host.driver.containers == {}
    assert rig.host.domains.by_name("web") is None
    await rig.run(command(Define, spec=SPEC))


async def test_a_container_left_by_a_gone_domain_never_blocks_a_define(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker refused every removal of a stopped transient domain's container: a define
    of that name removes it first."""
    monkeypatch.setattr(monitor, "DISCARD_TRIES", 1)
    await rig.run(command(CreateXml, spec=SPEC))
    rig.host.driver.failures["remove"] = VirtError(ErrorCode.OPERATION_FAILED, "busy")
    await rig.run(command(Destroy, "web"))
    (left,) = rig.host.driver.containers.values()
    record = await rig.run(command(Define, spec=SPEC))
    (container,) = rig.host.driver.containers.values()
    assert container.uuid == record.uuid != left.uuid


async def test_a_container_docker_made_for_a_failed_define_never_blocks_a_define(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker made the container but its answer was lost (the engine restarting): the
    define failed, and the next define of that name removes the container the agent
    made, instead of failing on Docker's name conflict."""
    rig.host.driver.lost["create"] = VirtError(
        ErrorCode.OPERATION_FAILED, "Cannot connect to the Docker daemon"
    )
    # Docker is away for the failed define's own clean-up too
    monkeypatch.setattr(rig.host.monitor, "discard_made", lambda name, uuid: None)
    failed = command(Define, spec=SPEC)
    with pytest.raises(VirtError):
        await rig.run(failed)
    rig.host.store.record_reply(failed.id, b"{}")
    assert rig.host.domains.by_name("web") is None
    (left,) = rig.host.driver.containers.values()
    record = await rig.run(command(Define, spec=SPEC))
    (container,) = rig.host.driver.containers.values()
    assert container.uuid == record.uuid != left.uuid


async def test_a_define_whose_container_docker_lost_fails_and_defines_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker answered the create, then restarted without the container and without
    reporting it: the define fails, publishes nothing and leaves no domain behind."""
    monkeypatch.setattr(operations, "EVENT_WAIT_S", 0.2)
    driver = rig.host.driver
    create = driver.create

    async def create_and_lose(name: str, uuid: UUID, spec: DomainSpec) -> str:
        with monkeypatch.context() as muted:
            muted.setattr(driver, "_emit", lambda *_, **__: None)
            handle = await create(name, uuid, spec)
        del driver.containers[handle]
        return handle

    monkeypatch.setattr(driver, "create", create_and_lose)
    with pytest.raises(VirtError) as failed:
        await rig.run(command(Define, spec=SPEC))
    assert failed.value.code == ErrorCode.OPERATION_FAILED
    assert "lost the container" in failed.value.detail
    assert rig.host.domains.by_name("web") is None
    assert rig.events() == []


async def test_a_destroy_docker_answered_without_acting_fails(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker, its engine going down, answered the kill and left the container running:
    after the grace period the re-read finds it up, and the destroy fails instead of
    answering ok with no event."""
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    monkeypatch.setattr(operations, "EVENT_WAIT_S", 0.2)

    async def kill_unheard(handle: str) -> None:
        return

    monkeypatch.setattr(rig.host.driver, "kill", kill_unheard)
    with pytest.raises(VirtError) as failed:
        await rig.run(command(Destroy, "web"))
    assert failed.value.code == ErrorCode.OPERATION_FAILED
    assert "still running" in failed.value.detail
    web = rig.host.domains.by_name("web")
    assert web is not None and web.active
    assert [event.lifecycle for event in rig.events()][-1] is Lifecycle.STARTED_BOOTED


async def _next_agent(rig: Rig) -> Monitor:
    """The monitor of an agent started on the rig's store: caught up (intents adopted,
    Docker's events replayed, domains re-listed), its stream then ended."""
    domains = DomainTable()
    for domain in rig.host.store.domains():
        domains.add(domain)
    restarted = Monitor("h1", domains, rig.host.store, rig.host.driver, lambda: None)
    running = asyncio.create_task(restarted.run())
    try:
        await asyncio.wait_for(restarted.connected.wait(), WAIT_S)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    return restarted


async def _reboot_with(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, restart: Callable[[str, int], Awaitable[None]]
) -> Reboot:
    """Reboot 'web' through ``restart``, Docker's events of it muted (the engine going
    down) and kept in ``rig.muted``."""
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    monkeypatch.setattr(operations, "EVENT_WAIT_S", 0.1)
    driver = rig.host.driver
    monkeypatch.setattr(driver._events, "put_nowait", rig.muted.append)
    monkeypatch.setattr(driver, "restart", restart)
    reboot = command(Reboot, "web", timeout_s=0)
    await rig.run(reboot)
    return reboot


async def test_a_reboot_docker_answered_without_acting_fails(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker answered the restart and left the old init running: the reboot fails
    instead of answering ok with no event."""

    async def restart_unheard(handle: str, timeout_s: int = 10) -> None:
        return

    with pytest.raises(VirtError) as failed:
        await _reboot_with(rig, monkeypatch, restart_unheard)
    assert failed.value.code == ErrorCode.OPERATION_FAILED
    assert "did not reboot: it is running its old init" in failed.value.detail
    web = rig.host.domains.by_name("web")
    assert web is not None and web.state is DomainState.RUNNING


async def test_a_reboot_whose_report_was_lost_is_reported_from_the_new_init(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker restarted the domain and its report never came: the re-read finds a new
    init and reports the reboot, credited to the command. A replay of Docker's events
    afterwards reports none of what the re-read showed."""
    reboot = await _reboot_with(rig, monkeypatch, rig.host.driver.restart)
    assert [(e.origin, e.cause) for e in rig.reboots()] == [("reconcile", reboot.id)]
    assert rig.events()[-1].lifecycle is Lifecycle.STARTED_BOOTED
    assert [event.action for event in rig.muted] == ["kill", "die", "stop", "start", "restart"]
    for event in rig.muted:
        await rig.host.monitor.apply(event, "reconcile")
    assert len(rig.reboots()) == 1
    assert rig.events()[-1].lifecycle is Lifecycle.STARTED_BOOTED


async def test_a_reboot_whose_domain_stopped_on_the_way_fails_and_reports_the_stop(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker answered the restart and the domain went down with its engine: the
    reboot fails, and the stop is reported as no doing of it."""
    driver = rig.host.driver

    async def restart_then_down(handle: str, timeout_s: int = 10) -> None:
        container = driver._get(handle)
        container.status, container.pid, container.exit_code = "exited", 0, 143

    with pytest.raises(VirtError) as failed:
        await _reboot_with(rig, monkeypatch, restart_then_down)
    assert failed.value.code == ErrorCode.OPERATION_FAILED
    assert "did not reboot: it is shut off" in failed.value.detail
    stop = rig.events()[-1]
    assert stop.event == "stopped" and (stop.origin, stop.cause) == ("reconcile", None)


async def test_a_suspend_whose_domain_went_down_instead_fails(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker answered the pause and the domain went down with its engine, the reports
    lost: the re-read finds it shut off, and the suspend fails instead of answering ok
    with no event; the stop is reported as no doing of it."""
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    monkeypatch.setattr(operations, "EVENT_WAIT_S", 0.1)
    driver = rig.host.driver
    monkeypatch.setattr(driver._events, "put_nowait", lambda event: None)

    async def pause_then_down(handle: str) -> None:
        container = driver._get(handle)
        container.status, container.pid, container.exit_code = "exited", 0, 137

    monkeypatch.setattr(driver, "pause", pause_then_down)
    with pytest.raises(VirtError) as failed:
        await rig.run(command(Suspend, "web"))
    assert failed.value.code == ErrorCode.OPERATION_FAILED
    assert failed.value.detail == "Docker answered, and domain 'web' is shutoff"
    stop = rig.events()[-1]
    assert stop.event == "stopped" and (stop.origin, stop.cause) == ("reconcile", None)


async def test_a_reboot_replayed_to_the_next_agent_is_reported_once(rig: Rig) -> None:
    """An agent started afterwards reads Docker's events again from the last one applied,
    by Docker's times, which concurrent events need not have in the order they came: a
    restart reported already can be among them. The domain runs the init that reboot
    reported: no second reboot."""
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    before_ns = time.time_ns()
    reboot = command(Reboot, "web", timeout_s=0)
    await rig.run(reboot)
    with rig.host.store.transaction() as tx:
        tx.set_counter(monitor.DOCKER_TIME, before_ns)
    await _next_agent(rig)
    assert [(e.origin, e.cause) for e in rig.reboots()] == [("agent", reboot.id)]


async def test_a_reboot_docker_goes_on_with_after_the_agent_died_is_reported_as_one(
    rig: Rig,
) -> None:
    """The agent died during Docker's restart of a domain; the next one, re-listing while
    the container is between its stop and its start, reports no stop: Docker's restart
    goes on without the agent, and its report is the reboot, credited to the command."""
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    web = rig.host.domains.by_name("web")
    assert web is not None and web.handle is not None
    with rig.host.store.transaction() as tx:
        tx.intend("cmd-reboot", web.uuid, Mode.REBOOT.value, [Special.REBOOT.name])
    restarted = await _next_agent(rig)
    container = rig.host.driver.containers[web.handle]
    container.status, container.pid, container.exit_code = "exited", 0, 137
    await restarted.reconcile()
    assert [e.lifecycle for e in rig.events()][-1] is Lifecycle.STARTED_BOOTED
    container.status, container.pid = "running", 4242
    report = RuntimeEvent("restart", web.handle, web.uuid, "web", time.time_ns(), pid=4242)
    await restarted.apply(report)
    await restarted.reconcile()
    assert [e.lifecycle for e in rig.events()][-1] is Lifecycle.STARTED_BOOTED
    assert [(e.origin, e.cause) for e in rig.reboots()] == [("agent", "cmd-reboot")]


async def test_a_define_a_relist_reported_is_reported_once_by_the_next_agent_too(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker's create event did not come in time: the re-read reported the define. An
    agent started afterwards reads Docker's events again from the last one applied,
    that create event among them, and reports no second define."""
    monkeypatch.setattr(operations, "EVENT_WAIT_S", 0.05)
    await rig.run(command(Define, spec={**SPEC, "name": "first"}))
    driver = rig.host.driver
    create = driver.create

    async def create_unreported(name: str, uuid: UUID, spec: DomainSpec) -> str:
        with monkeypatch.context() as muted:
            muted.setattr(driver._events, "put_nowait", lambda event: None)
            return await create(name, uuid, spec)

    monkeypatch.setattr(driver, "create", create_unreported)
    define = command(Define, spec=SPEC)
    await rig.run(define)
    await _next_agent(rig)
    added = [e for e in rig.events() if e.lifecycle is Lifecycle.DEFINED_ADDED]
    assert [(e.domain.name, e.origin, e.cause) for e in added][1:] == [
        ("web", "reconcile", define.id)
    ]


async def test_a_failed_define_removes_the_container_docker_made_unanswered(rig: Rig) -> None:
    rig.host.driver.lost["create"] = VirtError(ErrorCode.OPERATION_FAILED, "connection reset")
    with pytest.raises(VirtError):
        await rig.run(command(Define, spec=SPEC))
    await asyncio.wait_for(rig.host.monitor.name_free("web"), WAIT_S)
    assert rig.host.driver.containers == {}


async def test_an_undefine_whose_removal_docker_did_but_never_answered_succeeds(
    rig: Rig,
) -> None:
    """Docker removed the shut-off domain's container and lost its answer: the undefine
    answers success, once, credited with the removal, and the name is free."""
    await rig.run(command(Define, spec=SPEC))
    rig.host.driver.lost["remove"] = VirtError(ErrorCode.OPERATION_FAILED, "connection reset")
    undefine = command(Undefine, "web")
    record = await rig.run(undefine)
    assert record.name == "web" and not record.persistent
    assert rig.host.domains.by_name("web") is None and rig.host.driver.containers == {}
    removed = [e for e in rig.events() if e.lifecycle is Lifecycle.UNDEFINED_REMOVED]
    assert [(e.origin, e.cause) for e in removed] == [("agent", undefine.id)]
    await rig.run(command(Define, spec=SPEC))


async def test_an_undefine_docker_refuses_for_a_while_removes_the_container(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker refuses the removal once (restarting): asked again by the container's id,
    the container goes and the undefine succeeds."""
    monkeypatch.setattr(monitor, "DISCARD_DELAY_S", 0.01)
    await rig.run(command(Define, spec=SPEC))
    rig.host.driver.failures["remove"] = VirtError(ErrorCode.OPERATION_FAILED, "restarting")
    await rig.run(command(Undefine, "web"))
    assert rig.host.driver.calls.count("remove") == 2
    assert rig.host.driver.containers == {}
    assert rig.host.domains.by_name("web") is None


OTHER_UUID = "6f1c2d3e-0000-4000-8000-000000000004"


@pytest.mark.parametrize(
    ("first", "retried"),
    [
        # a create_xml makes a running transient domain, never a defined shut-off one
        (command(Define, spec=SPEC), command(CreateXml, spec=SPEC)),
        # a define with a UUID makes that UUID's domain, not one of another
        (command(Define, spec=SPEC), command(Define, spec={**SPEC, "uuid": OTHER_UUID})),
        (command(CreateXml, spec=SPEC), command(CreateXml, spec={**SPEC, "uuid": OTHER_UUID})),
    ],
)
async def test_a_retry_meeting_a_domain_it_cannot_have_made_is_refused(
    rig: Rig, first: Define | CreateXml, retried: Define | CreateXml
) -> None:
    await rig.run(first)
    with pytest.raises(VirtError) as refused:
        await rig.run(retried, retry=True)
    assert refused.value.code is ErrorCode.OPERATION_FAILED


async def test_a_create_xml_of_a_running_domain_is_refused_without_asking_docker(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await rig.run(command(CreateXml, spec=SPEC))
    asked: list[str] = []
    observe = rig.host.driver.observe

    async def counted(handle: str) -> object:
        asked.append(handle)
        return await observe(handle)

    monkeypatch.setattr(rig.host.driver, "observe", counted)
    with pytest.raises(VirtError) as refused:
        await rig.run(command(CreateXml, spec={**SPEC, "uuid": str(running.uuid)}))
    assert (refused.value.code, refused.value.detail) == (
        ErrorCode.OPERATION_INVALID,
        "domain 'web' is already active",
    )
    assert asked == []


@pytest.mark.parametrize(
    ("model", "spec", "code"),
    [
        (Define, SPEC, ErrorCode.OPERATION_FAILED),
        (CreateXml, SPEC, ErrorCode.OPERATION_FAILED),
        (
            CreateXml,
            {**SPEC, "uuid": "6f1c2d3e-0000-4000-8000-000000000002"},
            ErrorCode.OPERATION_INVALID,
        ),
    ],
)
async def test_a_retried_definition_of_the_same_spec_answers_success(
    rig: Rig, model: type[Define | CreateXml], spec: dict[str, object], code: ErrorCode
) -> None:
    """A retry meets its own domain (its intent lost, as when the agent died before
    marking it) and answers with it; the same definition sent anew is refused as libvirt
    refuses it (another UUID, or the domain already running)."""
    defining = command(model, spec=spec)
    first = await rig.run(defining)
    rig.host.store.db.execute("DELETE FROM intents WHERE command_id = ?", (defining.id,))
    again = await rig.run(defining, retry=True)
    assert again == first
    with pytest.raises(VirtError) as refused:
        await rig.run(defining)
    assert refused.value.code is code


@pytest.mark.parametrize("model", [Destroy, Shutdown])
async def test_a_retried_stop_of_a_stopped_domain_answers_success(
    rig: Rig, model: type[Destroy | Shutdown]
) -> None:
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    stop = command(model, "web")
    await rig.run(stop)
    record = await rig.run(stop, retry=True)
    assert record.state == DomainState.SHUTOFF
    with pytest.raises(VirtError) as refused:
        await rig.run(command(model, "web"))
    assert refused.value.code is ErrorCode.OPERATION_INVALID


async def test_a_retried_undefine_of_a_gone_domain_answers_its_last_record(rig: Rig) -> None:
    first = await rig.run(command(Define, spec=SPEC))
    undefine = command(Undefine, "web")
    await rig.run(undefine)
    record = await rig.run(undefine, retry=True)
    assert record.uuid == first.uuid
    with pytest.raises(VirtError) as refused:
        await rig.run(command(Undefine, "web"))
    assert refused.value.code is ErrorCode.NO_DOMAIN


async def test_autostart_starts_what_is_marked_and_survives_a_failure(rig: Rig) -> None:
    await rig.run(command(Define, spec={**SPEC, "autostart": True}))
    await rig.run(command(Define, spec={**SPEC, "name": "db", "autostart": True}))
    await rig.run(command(Define, spec={**SPEC, "name": "off"}))
    rig.host.driver.failures["start"] = VirtError(ErrorCode.OPERATION_FAILED, "no")
    await asyncio.wait_for(rig.operations.autostart(), WAIT_S)
    active = sorted(d.name for d in rig.host.domains if d.active)
    assert len(active) == 1 and active[0] in ("web", "db")
    assert rig.host.domains.by_name("off") is not None


def test_every_command_model_has_a_handler() -> None:
    importlib.import_module("agent.host.agent")  # the agent's handler modules register
    models = set(get_args(get_args(Command)[0]))
    assert set(HANDLERS) == models
    assert all(HANDLERS[model].__name__ != "_run" for model in models)


async def test_a_refusal_for_a_container_gone_down_unreported_follows_the_stop_it_shows(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker's engine restarted and its report of the container's end was never read:
    Docker refuses the pause of a container that is not running, and the domain's stop
    is published, external, before that refusal is answered."""
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    driver = rig.host.driver
    (container,) = driver.containers.values()
    with monkeypatch.context() as muted:
        muted.setattr(driver._events, "put_nowait", lambda event: None)
        await driver.kill(container.handle)
    with pytest.raises(VirtError) as refused:
        await rig.run(command(Suspend, "web"))
    assert refused.value.code is ErrorCode.OPERATION_INVALID
    stopped = rig.events()[-1]
    assert stopped.lifecycle.event == "stopped"
    assert (stopped.origin, stopped.cause) == ("reconcile", None)
    domain = rig.host.domains.by_name("web")
    assert domain is not None and domain.state is DomainState.SHUTOFF
