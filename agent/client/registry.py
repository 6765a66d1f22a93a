"""The fleet as presence events tell it: which hosts are alive, offline or lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from agent.errors import OperationTimeout
from schemas.commands import GetHostInfo
from schemas.events import AgentEvent, Presence
from schemas.replies import HostInfo

if TYPE_CHECKING:
    from agent.client.connection import Connection

HostState = Literal["alive", "offline", "lost"]
Listener = Callable[["HostStatus"], None]
"""Told each host whose status changed, as it changes."""


@dataclass
class HostStatus:
    host: str
    state: HostState
    last_seen: datetime
    agent_version: str = ""
    engine_version: str = ""
    groups: list[str] = field(default_factory=list)
    heartbeat_s: float = 10.0
    domains: int = 0


class HostRegistry:
    """The fleet as presence events tell it: a host that misses ``misses`` heartbeats in
    a row is lost; one that said goodbye is offline. ``async with conn.hosts() as fleet``
    also asks every agent to introduce itself, for ``discover_s``."""

    def __init__(self, conn: Connection, misses: int, discover_s: float) -> None:
        self._conn = conn
        self._misses = misses
        self._discover_s = discover_s
        self.hosts: dict[str, HostStatus] = {}
        self._changed = asyncio.Condition()
        self._stream = conn.events(kind="agent")
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Listener] = []

    async def __aenter__(self) -> HostRegistry:
        await self._stream.start()
        self._tasks = [
            asyncio.create_task(self._follow()),
            asyncio.create_task(self._watch()),
        ]
        if self._discover_s > 0:
            await self.discover(self._discover_s)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stream.stop()

    def watch(self, listener: Listener) -> None:
        """Call ``listener`` with each host whose status changes, from now on."""
        self._listeners.append(listener)

    def _changed_host(self, status: HostStatus) -> None:
        for listener in self._listeners:
            listener(status)

    async def discover(self, timeout_s: float) -> None:
        """Ask every agent for its host facts; the answers join the registry."""
        result = await self._conn.broadcast(GetHostInfo, timeout_s=timeout_s)
        now = datetime.now(UTC)
        async with self._changed:
            for host, reply in result.replies.items():
                if isinstance(reply.result, HostInfo):
                    info = reply.result
                    self.hosts[host] = HostStatus(
                        host=host,
                        state="alive",
                        last_seen=now,
                        agent_version=info.agent_version,
                        engine_version=info.engine_version,
                        groups=list(info.groups),
                        heartbeat_s=info.heartbeat_s,
                        domains=info.domains.total,
                    )
                    self._changed_host(self.hosts[host])
            self._changed.notify_all()

    def alive(self, group: str | None = None) -> set[str]:
        return {
            s.host
            for s in self.hosts.values()
            if s.state == "alive" and (group is None or group in s.groups)
        }

    async def wait_for(
        self, predicate: Callable[[dict[str, HostStatus]], bool], timeout_s: float
    ) -> None:
        """Until ``predicate`` holds of the hosts; OperationTimeout after ``timeout_s``."""
        try:
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: predicate(self.hosts)), timeout_s
                )
        except TimeoutError:
            raise OperationTimeout(
                f"the fleet did not change as awaited within {timeout_s:g} s"
            ) from None

    async def _follow(self) -> None:
        async for event in self._stream:
            if isinstance(event, AgentEvent):
                await self._seen(event)

    async def _seen(self, event: AgentEvent) -> None:
        states: dict[Presence, HostState] = {
            "online": "alive",
            "heartbeat": "alive",
            "offline": "offline",
        }
        async with self._changed:
            before = self.hosts.get(event.host)
            self.hosts[event.host] = status = HostStatus(
                host=event.host,
                state=states[event.state],
                last_seen=event.time,
                agent_version=event.agent_version,
                engine_version=before.engine_version if before is not None else "",
                groups=list(event.groups),
                heartbeat_s=event.heartbeat_s,
                domains=event.domains,
            )
            self._changed_host(status)
            self._changed.notify_all()

    async def _watch(self) -> None:
        while True:
            beats = [s.heartbeat_s for s in self.hosts.values()]
            await asyncio.sleep(max(min(beats, default=1.0) / 2, 0.05))
            now = datetime.now(UTC)
            async with self._changed:
                for status in self.hosts.values():
                    silent_s = (now - status.last_seen).total_seconds()
                    if status.state == "alive" and silent_s > self._misses * status.heartbeat_s:
                        status.state = "lost"
                        self._changed_host(status)
                        self._changed.notify_all()
