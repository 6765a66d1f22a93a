"""A Docker engine that keeps its socket but stops answering (here: dockerd stopped with
SIGSTOP): a command answers OPERATION_TIMEOUT once the agent's bound on the call has
passed, and once the engine answers again the agent holds what Docker holds and goes on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

import aiodocker
import pytest

from schemas.codes import DomainState
from schemas.events import LifecycleEvent
from tests.environment import unavailable
from tests.support import BusPeer, EventRecorder
from tests.support.fleet import Fleet, Host, spec

pytestmark = pytest.mark.integration

BOUND_S = 5.0
"""Every Docker call of the agent gets it, its start and the domain's creation too: a
loaded machine must not reach it before dockerd is stopped."""
FROZEN_AT_MOST_S = 30
"""dockerd is let go by a process of its own after this long, whatever becomes of the test."""


@pytest.fixture
def frozen_engine() -> Iterator[list[int]]:
    """Stops dockerd (SIGSTOP) and makes sure it runs again: at teardown, and from a
    detached watchdog if the test process itself dies."""
    found = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True)
    pids = [int(pid) for pid in found.stdout.split()]
    if not pids:
        unavailable("a dockerd process this test may stop")
    watchdog = subprocess.Popen(
        ["sh", "-c", f"sleep {FROZEN_AT_MOST_S}; kill -CONT {' '.join(map(str, pids))}"],
        start_new_session=True,
    )
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield pids
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        watchdog.kill()
        watchdog.wait()


async def test_a_command_on_an_engine_that_does_not_answer_times_out(
    fleet: Fleet, peer: BusPeer, docker: aiodocker.Docker, request: pytest.FixtureRequest
) -> None:
    agent = await fleet.start(docker_timeout_s=BOUND_S)
    recorder = await EventRecorder(peer.channel, f"{agent.host}.#").start()
    host = Host(agent.host, peer, recorder, agent)
    await host.ok("domain.define", args={"spec": spec("web")})
    await host.ok("domain.create", "web")
    container = await docker.containers.get(host.container_name("web"))

    pids = request.getfixturevalue("frozen_engine")
    reply = await host.call("domain.suspend", "web")
    for pid in pids:
        os.kill(pid, signal.SIGCONT)

    assert not reply["ok"], reply
    assert reply["error"]["code"] == "OPERATION_TIMEOUT"
    assert reply["error"]["vir_error"] == 68
    assert reply["error"]["message"] == (
        "Timed out during operation: the Docker engine did not answer within 5 s; "
        "the call may still take effect"
    )
    # dockerd may still carry out the pause it reads late; a pause of the test's own
    # settles it either way, and the agent follows what Docker reports
    with contextlib.suppress(aiodocker.DockerError):
        await container.pause()
    await host.events.wait_for(lambda e: isinstance(e, LifecycleEvent) and e.event == "suspended")
    assert (await host.ok("domain.lookup", "web"))["state"] == DomainState.PAUSED

    await host.ok("domain.destroy", "web")
    await host.ok("domain.undefine", "web")
    gone = await docker.containers.list(all=True, filters={"name": [host.container_name("web")]})
    assert gone == []
