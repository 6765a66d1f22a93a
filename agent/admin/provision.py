"""Broker users for the three roles, created through RabbitMQ's management HTTP API
(the ``rabbitmq_management`` plugin), so a remote broker can be provisioned too.

Each role gets RabbitMQ's three permission regexes on one vhost (``configure``: declare
and delete; ``write``: publish, and bind a queue; ``read``: consume, and bind from an
exchange) and, on the topic exchanges, topic permissions on routing keys:

agent of host H
    consumes ``virtbus.host.H`` only; publishes replies (the default exchange) and events
    whose routing key starts with ``H.``. By default provisioning declares the topology
    itself (the shared exchanges, and H's queue bound to ``H``, ``all`` and H's groups)
    and the agent, run with ``--no-declare-topology``, only checks that it is there: it
    may then declare, delete and bind nothing. With ``agent_declares`` the agent declares
    the topology as it starts (any agent's default), which takes ``configure`` on the
    shared exchanges and read on the command exchanges; topic permissions still keep its
    broadcast bindings to ``all`` and its own groups, but nothing stops it from binding
    its queue to ``virtbus.commands`` with another host's name and reading a copy of that
    host's commands, or from deleting a shared exchange. Either way, publishing to the
    default exchange is checked against ``amq.default`` alone, so an agent can put a
    message into any queue it can name: signed commands are what refuse those.
orchestrator
    publishes to ``virtbus.commands`` and ``virtbus.broadcast``; reads replies and events
    through unnamed queues it declares for itself.
subscriber
    reads events (optionally of some hosts only) through unnamed queues of its own;
    publishes to no exchange of the bus.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr
from yarl import URL

from agent.settings import mask_url
from schemas.codes import ErrorCode
from schemas.errors import VirtbusError
from schemas.topology import (
    BROADCAST,
    BROADCAST_EXCHANGE,
    COMMANDS_EXCHANGE,
    DEAD_EXCHANGE,
    DEAD_LETTER_BINDING,
    EVENTS_EXCHANGE,
    EXCHANGES,
    HISTORY,
    HISTORY_BINDINGS,
    HISTORY_QUEUE,
    POLICY_PRIORITY,
    Binding,
    Exchange,
    Queue,
    QueueType,
    broadcast_keys,
    command_bindings,
    command_queue,
    host_queue,
    operator_policies,
)

DEFAULT_MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672/"
DEFAULT_VHOST = "/"
TIMEOUT_S = 30.0
NOTHING = "^$"
PRIVATE_QUEUES = r"amq\.gen-.*|amq_[0-9a-f]{32}"
"""Queues declared without a name (replies, event streams), named by the broker or, on a
robust aio-pika connection (the client library's), by aio-pika. The client's are
exclusive: no other connection can bind, read or delete them."""
_MISSING = object()
DEFAULT_EXCHANGE = "amq.default"
"""Publishing to the default exchange (replies) is checked against this name."""


@dataclass(frozen=True)
class TopicGrant:
    """Routing keys a user may publish with (``write``) and bind with (``read``) on one
    topic exchange."""

    exchange: str
    write: str
    read: str


@dataclass(frozen=True)
class Grant:
    """What one user may do on one vhost."""

    configure: str
    write: str
    read: str
    topics: tuple[TopicGrant, ...] = ()


def _names(*names: str) -> str:
    """A regex that matches exactly these resource names (or patterns, left unescaped)."""
    return "^(" + "|".join(names) + ")$"


def _any_of(words: Sequence[str]) -> str:
    return "(" + "|".join(re.escape(word) for word in words) + ")"


def agent_grant(host: str, groups: Sequence[str] = (), agent_declares: bool = False) -> Grant:
    own_queue = re.escape(host_queue(host))
    replies = re.escape(DEFAULT_EXCHANGE)
    events_of_host = TopicGrant(EVENTS_EXCHANGE, write=f"^{re.escape(host)}\\.", read=NOTHING)
    if not agent_declares:
        return Grant(
            configure=NOTHING,
            # the dead-letter exchange: refused commands are published there with a reason
            write=_names(re.escape(EVENTS_EXCHANGE), re.escape(DEAD_EXCHANGE), replies),
            read=_names(own_queue),
            topics=(events_of_host,),
        )
    commands, broadcast, events, dead = (
        re.escape(name)
        for name in (COMMANDS_EXCHANGE, BROADCAST_EXCHANGE, EVENTS_EXCHANGE, DEAD_EXCHANGE)
    )
    return Grant(
        configure=_names(commands, broadcast, events, dead, own_queue),
        # the dead-letter exchange: its queue is declared with it (checked as a write)
        write=_names(events, dead, own_queue, replies),
        # read on an exchange is what binding a queue to it takes
        read=_names(commands, broadcast, dead, own_queue),
        topics=(
            events_of_host,
            TopicGrant(
                BROADCAST_EXCHANGE, write=NOTHING, read=f"^{_any_of(broadcast_keys(groups))}$"
            ),
        ),
    )


def orchestrator_grant() -> Grant:
    return Grant(
        configure=_names(PRIVATE_QUEUES),
        write=_names(re.escape(COMMANDS_EXCHANGE), re.escape(BROADCAST_EXCHANGE), PRIVATE_QUEUES),
        read=_names(re.escape(EVENTS_EXCHANGE), re.escape(HISTORY_QUEUE), PRIVATE_QUEUES),
        topics=(TopicGrant(EVENTS_EXCHANGE, write=NOTHING, read=".*"),),
    )


def subscriber_grant(hosts: Sequence[str] = ()) -> Grant:
    """Events of every host, or of ``hosts`` only; the event history with every host."""
    keys = f"^{_any_of(hosts)}\\." if hosts else ".*"
    return Grant(
        configure=_names(PRIVATE_QUEUES),
        # write on its own queues is what binding them takes; no exchange matches
        write=_names(PRIVATE_QUEUES),
        # the history holds every host's events: only a subscriber to all may read it
        read=_names(
            re.escape(EVENTS_EXCHANGE),
            *(() if hosts else (re.escape(HISTORY_QUEUE),)),
            PRIVATE_QUEUES,
        ),
        topics=(TopicGrant(EVENTS_EXCHANGE, write=NOTHING, read=keys),),
    )


def new_password() -> SecretStr:
    return SecretStr(secrets.token_urlsafe(24))


class ProvisionError(VirtbusError):
    """The management API could not be reached or refused a change; the message says
    which, with no password in it."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.OPERATION_FAILED, detail)

    def __str__(self) -> str:
        return self.detail


class Management:
    """RabbitMQ's management API; ``async with Management(url) as api``. The URL carries
    the administrator's credentials (``http://admin:pass@broker:15672/``)."""

    def __init__(self, url: str = DEFAULT_MANAGEMENT_URL) -> None:
        parsed = URL(url)
        self._base = parsed.with_user(None).with_password(None).with_path("/api")
        self._auth = aiohttp.encode_basic_auth(parsed.user or "guest", parsed.password or "")
        self._shown = mask_url(url)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Management({self._shown!r})"

    async def __aenter__(self) -> Management:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": self._auth},
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, missing_ok: bool = False
    ) -> bool:
        """True when done, False when the resource is missing and ``missing_ok``."""
        return await self._send(method, path, body, missing_ok) is not _MISSING

    async def _get(self, path: str) -> Any:
        return await self._send("GET", path)

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None, missing_ok: bool = False
    ) -> Any:
        """The answer's JSON (None without one); ``_MISSING`` for a missing resource when
        ``missing_ok``."""
        if self._session is None:
            raise RuntimeError("use Management inside `async with`")
        url = self._base.with_path(f"/api/{path}", encoded=True)
        try:
            async with self._session.request(method, url, json=body) as response:
                if missing_ok and response.status == 404:
                    return _MISSING
                if response.status == 401:
                    raise ProvisionError(f"the management API at {self._shown} refused the login")
                if response.status >= 400:
                    reason = (await response.text()).strip()
                    raise ProvisionError(
                        f"the management API refused {method} {path}: {response.status} {reason}"
                    )
                if response.content_type == "application/json":
                    return await response.json()
                return None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ProvisionError(
                f"cannot reach the management API at {self._shown}: {error or type(error).__name__}"
            ) from None

    async def provision(
        self, user: str, password: SecretStr, grant: Grant, vhost: str = DEFAULT_VHOST
    ) -> None:
        """Create ``user`` (or reset its password) with exactly ``grant`` on ``vhost``,
        replacing whatever it had there. It has no management tags, so no access to the
        management API."""
        if not await self._call("GET", f"vhosts/{_quoted(vhost)}", missing_ok=True):
            raise ProvisionError(f"vhost {vhost!r} does not exist")
        where = f"{_quoted(vhost)}/{_quoted(user)}"
        await self._call(
            "PUT", f"users/{_quoted(user)}", {"password": password.get_secret_value(), "tags": ""}
        )
        await self._call(
            "PUT",
            f"permissions/{where}",
            {"configure": grant.configure, "write": grant.write, "read": grant.read},
        )
        await self._call("DELETE", f"topic-permissions/{where}", missing_ok=True)
        for topic in grant.topics:
            await self._call(
                "PUT",
                f"topic-permissions/{where}",
                {"exchange": topic.exchange, "write": topic.write, "read": topic.read},
            )

    async def declare_topology(self, vhost: str = DEFAULT_VHOST) -> None:
        """The shared exchanges and the dead-letter queue (schemas/topology.py),
        idempotently, and the operator policies that bound the dead-letter queue and the
        host queues even where an older release declared them without bounds (it takes
        an administrator)."""
        for exchange in EXCHANGES:
            await self._exchange(vhost, exchange)
        await self._queue(vhost, DEAD_LETTER_BINDING.queue)
        await self._bind(vhost, DEAD_LETTER_BINDING)
        await self._queue(vhost, HISTORY)
        for binding in HISTORY_BINDINGS:
            await self._bind(vhost, binding)
        for name, (pattern, definition) in operator_policies().items():
            await self._call(
                "PUT",
                f"operator-policies/{_quoted(vhost)}/{_quoted(name)}",
                {
                    "pattern": pattern,
                    "definition": definition,
                    "priority": POLICY_PRIORITY,
                    "apply-to": "queues",
                },
            )

    async def declare_host_queue(
        self,
        host: str,
        groups: Sequence[str] = (),
        queue_type: QueueType = "quorum",
        vhost: str = DEFAULT_VHOST,
    ) -> None:
        """Host's queue as its agent would declare it, bound to ``host`` on the command
        exchange and to ``all`` and ``groups`` on the broadcast exchange; bindings to other
        groups are removed."""
        queue = command_queue(host, queue_type)
        if not await self._queue(vhost, queue):
            queue = command_queue(host, queue_type, max_age=False)
        bindings = command_bindings(queue, host, groups)
        for binding in bindings:
            await self._bind(vhost, binding)
        wanted = {b.routing_key for b in bindings if b.exchange == BROADCAST}
        path = _binding_path(vhost, BROADCAST, queue)
        for binding in await self._get(path):
            if binding["routing_key"] not in wanted:
                await self._call("DELETE", f"{path}/{_quoted(binding['properties_key'])}")

    async def _exchange(self, vhost: str, exchange: Exchange) -> None:
        await self._call(
            "PUT",
            f"exchanges/{_quoted(vhost)}/{_quoted(exchange.name)}",
            {
                "type": exchange.kind,
                "durable": exchange.durable,
                "auto_delete": exchange.auto_delete,
                "internal": False,
                "arguments": dict(exchange.arguments),
            },
        )

    async def _queue(self, vhost: str, queue: Queue) -> bool:
        """Declare ``queue``; False if it exists with other arguments (kept as it is: a
        queue's arguments cannot change)."""
        try:
            await self._call(
                "PUT",
                f"queues/{_quoted(vhost)}/{_quoted(queue.name)}",
                {
                    "durable": queue.durable,
                    "auto_delete": queue.auto_delete,
                    "arguments": dict(queue.arguments),
                },
            )
        except ProvisionError as error:
            if "inequivalent arg" not in str(error):
                raise
            return False
        return True

    async def _bind(self, vhost: str, binding: Binding) -> None:
        await self._call(
            "POST",
            _binding_path(vhost, binding.exchange, binding.queue),
            {"routing_key": binding.routing_key, "arguments": {}},
        )

    async def remove(self, user: str) -> bool:
        """Delete ``user`` and its permissions; False if there was no such user."""
        return await self._call("DELETE", f"users/{_quoted(user)}", missing_ok=True)


def _binding_path(vhost: str, exchange: Exchange, queue: Queue) -> str:
    return f"bindings/{_quoted(vhost)}/e/{_quoted(exchange.name)}/q/{_quoted(queue.name)}"


def _quoted(segment: str) -> str:
    return quote(segment, safe="")
