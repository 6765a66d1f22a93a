"""What the integration tests work with: agents started in a test's fleet, one agent as
a test sees it through the bus, domain specs, and the ``virtbus`` command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.host.agent import Agent
from agent.host.config import Config
from schemas.events import DomainEvent, LifecycleEvent
from tests.support import BusPeer, EventRecorder
from tests.support.services import AMQP_URL, IMAGE, new_host

NOCMD_IMAGE = "virtbus-test:nocmd"


@dataclass
class Fleet:
    """Agents started by a test; stopped, and their containers and queues removed, after."""

    state_dir: Path
    agents: list[Agent] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)

    async def start(
        self,
        host: str | None = None,
        groups: tuple[str, ...] = (),
        **settings: Any,
    ) -> Agent:
        config = Config(
            host=host or new_host(),
            amqp_url=AMQP_URL,
            groups=list(groups),
            state_dir=self.state_dir,
            drain_s=15,
            **settings,
        )
        agent = Agent(config)
        self.hosts.add(config.host)
        await agent.start()
        self.agents.append(agent)
        return agent


def spec(name: str, *command: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "command": list(command or ("sleep", "3600")),
        **fields,
    }


def spec_xml(name: str) -> str:
    """The domain XML of a small domain: 64 MiB, one vCPU, ``sleep 3600`` in IMAGE."""
    return f"""<domain type='docker'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type>exe</type><init>sleep</init><initarg>3600</initarg></os>
  <devices>
    <filesystem type='template'><source name='{IMAGE}'/><target dir='/'/></filesystem>
  </devices>
</domain>
"""


A_WHOLE_LIFE = [
    ("defined", "added"),
    ("started", "booted"),
    ("suspended", "paused"),
    ("resumed", "unpaused"),
    ("stopped", "destroyed"),
    ("undefined", "removed"),
]
"""(event, detail) of a domain defined, started, suspended, resumed, destroyed and
undefined, as libvirt reports them."""


@dataclass
class Host:
    """One agent as a test sees it: through the bus only, plus its event stream."""

    name: str
    peer: BusPeer
    events: EventRecorder
    agent: Agent
    fences: int = 0

    async def ok(
        self, op: str, target: str | None = None, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.peer.ok(self.name, op, {"name": target} if target else None, args)

    async def call(
        self, op: str, target: str | None = None, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.peer.call(self.name, op, {"name": target} if target else None, args)

    async def fence(self) -> list[DomainEvent]:
        """Every domain event published before now, once all of them have arrived.

        Defines a throwaway domain and waits for its defined/added: events reach a
        subscriber in ``seq`` order, so whatever came before it is all there is.
        """
        self.fences += 1
        name = f"fence-{self.fences}"
        result = await self.ok("domain.define", args={"spec": spec(name)})
        fence_uuid = result["uuid"]
        await self.events.wait_for(
            lambda e: isinstance(e, LifecycleEvent) and str(e.domain.uuid) == fence_uuid
        )
        seen = self.events.domain_events()
        cut = next(
            i
            for i, e in enumerate(seen)
            if isinstance(e, LifecycleEvent) and str(e.domain.uuid) == fence_uuid
        )
        return [e for e in seen[:cut] if not e.domain.name.startswith("fence-")]

    def container_name(self, domain: str) -> str:
        return f"{self.name}.{domain}"


VIRTBUS = Path(sys.executable).parent / "virtbus"


@dataclass(frozen=True)
class Ran:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class CLI:
    def __init__(self, tmp_path: Path) -> None:
        self.env = {
            **os.environ,
            "VIRTBUS_AMQP_URL": AMQP_URL,
            "VIRTBUS_KNOWN_HOSTS": str(tmp_path / "known-hosts.json"),
        }
        self.tmp_path = tmp_path

    async def start(self, *argv: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(VIRTBUS),
            *argv,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def __call__(self, *argv: str, timeout_s: float = 60) -> Ran:
        process = await self.start(*argv)
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
        assert process.returncode is not None
        return Ran(process.returncode, out.decode(), err.decode())

    def spec_file(self, name: str, **fields: Any) -> str:
        path = self.tmp_path / f"{name}.json"
        path.write_text(json.dumps(spec(name, **fields)))
        return str(path)
