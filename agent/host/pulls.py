"""Progress events of the image pulls that commands start (``<host>.image.pull``).

Guarantees: while a pull runs, at most one event every ``PULL_EVENT_INTERVAL_S``, the
first as soon as the engine reports a layer; when it ends, one ``complete`` or
``failed`` event. Each names the command that started the pull (``cause``), so a client
waiting for that command's reply knows the host is still at work. Progress is best
effort: an event the broker does not take is dropped and never delays the pull by more
than ``PUBLISH_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType

from agent.host.driver import PullProgress
from schemas.events import PULL_EVENT_INTERVAL_S, ImagePullEvent, PullStatus

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 2.0

Publish = Callable[[str, bytes], Awaitable[None]]
"""Publishes one event body under its routing key (the outbox's ``publish_transient``)."""


class PullReporter:
    """The progress events of one host's pulls."""

    def __init__(
        self, host: str, publish: Publish, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.host = host
        self.clock = clock
        self._publish = publish

    def pull(self, image: str, cause: str | None) -> PullEvents:
        """``async with reporter.pull(image, command_id) as listener``: pass ``listener``
        to the driver; the closing event goes out on leaving."""
        return PullEvents(self, image, cause)

    async def send(
        self, image: str, cause: str | None, status: PullStatus, at: PullProgress
    ) -> None:
        event = ImagePullEvent(
            host=self.host,
            time=datetime.now(UTC),
            image=image,
            cause=cause,
            status=status,
            layers=at.layers,
            layers_done=at.layers_done,
            bytes_done=at.bytes_done,
            bytes_total=at.bytes_total,
        )
        try:
            await asyncio.wait_for(
                self._publish(event.routing_key, event.model_dump_json().encode()),
                PUBLISH_TIMEOUT_S,
            )
        except Exception as error:
            log.debug("pull progress of %s not published: %s", image, error)


class PullEvents:
    """One pull's events: rate-limited progress, then its outcome."""

    def __init__(self, reporter: PullReporter, image: str, cause: str | None) -> None:
        self._reporter = reporter
        self._image = image
        self._cause = cause
        self._last = PullProgress(0, 0, 0, 0)
        self._sent_at: float | None = None
        self._pulled = False

    async def __call__(self, progress: PullProgress) -> None:
        self._pulled = True
        self._last = progress
        now = self._reporter.clock()
        if self._sent_at is not None and now - self._sent_at < PULL_EVENT_INTERVAL_S:
            return
        self._sent_at = now
        await self._reporter.send(self._image, self._cause, "pulling", progress)

    async def __aenter__(self) -> PullEvents:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # no layer reported and no error: the image was there, nothing was pulled
        if self._pulled or exc is not None:
            status: PullStatus = "complete" if exc is None else "failed"
            await self._reporter.send(self._image, self._cause, status, self._last)
