"""The host agent: store, driver, monitor, operations, dispatcher and bus, composed.

``async with Agent(config) as agent`` starts it and stops it gracefully on the way out.

- ``stop()`` is graceful: stop consuming, finish the commands in flight, flush the
  event outbox (agent/host/outbox.py), publish ``agent.offline``, close.
- ``kill()`` is urgent: cancel everything now. Commands not yet acked return to the
  queue; events not yet confirmed stay in the outbox for the next start.
- While the state store cannot write, no command is taken, answered or acked, and
  ``/health`` reports ``store: false``; once it can, the agent re-lists Docker and
  carries on by itself (agent/host/store.py, monitor.py, dispatch.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

from agent import __version__
from agent.errors import VirtError
from agent.host import (  # noqa: F401  (their handlers register on import)
    metadata,
    snapshots,
    stats,
    storage,
)
from agent.host.bus import Bus, Inbound
from agent.host.config import Config
from agent.host.console import Consoles
from agent.host.credentials import RegistryCredentials
from agent.host.dispatch import Dispatcher, Outcome
from agent.host.domains import DomainTable
from agent.host.driver import DockerDriver, Driver
from agent.host.metrics import Metrics, MetricsServer, Readings
from agent.host.monitor import Monitor
from agent.host.networks import attach_networks
from agent.host.operations import Operations
from agent.host.outbox import Outbox
from agent.host.pulls import PullReporter
from agent.host.store import Store, StoreUnwritable
from agent.signing import Verifier
from schemas.codes import DomainState
from schemas.commands import OPS
from schemas.events import AgentEvent, Presence

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
ENGINE_RETRY_S = 1.0
_T = TypeVar("_T")
REDELIVERY_DELAY_S = 1.0
"""After a failed reply on a channel that stays open, how long before the command goes
back to the queue (its recorded reply is sent again then)."""


class Agent:
    def __init__(self, config: Config, driver: Driver | None = None) -> None:
        self.config = config
        self.host = config.host
        self._driver = driver or DockerDriver(
            config.host,
            config.docker_endpoint,
            config.docker_ssl_context,
            pids_limit=config.policy.default_pids_limit,
            call_timeout_s=config.docker_timeout_s,
        )
        self.metrics = Metrics()
        self._store = Store(config.host_dir, on_write_failed=self.metrics.store_failures.inc)
        self._domains = DomainTable()
        self._bus = Bus(
            config.amqp_urls,
            config.host,
            config.groups,
            config.queue_type,
            config.prefetch,
            on_reconnect=self.metrics.reconnects.labels("broker").inc,
            ssl_context=config.amqp_ssl_context,
            declare_topology=config.declare_topology,
        )
        self._outbox = Outbox(
            config.host,
            self._store,
            self._bus,
            config.outbox_limit,
            on_published=lambda key: self.metrics.events.labels(key.split(".")[1]).inc(),
        )
        self._monitor = Monitor(
            config.host,
            self._domains,
            self._store,
            self._driver,
            self._outbox.wake,
            on_reconnect=self.metrics.reconnects.labels("docker").inc,
            on_answering=self._outbox.reply_follows,
        )
        self.metrics.read(
            Readings(
                broker_connected=lambda: self._bus.connected,
                docker_connected=self._monitor.connected.is_set,
                events_pending=lambda: self._outbox.pending,
                domains_by_state=self._domains_by_state,
                store_writable=lambda: self._store.is_writable,
            )
        )
        self._server: MetricsServer | None = None
        if config.metrics_port is not None:
            self._server = MetricsServer(
                self.metrics, self.health, config.metrics_host, config.metrics_port
            )
        self._consoles = Consoles(self._bus.open_stream)
        self._dispatcher: Dispatcher | None = None
        self._operations: Operations | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    @property
    def consoles(self) -> Consoles:
        """The console sessions open now."""
        return self._consoles

    async def __aenter__(self) -> Agent:
        try:
            await self.start()
        except BaseException:
            await self.kill()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.stop()
        else:
            await self.kill()

    async def start(self) -> None:
        log.info("virtbus agent %s starting: %s", __version__, self.config.describe())
        log.info(
            "host policy (%s): %s",
            self.config.policy_file or "safe defaults",
            self.config.policy.model_dump_json(),
        )
        if self._server is not None:
            await self._server.start()
        self._store.open()
        self._store.prune()
        for domain in self._store.domains():
            self._domains.add(domain)
        engine = await with_engine(self._driver.engine)
        await self._bus.connect()
        self._spawn(self._monitor.run(), "docker events")
        await asyncio.wait_for(self._monitor.connected.wait(), READY_TIMEOUT_S)
        self._outbox.start()
        operations = Operations(
            self.host,
            list(self.config.groups),
            self._domains,
            self._driver,
            self._monitor,
            RegistryCredentials(self.config.host_dir / "registries.json"),
            engine,
            self.config.heartbeat_s,
            gone=self._store.gone,
            intent_reached=self._store.intent_reached,
            policy=self.config.policy,
        )
        self._operations = operations
        operations.sessions = self._consoles
        operations.pulls = PullReporter(self.host, self._outbox.publish_transient)
        self._dispatcher = Dispatcher(
            self.host,
            operations,
            self._domains,
            self._store,
            self.config.concurrency,
            self.metrics,
            verifier=Verifier(self.config.trusted_keys, self.config.signing_window_s, self._store)
            if self.config.trusted_keys
            else None,
            max_body_bytes=self.config.max_message_bytes,
            recovered=self._monitor.recovered,
        )
        await attach_networks(operations, self._store.networks()).restore()
        await with_engine(operations.count_snapshots)
        await operations.autostart()
        await self._presence("online")
        self._spawn(self._heartbeat(), "heartbeat")
        self._spawn(self._reconcile_periodically(), "reconcile")
        self._spawn(self._relist_after_store_failures(), "store recovery")
        commands = await self._bus.commands()
        self._consumer = asyncio.create_task(self._consume(commands), name="commands")
        self.ready.set()
        log.info("agent %s ready with %d domains", self.host, len(self._domains))

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(_report_crash)
        self._tasks.append(task)

    async def stop(self) -> None:
        """Graceful: stop taking commands, finish those in flight, flush events, go offline."""
        drain_s = self.config.drain_s
        await self._bus.stop_consuming()
        if self._consumer is not None:
            # bounded: it may be waiting for the state store to take writes
            await asyncio.wait([self._consumer], timeout=drain_s)
        if self._dispatcher is not None and not await self._dispatcher.drain(drain_s):
            log.warning(
                "commands still running after %.0f s; their messages will be redelivered", drain_s
            )
        if self._answers:
            await asyncio.wait(self._answers, timeout=drain_s)
        await self._outbox.stop(drain_s)
        if self.ready.is_set():
            try:
                await asyncio.wait_for(self._presence("offline"), drain_s)
            except Exception as error:
                log.warning("could not publish agent.offline: %s", error)
        await self.kill()
        log.info("agent %s stopped", self.host)

    async def kill(self) -> None:
        """Urgent: cancel everything and close; nothing waits."""
        tasks = [*self._tasks, *self._answers]
        if self._consumer is not None:
            tasks.append(self._consumer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._consoles.close()
        if self._operations is not None:
            stats.release(self._operations)
        await self._outbox.kill()
        self._tasks.clear()
        self._answers.clear()
        self._consumer = None
        self.ready.clear()
        await self._monitor.restarts.close()
        await self._bus.close()
        await self._driver.close()
        self._store.close()
        if self._server is not None:
            await self._server.stop()

    async def _consume(self, commands: AsyncIterator[Inbound]) -> None:
        assert self._dispatcher is not None
        async for inbound in commands:
            await self._outbox.room()
            while True:
                await self._store.writable()
                try:
                    pending = self._dispatcher.submit(
                        inbound.body, inbound.message_id or inbound.correlation_id, inbound
                    )
                    break
                except StoreUnwritable:
                    continue
            answer = asyncio.create_task(self._answer(inbound, pending))
            self._answers.add(answer)
            answer.add_done_callback(self._answers.discard)

    async def _answer(self, inbound: Inbound, pending: Awaitable[Outcome]) -> None:
        """The acknowledgement policy: reply first, then ack (or dead-letter if refused).
        The outcome's reply is recorded in the store already."""
        try:
            outcome = await pending
        except Exception:
            log.exception("command %s failed unanswered; back to the queue", inbound.message_id)
            await self._bus.requeue(inbound)
            return
        try:
            await self._bus.reply(inbound, outcome.reply.id, outcome.body)
            await self._bus.settle(
                inbound,
                outcome.accepted,
                outcome.reply.error.message if outcome.reply.error else None,
            )
        except Exception as error:
            log.warning(
                "could not answer command %s (%s); the broker will redeliver it",
                outcome.reply.id,
                error,
            )
            await asyncio.sleep(REDELIVERY_DELAY_S)
            await self._bus.requeue(inbound)

    async def _reconcile_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.reconcile_s)
            # after Docker's events that waited for the store: a re-list cannot tell why
            await self._monitor.recovered()
            try:
                await self._monitor.reconcile()
            except (VirtError, StoreUnwritable) as error:
                log.warning("periodic re-list failed: %s", error)

    async def _relist_after_store_failures(self) -> None:
        """Each time the store can write again after failing, re-list Docker at once:
        a write that failed outside Docker's event stream (a crash restart's, say) left
        its change in Docker only."""
        while True:
            await self._store.failed.wait()
            await self._monitor.recovered()
            try:
                await self._monitor.reconcile()
            except (VirtError, StoreUnwritable) as error:
                log.warning("re-list after the state store recovered failed: %s", error)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                await self._presence("heartbeat")
            except Exception as error:
                log.warning("heartbeat not published: %s", error)

    async def _presence(self, state: Presence) -> None:
        event = AgentEvent(
            host=self.host,
            time=datetime.now(UTC),
            state=state,
            agent_version=__version__,
            groups=list(self.config.groups),
            capabilities=list(OPS),
            heartbeat_s=self.config.heartbeat_s,
            domains=len(self._domains),
        )
        await self._bus.publish_event(
            event.routing_key, event.model_dump_json().encode(), message_id=None
        )
        self.metrics.events.labels("agent").inc()

    async def flushed(self, timeout_s: float) -> None:
        """Returns once every domain event queued so far is confirmed by the broker."""
        await self._outbox.flushed(timeout_s)

    def health(self) -> dict[str, bool]:
        """Ready means the broker and Docker are both reachable now and the state store
        can write."""
        return {
            "broker": self._bus.connected,
            "docker": self._monitor.connected.is_set(),
            "store": self._store.is_writable,
        }

    def _domains_by_state(self) -> dict[str, int]:
        counts = {state.name.lower(): 0 for state in DomainState}
        for domain in self._domains:
            counts[domain.state.name.lower()] += 1
        return counts


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("agent task %s crashed", task.get_name(), exc_info=task.exception())


async def with_engine(step: Callable[[], Awaitable[_T]], timeout_s: float = READY_TIMEOUT_S) -> _T:
    """A start-up step that needs Docker, which may be restarting as the agent starts:
    tried again every ENGINE_RETRY_S while Docker fails it, for up to ``timeout_s``;
    then Docker's error."""
    deadline = time.monotonic() + timeout_s
    warned = False
    while True:
        try:
            return await step()
        except VirtError as error:
            if time.monotonic() >= deadline:
                raise
            if not warned:
                log.warning("Docker cannot answer yet, trying again: %s", error)
                warned = True
        await asyncio.sleep(ENGINE_RETRY_S)
