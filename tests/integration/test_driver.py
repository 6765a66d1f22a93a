"""The Docker driver against the real engine and kernel."""

from __future__ import annotations

import aiodocker
import pytest

from agent.host.driver import _frozen
from schemas.events import LifecycleEvent
from tests.support.fleet import Host, spec

pytestmark = pytest.mark.integration


async def test_the_freezer_tells_a_paused_domain(host: Host, docker: aiodocker.Docker) -> None:
    await host.ok("domain.define", args={"spec": spec("frz")})
    await host.ok("domain.create", "frz")
    container = await docker.containers.get(host.container_name("frz"))
    handle, pid = container.id, int(container["State"]["Pid"])
    assert _frozen(handle, pid) is False
    await container.pause()
    await host.events.wait_for(lambda e: isinstance(e, LifecycleEvent) and e.event == "suspended")
    assert _frozen(handle, pid) is True
    await container.unpause()
    await host.events.wait_for(lambda e: isinstance(e, LifecycleEvent) and e.event == "resumed")
    assert _frozen(handle, pid) is False
