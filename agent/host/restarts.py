"""Crash restarts of ``on_crash: restart`` domains, done by the agent, never by Docker.

A domain that crashes or fails stays active, as libvirt keeps a domain with
``on_crash`` ``restart`` running: after a back-off its container is started again once
the host policy (mounts included) allows it, and a ``reboot`` event says so. A refused or
failed restart ends in the ``stopped`` event the crash would have had. A destroy or a
shutdown cancels a restart still waiting; one already starting finishes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from uuid import UUID

from agent.host.domains import DomainObj
from schemas.codes import Lifecycle

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 10.0
RESET_AFTER_S = 10.0
"""A domain that ran this long before crashing is restarted after FIRST_DELAY_S again."""

Restart = Callable[[DomainObj, Lifecycle, int | None], Awaitable[None]]
"""Restart the domain now; on refusal or failure, report the crash's ``stopped`` event
(the transition and exit code given)."""


@dataclass
class _Pending:
    task: asyncio.Task[None]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    starting: bool = False


class Restarts:
    def __init__(
        self,
        first_delay_s: float = FIRST_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
        reset_after_s: float = RESET_AFTER_S,
    ) -> None:
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._reset_after_s = reset_after_s
        self._restart: Restart | None = None
        self._pending: dict[UUID, _Pending] = {}
        self._delays: dict[UUID, tuple[float, float]] = {}
        """Domain → (its last delay, when that restart ran)."""
        self._held: dict[UUID, int] = {}

    def bind(self, restart: Restart) -> None:
        self._restart = restart

    def pending(self, uuid: UUID) -> bool:
        return uuid in self._pending

    def schedule(self, domain: DomainObj, crash: Lifecycle, exit_code: int | None) -> bool:
        """Restart the domain after its back-off (True at once if a restart waits already);
        False if it may not be restarted now (an operation holds it, or nothing restarts
        domains yet)."""
        if self._restart is None or self._held.get(domain.uuid):
            return False
        waiting = self._pending.get(domain.uuid)
        if waiting is not None and not waiting.starting:
            return True
        delay = self._next_delay(domain.uuid)
        log.info(
            "domain %s %s (exit code %s): restarting it in %.1f s",
            domain.name,
            crash.detail,
            exit_code,
            delay,
        )
        wake = asyncio.Event()
        task = asyncio.create_task(
            self._after(domain, crash, exit_code, delay, wake), name=f"restart {domain.name}"
        )
        self._pending[domain.uuid] = _Pending(task, wake)
        task.add_done_callback(lambda done: self._done(domain.uuid, done))
        return True

    def _next_delay(self, uuid: UUID) -> float:
        last_delay, ran_at = self._delays.get(uuid, (0.0, 0.0))
        if not last_delay or time.monotonic() - ran_at >= self._reset_after_s:
            return self._first_delay_s
        return min(2 * last_delay, self._max_delay_s)

    async def _after(
        self,
        domain: DomainObj,
        crash: Lifecycle,
        exit_code: int | None,
        delay: float,
        wake: asyncio.Event,
    ) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), delay)
        pending = self._pending.get(domain.uuid)
        if pending is not None and pending.task is asyncio.current_task():
            pending.starting = True
        self._delays[domain.uuid] = (delay, time.monotonic())
        assert self._restart is not None
        await self._restart(domain, crash, exit_code)

    def _done(self, uuid: UUID, task: asyncio.Task[None]) -> None:
        pending = self._pending.get(uuid)
        if pending is not None and pending.task is task:
            del self._pending[uuid]
        if not task.cancelled() and task.exception() is not None:
            log.error("crash restart failed", exc_info=task.exception())

    @contextlib.contextmanager
    def held(self, uuid: UUID) -> Iterator[None]:
        """While held, a crash of the domain is not restarted: for an operation that
        takes the domain down."""
        self._held[uuid] = self._held.get(uuid, 0) + 1
        try:
            yield
        finally:
            self._held[uuid] -= 1
            if not self._held[uuid]:
                del self._held[uuid]

    async def cancel(self, uuid: UUID) -> bool:
        """Cancel the domain's restart if it is still waiting: True then (the domain's
        container is down). A restart already starting is waited for first."""
        self._delays.pop(uuid, None)
        while (pending := self._pending.get(uuid)) is not None:
            if not pending.starting:
                pending.task.cancel()
                await asyncio.gather(pending.task, return_exceptions=True)
                return True
            await asyncio.gather(asyncio.shield(pending.task), return_exceptions=True)
        return False

    async def now(self, uuid: UUID) -> None:
        """Restart the domain now if it waits for a restart, and return once it is done."""
        pending = self._pending.get(uuid)
        if pending is not None:
            pending.wake.set()
            await asyncio.gather(asyncio.shield(pending.task), return_exceptions=True)

    async def close(self) -> None:
        tasks = [pending.task for pending in self._pending.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
