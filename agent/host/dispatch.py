"""Command → operation → reply: validation, idempotency, ordering, deadlines, errors.

Guarantees:
- Commands for the same domain run one after another in the order they were submitted;
  commands for different domains run concurrently, at most ``concurrency`` at once.
- A command id seen before gets the reply recorded for it; the op does not run again.
  An id seen before with another op, target or arguments is refused (INVALID_ARG, naming
  the difference, then dead-lettered); the id stays the first command's.
- A command past its deadline when its turn comes is answered OPERATION_ABORTED unrun.
- Every submitted body gets exactly one reply; no exception escapes ``submit``. A body
  larger than ``max_body_bytes`` is refused unread, like one that does not parse
  (INVALID_ARG, then dead-lettered).
- A command the host policy refuses is answered OPERATION_DENIED, logged as a warning,
  counted in ``virtbus_commands_denied_total`` and dead-lettered.
- A command delivered again without a recorded reply (the agent died while running it)
  runs again as a retry: an op whose effect is already there answers success. One
  delivered more than ``max_deliveries`` times is abandoned and dead-lettered. A read
  (``read_only``) is counted only once it is delivered again, its first delivery
  included then (a read given back unrun, as at a graceful stop, counts all the same):
  a read's first delivery costs one store write (its reply's), not two.
- A reply is recorded before it is returned, and an op answers only once its events
  are committed. When the store cannot write, the command waits (holding its place in
  its domain's order) until ``recovered`` returns, then runs again, as a retry if it
  had begun acting through Docker; its reply is the one recorded then. ``submit``
  raises ``StoreUnwritable`` only before anything is recorded or run: submit the body
  again once the store can write.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from agent.errors import VirtError
from agent.host.domains import DomainTable
from agent.host.metrics import Metrics
from agent.host.operations import Operations
from agent.host.policy import Denied
from agent.host.store import Fingerprint, Store, StoreUnwritable
from agent.logs import command_context
from agent.signing import Delivery, Refused, Verifier
from schemas.codes import ErrorCode
from schemas.commands import (
    Command,
    CreateXml,
    Define,
    DomainCommand,
    InvalidCommand,
    Login,
)
from schemas.commands import parse_command as parse
from schemas.replies import Reply

log = logging.getLogger(__name__)

_T = TypeVar("_T")

MAX_DELIVERIES = 5
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    """A command's reply, and whether the command was accepted at all: a refused one
    (unparseable, invalid, or denied by the host policy) is dead-lettered after its
    reply."""

    reply: Reply
    body: bytes
    accepted: bool
    command: Command | None = None


class Dispatcher:
    def __init__(
        self,
        host: str,
        operations: Operations,
        domains: DomainTable,
        store: Store,
        concurrency: int,
        metrics: Metrics | None = None,
        max_deliveries: int = MAX_DELIVERIES,
        verifier: Verifier | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        recovered: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._recovered = recovered or store.writable
        self._max_body_bytes = max_body_bytes
        self._max_deliveries = max_deliveries
        self._verifier = verifier
        self.host = host
        self._metrics = metrics or Metrics()
        self._operations = operations
        self._domains = domains
        self._store = store
        self._slots = asyncio.Semaphore(concurrency)
        self._lanes: dict[str, asyncio.Task[Outcome]] = {}
        self._running: dict[str, asyncio.Task[Outcome]] = {}
        self._running_as: dict[str, Fingerprint] = {}

    def submit(
        self, body: bytes, message_id: str | None, delivery: Delivery | None = None
    ) -> Awaitable[Outcome]:
        """Take one command body; its place in its domain's order is fixed on return.

        ``message_id`` stands in for a body without ``id`` and names the reply to a body
        that cannot be parsed. With a verifier, ``delivery`` (the message the body came
        in) must carry a valid signature, or the body is refused unread.
        """
        if len(body) > self._max_body_bytes:
            return _done(
                self._refuse(
                    message_id,
                    f"message of {len(body)} bytes is larger than the limit of "
                    f"{self._max_body_bytes} bytes",
                )
            )
        if self._verifier is not None:
            try:
                self._verifier.check(delivery)
            except Refused as refusal:
                return _done(self._unauthentic(message_id or "", refusal))
        try:
            command = parse(body, message_id)
        except InvalidCommand as error:
            return _done(self._refuse(message_id, error.reason, error.code))
        fingerprint = fingerprint_of(command)
        recorded = self._store.recorded_reply(command.id)
        running = self._running.get(command.id)
        before = (
            (recorded.fingerprint if recorded else None)
            or self._running_as.get(command.id)
            or self._store.attempted(command.id)
        )
        conflict = before.conflict(fingerprint) if before else None
        if conflict is not None:
            return _done(
                self._refuse(
                    command.id, f"command id '{command.id}' was already used with {conflict}"
                )
            )
        if recorded is not None:
            body = recorded.body
            return _done(Outcome(Reply.model_validate_json(body), body, True, command))
        if running is not None:
            return asyncio.shield(running)
        lane = self._domains.lane(command)
        previous = self._lanes.get(lane) if lane else None
        counted = (
            not command.read_only
            or before is not None
            or (delivery is not None and delivery.redelivered)
        )
        task = asyncio.create_task(
            self._run(command, fingerprint, previous, counted), name=f"command {command.id}"
        )
        self._running[command.id] = task
        self._running_as[command.id] = fingerprint

        def ended(_: asyncio.Task[Outcome]) -> None:
            self._running.pop(command.id, None)
            self._running_as.pop(command.id, None)

        task.add_done_callback(ended)
        if lane:
            self._lanes[lane] = task
            task.add_done_callback(
                lambda done: self._lanes.pop(lane) if self._lanes.get(lane) is done else None
            )
        return task

    async def drain(self, timeout_s: float) -> bool:
        """Wait for the commands in flight; False if some were still running at the end."""
        if not self._running:
            return True
        _, pending = await asyncio.wait(list(self._running.values()), timeout=timeout_s)
        return not pending

    def _unauthentic(self, command_id: str, refusal: Refused) -> Outcome:
        """AUTH_FAILED, never recorded: a command id seen unauthenticated stays free for
        the authentic command."""
        log.warning(
            "authentication failed for command %r (key %r): %s",
            command_id,
            refusal.key_id,
            refusal,
        )
        self._metrics.auth_failures.labels(refusal.reason).inc()
        self._metrics.commands.labels("invalid", ErrorCode.AUTH_FAILED.name).inc()
        reply = self._error(command_id, ErrorCode.AUTH_FAILED, str(refusal))
        return Outcome(reply, _encode(reply), accepted=False)

    def _refuse(
        self, message_id: str | None, reason: str, code: ErrorCode = ErrorCode.INVALID_ARG
    ) -> Outcome:
        log.warning("refused command %s: %s", message_id, reason)
        reply = self._error(message_id or "", code, reason)
        self._metrics.commands.labels("invalid", code.name).inc()
        return Outcome(reply, _encode(reply), accepted=False)

    async def _abandon(self, command: Command, fingerprint: Fingerprint, attempts: int) -> Outcome:
        reply = self._error(
            command.id,
            ErrorCode.OPERATION_ABORTED,
            f"command delivered {attempts} times without completing; abandoned",
        )
        log.error("abandoned command %s (%s) after %d deliveries", command.id, command.op, attempts)
        self._metrics.commands.labels(command.op, ErrorCode.OPERATION_ABORTED.name).inc()
        body = _encode(reply)
        await self._durably(lambda: self._store.record_reply(command.id, body, fingerprint))
        return Outcome(reply, body, accepted=False, command=command)

    async def _run(
        self,
        command: Command,
        fingerprint: Fingerprint,
        before: asyncio.Task[Outcome] | None,
        counted: bool,
    ) -> Outcome:
        if before is not None:
            await asyncio.wait([before])
        command_context.set(
            {"command_id": command.id, "op": command.op, "domain": _domain_of(command)}
        )
        attempts = 1
        if counted:
            # a read's first delivery was not counted
            uncounted = 1 if command.read_only else 0
            attempts = await self._durably(
                lambda: self._store.attempt(command.id, fingerprint, uncounted)
            )
        if attempts > self._max_deliveries:
            return await self._abandon(command, fingerprint, attempts)
        retry, turn = attempts > 1, True
        async with self._slots:
            started = time.perf_counter()
            while True:
                try:
                    reply = await self._execute(command, retry, turn)
                    break
                except StoreUnwritable as error:
                    if turn:
                        log.warning(
                            "command %s (%s) waits for the state store (%s), then runs again",
                            command.id,
                            command.op,
                            error,
                        )
                    await self._recovered()
                    retry, turn = retry or self._store.intended(command.id), False
            self._metrics.command_seconds.labels(command.op).observe(time.perf_counter() - started)
        outcome = reply.error.code if reply.error else "ok"
        self._metrics.commands.labels(command.op, outcome).inc()
        body = _encode(reply)
        await self._durably(lambda: self._store.record_reply(command.id, body, fingerprint))
        denied = reply.error is not None and reply.error.code == ErrorCode.OPERATION_DENIED.name
        return Outcome(reply, body, accepted=not denied, command=command)

    async def _durably(self, write: Callable[[], _T]) -> _T:
        """Do one store write, waiting until the store can write for as long as needed."""
        while True:
            try:
                return write()
            except StoreUnwritable:
                await self._store.writable()

    async def _execute(self, command: Command, retry: bool, turn: bool = True) -> Reply:
        """``turn``: the command's turn has just come (its deadline counts); False when
        it runs again after waiting for the store."""
        if turn and command.deadline is not None and command.expired(datetime.now(UTC)):
            return self._error(
                command.id,
                ErrorCode.OPERATION_ABORTED,
                f"deadline {command.deadline.isoformat()} passed before the command could run",
            )
        try:
            result = await self._operations.run(command, retry)
        except StoreUnwritable:
            raise
        except Denied as error:
            log.warning(
                "denied %s of domain '%s': %s", command.op, _domain_of(command), error.detail
            )
            self._metrics.denied.labels(command.op, error.rule).inc()
            return Reply(id=command.id, host=self.host, ok=False, error=error.to_wire())
        except VirtError as error:
            return Reply(id=command.id, host=self.host, ok=False, error=error.to_wire())
        except Exception as error:
            log.exception("command %s (%s) failed", command.id, command.op)
            return self._error(command.id, ErrorCode.INTERNAL_ERROR, repr(error))
        return Reply(id=command.id, host=self.host, ok=True, result=result)

    def _error(self, command_id: str, code: ErrorCode, detail: str) -> Reply:
        error = VirtError(code, detail)
        return Reply(id=command_id, host=self.host, ok=False, error=error.to_wire())


def fingerprint_of(command: Command) -> Fingerprint:
    """The command without its id, deadline and secrets (a login's password is left out,
    so that it is never kept, not even hashed)."""
    asked = command.model_dump(mode="json", exclude={"v", "id", "deadline"}, exclude_none=True)
    if isinstance(command, Login):
        asked["args"].pop("password", None)
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"))
    target = str(command.target) if isinstance(command, DomainCommand) else ""
    return Fingerprint(command.op, target, hashlib.sha256(canonical.encode()).hexdigest())


def _domain_of(command: Command) -> str:
    if isinstance(command, Define | CreateXml):
        return command.args.spec.name
    if isinstance(command, DomainCommand):
        return str(command.target).split(" ", 1)[1].strip("'")
    return ""


def _encode(reply: Reply) -> bytes:
    return reply.model_dump_json(exclude_none=True).encode()


def _done(outcome: Outcome) -> asyncio.Future[Outcome]:
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    future.set_result(outcome)
    return future
