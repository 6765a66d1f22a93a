"""docs/events.md#events: every reference sequence, and every change made behind the agent's back,
checked exactly (no extra, no missing events) against a real engine and broker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiodocker
import pytest

from schemas.events import LifecycleEvent, RebootEvent
from tests.support import lifecycle
from tests.support.fleet import Host, spec

pytestmark = pytest.mark.integration

Scenario = Callable[[Host], Awaitable[None]]


async def define(host: Host) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})


async def define_again(host: Host) -> None:
    uuid = (await host.ok("domain.define", args={"spec": spec("web")}))["uuid"]
    await host.ok("domain.define", args={"spec": spec("web", "sleep", "99", uuid=uuid)})


async def start(host: Host) -> None:
    await define(host)
    await host.ok("domain.create", "web")


async def suspend_resume(host: Host) -> None:
    await start(host)
    await host.ok("domain.suspend", "web")
    await host.ok("domain.resume", "web")


async def shutdown(host: Host) -> None:
    await start(host)
    await host.ok("domain.shutdown", "web")


async def destroy(host: Host) -> None:
    await start(host)
    await host.ok("domain.destroy", "web")


async def shutdown_paused(host: Host) -> None:
    await start(host)
    await host.ok("domain.suspend", "web")
    await host.ok("domain.shutdown", "web")


async def destroy_paused(host: Host) -> None:
    await start(host)
    await host.ok("domain.suspend", "web")
    await host.ok("domain.destroy", "web")


async def undefine_shutoff(host: Host) -> None:
    await define(host)
    await host.ok("domain.undefine", "web")


async def undefine_running(host: Host) -> None:
    await start(host)
    record = await host.ok("domain.undefine", "web")
    assert record["state"] == 1 and record["persistent"] is False


async def transient(host: Host) -> None:
    await host.ok("domain.create_xml", args={"spec": spec("web")})
    await host.ok("domain.destroy", "web")


async def rename(host: Host) -> None:
    await define(host)
    await host.ok("domain.rename", "web", {"new_name": "web2"})


async def reboot(host: Host) -> None:
    await start(host)
    await host.ok("domain.reboot", "web")


SEQUENCES: list[tuple[str, Scenario, list[tuple[str, str]]]] = [
    ("define-new", define, [("defined", "added")]),
    ("define-again", define_again, [("defined", "added"), ("defined", "updated")]),
    ("start", start, [("defined", "added"), ("started", "booted")]),
    (
        "suspend-resume",
        suspend_resume,
        [
            ("defined", "added"),
            ("started", "booted"),
            ("suspended", "paused"),
            ("resumed", "unpaused"),
        ],
    ),
    ("shutdown", shutdown, [("defined", "added"), ("started", "booted"), ("stopped", "shutdown")]),
    ("destroy", destroy, [("defined", "added"), ("started", "booted"), ("stopped", "destroyed")]),
    (
        "shutdown-paused",
        shutdown_paused,
        [
            ("defined", "added"),
            ("started", "booted"),
            ("suspended", "paused"),
            ("stopped", "shutdown"),
        ],
    ),
    (
        "destroy-paused",
        destroy_paused,
        [
            ("defined", "added"),
            ("started", "booted"),
            ("suspended", "paused"),
            ("stopped", "destroyed"),
        ],
    ),
    ("undefine-shutoff", undefine_shutoff, [("defined", "added"), ("undefined", "removed")]),
    (
        "undefine-running",
        undefine_running,
        [("defined", "added"), ("started", "booted"), ("undefined", "removed")],
    ),
    ("transient", transient, [("started", "booted"), ("stopped", "destroyed")]),
    (
        "rename",
        rename,
        [("defined", "added"), ("undefined", "renamed"), ("defined", "renamed")],
    ),
    ("reboot", reboot, [("defined", "added"), ("started", "booted")]),
]


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [(scenario, expected) for _, scenario, expected in SEQUENCES],
    ids=[name for name, _, _ in SEQUENCES],
)
async def test_reference_sequence(
    host: Host, scenario: Scenario, expected: list[tuple[str, str]]
) -> None:
    await scenario(host)
    events = await host.fence()
    assert lifecycle(events) == expected
    assert all(e.origin == "agent" and e.cause for e in events)
    for event in events:
        if isinstance(event, LifecycleEvent) and event.event in ("started", "suspended"):
            assert event.domain.id > 0, event
        if isinstance(event, LifecycleEvent) and event.event in ("stopped", "defined"):
            assert event.domain.id == -1, event


async def test_reboot_is_one_reboot_event(host: Host) -> None:
    await reboot(host)
    events = await host.fence()
    assert [e.kind for e in events] == ["lifecycle", "lifecycle", "reboot"]
    assert isinstance(events[-1], RebootEvent)


async def test_rename_events_name_old_then_new(host: Host) -> None:
    await rename(host)
    events = [e for e in await host.fence() if isinstance(e, LifecycleEvent)]
    assert [e.domain.name for e in events] == ["web", "web", "web2"]
    assert len({e.domain.uuid for e in events}) == 1


async def test_undefined_running_domain_is_removed_when_it_stops(
    host: Host, docker: aiodocker.Docker
) -> None:
    await undefine_running(host)
    await host.ok("domain.destroy", "web")
    assert (await host.call("domain.lookup", "web"))["error"]["code"] == "NO_DOMAIN"
    events = await host.fence()
    assert lifecycle(events)[-2:] == [("undefined", "removed"), ("stopped", "destroyed")]
    with pytest.raises(aiodocker.DockerError) as gone:
        await docker.containers.get(host.container_name("web"))
    assert gone.value.status == 404


async def _container(
    docker: aiodocker.Docker, host: Host, name: str
) -> aiodocker.containers.DockerContainer:
    return await docker.containers.get(host.container_name(name))


async def _started(host: Host, name: str, *command: str, **fields: object) -> None:
    await host.ok("domain.define", args={"spec": spec(name, *command, **fields)})
    await host.ok("domain.create", name)


async def _stopped(host: Host, name: str) -> LifecycleEvent:
    event = await host.events.wait_for(
        lambda e: isinstance(e, LifecycleEvent) and e.event == "stopped" and e.domain.name == name
    )
    assert isinstance(event, LifecycleEvent)
    return event


BEHIND_THE_BACK: list[tuple[str, tuple[str, ...], str, int | None]] = [
    ("exit-0", ("sh", "-c", "exit 0"), "shutdown", 0),
    ("exit-3", ("sh", "-c", "exit 3"), "failed", 3),
    ("segv", ("sh", "-c", "kill -SEGV $$"), "crashed", 139),
]


@pytest.mark.parametrize(
    ("command", "detail", "exit_code"),
    [case[1:] for case in BEHIND_THE_BACK],
    ids=[case[0] for case in BEHIND_THE_BACK],
)
async def test_process_exit(
    host: Host, command: tuple[str, ...], detail: str, exit_code: int | None
) -> None:
    await host.ok("domain.define", args={"spec": spec("job", *command)})
    await host.peer.call(host.name, "domain.create", {"name": "job"})
    stopped = await _stopped(host, "job")
    assert (stopped.detail, stopped.exit_code) == (detail, exit_code)
    assert stopped.origin in ("agent", "external")
    state = await host.ok("domain.get_state", "job")
    assert state["state"] == 5


async def test_oom_kill_is_a_crash(host: Host) -> None:
    grow = 'a=xxxxxxxxxxxxxxxx; while true; do a="$a$a"; done'
    await host.ok("domain.define", args={"spec": spec("hog", "sh", "-c", grow, memory_kib=8192)})
    await host.peer.call(host.name, "domain.create", {"name": "hog"})
    stopped = await _stopped(host, "hog")
    assert stopped.detail == "crashed"
    assert (await host.ok("domain.get_state", "hog"))["reason"] == 3


async def test_docker_stop_kill_pause_behind_the_back(host: Host, docker: aiodocker.Docker) -> None:
    await _started(host, "web")
    container = await _container(docker, host, "web")
    await container.pause()
    await container.unpause()
    await container.stop(t=10)
    await container.start()
    await container.kill(signal="SIGKILL")
    await container.start()
    await container.kill(signal="SIGTERM")
    await _stopped_twice_more(host)
    events = await host.fence()
    assert lifecycle(events) == [
        ("defined", "added"),
        ("started", "booted"),
        ("suspended", "paused"),
        ("resumed", "unpaused"),
        ("stopped", "shutdown"),
        ("started", "booted"),
        ("stopped", "destroyed"),
        ("started", "booted"),
        ("stopped", "shutdown"),
    ]
    assert [e.origin for e in events[2:]] == ["external"] * 7
    assert all(e.cause is None for e in events[2:])


async def _stopped_twice_more(host: Host) -> None:
    await host.events.wait_for(
        lambda _: (
            sum(
                1
                for e in host.events.events
                if isinstance(e, LifecycleEvent) and e.event == "stopped"
            )
            >= 3
        )
    )


async def test_docker_stop_past_grace_is_destroyed(host: Host, docker: aiodocker.Docker) -> None:
    stubborn = 'trap "" TERM; while true; do sleep 1; done'
    await _started(host, "stubborn", "sh", "-c", stubborn, init=False)
    container = await _container(docker, host, "stubborn")
    await container.stop(t=1)
    stopped = await _stopped(host, "stubborn")
    assert stopped.detail == "destroyed"


async def test_external_restart_reports_each_step(host: Host, docker: aiodocker.Docker) -> None:
    await _started(host, "web")
    container = await _container(docker, host, "web")
    await container.restart(timeout=10)
    await host.events.wait_for(lambda e: isinstance(e, RebootEvent))
    events = await host.fence()
    assert [(e.kind, getattr(e, "detail", None)) for e in events[2:]] == [
        ("lifecycle", "shutdown"),
        ("lifecycle", "booted"),
        ("reboot", None),
    ]


async def test_new_definition_of_running_domain_applies_at_next_start(
    host: Host, docker: aiodocker.Docker
) -> None:
    uuid = (await host.ok("domain.define", args={"spec": spec("web")}))["uuid"]
    await host.ok("domain.create", "web")
    updated = await host.ok("domain.define", args={"spec": spec("web", "sleep", "1234", uuid=uuid)})
    assert updated["state"] == 1
    before = await (await _container(docker, host, "web")).show()
    assert before["Config"]["Cmd"] == ["sleep", "3600"]
    await host.ok("domain.destroy", "web")
    restarted = await host.ok("domain.create", "web")
    after = await (await _container(docker, host, "web")).show()
    assert after["Config"]["Cmd"] == ["sleep", "1234"]
    assert after["Config"]["Labels"]["virtbus.uuid"] == uuid == restarted["uuid"]
    assert lifecycle(await host.fence()) == [
        ("defined", "added"),
        ("started", "booted"),
        ("defined", "updated"),
        ("stopped", "destroyed"),
        ("started", "booted"),
    ]


async def test_create_paused_reports_start_then_suspend(host: Host) -> None:
    record = await host.ok("domain.create_xml", args={"spec": spec("web"), "start_paused": True})
    assert (record["state"], record["reason"]) == (3, 1)
    assert lifecycle(await host.fence()) == [("started", "booted"), ("suspended", "paused")]
