"""The fleet as the dashboard shows it: hosts from presence, their domains from one
listing and then from events, and the recent events; every change pushed to whoever
watches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from agent.client import Connection, HostRegistry, HostStatus, Replayed, ReplyError
from agent.client.history import EventHistory
from agent.errors import VirtbusError
from schemas.codes import DomainState, ErrorCode, Lifecycle
from schemas.commands import ListDomains, Lookup
from schemas.domain import DomainRecord
from schemas.events import AgentEvent, DomainEventBase, Event, LifecycleEvent
from schemas.replies import DomainList

log = logging.getLogger(__name__)
Presence = Literal["alive", "missing", "offline"]
PRESENCE: dict[str, Presence] = {"alive": "alive", "lost": "missing", "offline": "offline"}
RECENT_EVENTS = 2000
HISTORY_WINDOW = timedelta(hours=1)
"""The feed opens with the events of the last hour that the history still holds, the
newest ``RECENT_EVENTS`` of them at most: a busy fleet's hour is not replayed whole."""
SUBSCRIBER_BACKLOG = 20_000
"""A page that falls this far behind is dropped; it reconnects and starts over."""


def state_name(state: int) -> str:
    """libvirt's state number as the page names it (``running``, ``shutoff``…)."""
    try:
        return DomainState(state).name.lower()
    except ValueError:
        return "nostate"


def record_json(record: DomainRecord) -> dict[str, Any]:
    return {**record.model_dump(mode="json"), "state_name": state_name(record.state)}


def event_json(replayed: Replayed) -> dict[str, Any]:
    event = replayed.event
    shown: dict[str, Any] = {"offset": replayed.offset, **event.model_dump(mode="json")}
    if isinstance(event, LifecycleEvent):
        shown["type"] = f"lifecycle.{event.event}"
    elif isinstance(event, AgentEvent):
        shown["type"] = f"agent.{event.state}"
    else:
        shown["type"] = event.kind
    return shown


@dataclass
class HostView:
    status: HostStatus
    domains: dict[str, DomainRecord] = field(default_factory=dict)
    listed_at: datetime | None = None
    """When the domains were last listed: older events do not change them."""

    def json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for record in self.domains.values():
            name = state_name(record.state)
            counts[name] = counts.get(name, 0) + 1
        return {
            "host": self.status.host,
            "presence": PRESENCE[self.status.state],
            "last_seen": self.status.last_seen.isoformat(),
            "groups": self.status.groups,
            "agent_version": self.status.agent_version,
            "engine_version": self.status.engine_version,
            "domains": self.status.domains if self.listed_at is None else len(self.domains),
            "states": counts,
        }


class Fleet:
    """The fleet model. Guarantees: each change is pushed to every subscriber in the
    order it was made; a subscriber that cannot keep up is dropped (its queue gets
    ``None``); broker losses and recoveries are pushed as ``broker`` messages."""

    def __init__(self, conn: Connection, list_timeout_s: float = 5.0) -> None:
        self._conn = conn
        self._list_timeout_s = list_timeout_s
        self.hosts: dict[str, HostView] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.broker: dict[str, Any] = {"connected": False, "message": "connecting"}
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._registry: HostRegistry | None = None
        self._history: EventHistory | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._follower: asyncio.Task[None] | None = None
        self._listed_all = False
        """Until the first listing of the fleet, a host that appears waits for it instead
        of being listed alone."""

    @property
    def registry(self) -> HostRegistry:
        assert self._registry is not None
        return self._registry

    async def start(self, discover_s: float = 2.0) -> None:
        self._history = self._conn.history(
            datetime.now(UTC) - HISTORY_WINDOW,
            presence=True,
            on_state=self._broker_state,
            last=RECENT_EVENTS,
        )
        await self._history.start()
        self._registry = self._conn.hosts(discover_s=0)
        self._registry.watch(self._presence)
        await self._registry.__aenter__()
        self._follower = asyncio.create_task(self._follow(self._history))
        await self._registry.discover(discover_s)
        await self.list_fleet()
        self._listed_all = True

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._follower] if self._follower else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._registry is not None:
            await self._registry.__aexit__(None, None, None)
        if self._history is not None:
            await self._history.stop()
        for queue in self._subscribers:
            queue.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[str | None]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        self._subscribers.discard(queue)

    def snapshot(self) -> dict[str, Any]:
        return {
            "hosts": [view.json() for view in sorted(self.hosts.values(), key=_by_name)],
            "broker": self.broker,
        }

    def _push(self, kind: str, body: dict[str, Any]) -> None:
        message = json.dumps({"type": kind, **body})
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)

    def _broker_state(self, connected: bool, why: str) -> None:
        self.broker = {"connected": connected, "message": why}
        self._push("broker", self.broker)

    def _presence(self, status: HostStatus) -> None:
        view = self.hosts.get(status.host)
        if view is None:
            view = self.hosts[status.host] = HostView(status)
            if status.state == "alive" and self._listed_all:
                self._spawn(self.list_host(status.host))
        else:
            came_back = view.status.state != "alive" and status.state == "alive"
            view.status = status
            if came_back and self._listed_all:
                self._spawn(self.list_host(status.host))
        self._push("host", {"host": view.json()})

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def list_fleet(self) -> None:
        """Every known host's domains, in one broadcast."""
        started = datetime.now(UTC)
        result = await self._conn.broadcast(
            ListDomains, expect=self.registry.alive(), timeout_s=self._list_timeout_s
        )
        for host, reply in result.replies.items():
            if isinstance(reply.result, DomainList):
                self._listed(host, reply.result.domains, started)

    async def list_host(self, host: str) -> None:
        started = datetime.now(UTC)
        try:
            listed = await self._conn.call(host, ListDomains, timeout_s=self._list_timeout_s)
        except VirtbusError as error:
            log.info("could not list the domains of %s: %s", host, error)
            return
        if isinstance(listed, DomainList):
            self._listed(host, listed.domains, started)

    def _listed(self, host: str, records: list[DomainRecord], at: datetime) -> None:
        view = self.hosts.get(host)
        if view is None:
            return
        view.domains = {str(record.uuid): record for record in records}
        view.listed_at = at
        self._push("domains", {"host": view.json(), "domains": [record_json(r) for r in records]})

    async def _follow(self, history: EventHistory) -> None:
        async for replayed in history:
            shown = event_json(replayed)
            self.recent.append(shown)
            self._push("event", {"event": shown})
            if isinstance(replayed.event, DomainEventBase):
                self._apply(replayed.event)

    def _apply(self, event: Event) -> None:
        assert isinstance(event, DomainEventBase)
        view = self.hosts.get(event.host)
        if view is None or view.listed_at is None or event.time < view.listed_at:
            return
        key = str(event.domain.uuid)
        record = view.domains.get(key)
        outcome = (
            Lifecycle.of(event.event, event.detail).outcome
            if isinstance(event, LifecycleEvent)
            else None
        )
        if record is not None and outcome is not None:
            state, reason = outcome
            changes: dict[str, Any] = {"state": int(state), "reason": int(reason)}
            changes["id"] = event.domain.id
            if state == DomainState.SHUTOFF and not record.persistent:
                del view.domains[key]
                self._push("removed", {"host": view.json(), "uuid": key})
                return
            view.domains[key] = record = record.model_copy(update=changes)
            self._push("domain", {"host": view.json(), "domain": record_json(record)})
            return
        self._spawn(self._refresh(event.host, key))

    async def _refresh(self, host: str, key: str) -> None:
        view = self.hosts.get(host)
        if view is None:
            return
        try:
            record = await self._conn.call(host, Lookup, target={"uuid": key}, timeout_s=5)
        except ReplyError as error:
            if error.code == ErrorCode.NO_DOMAIN and view.domains.pop(key, None) is not None:
                self._push("removed", {"host": view.json(), "uuid": key})
            return
        except VirtbusError:
            return
        if isinstance(record, DomainRecord):
            view.domains[key] = record
            self._push("domain", {"host": view.json(), "domain": record_json(record)})


def _by_name(view: HostView) -> str:
    return view.status.host
