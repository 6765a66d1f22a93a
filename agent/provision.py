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
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr
from yarl import URL

from agent.config import mask_url
from schemas.codes import ErrorCode
from schemas.errors import VirtbusError
from schemas.topology import (
    BROADCAST_ALL,
    BROADCAST_EXCHANGE,
    COMMANDS_EXCHANGE,
    DEAD_EXCHANGE,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
    group_key,
    host_queue,
)

DEFAULT_MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672/"
DEFAULT_VHOST = "/"
TIMEOUT_S = 30.0
NOTHING = "^$"
PRIVATE_QUEUES = r"amq\.gen-.*|amq_[0-9a-f]{32}"
"""Queues declared without a name (replies, event streams), named by the broker or, on a
robust aio-pika connection (the client library's), by aio-pika. The client's are
exclusive: no other connection can bind, read or delete them."""
EXCHANGES = {
    COMMANDS_EXCHANGE: "direct",
    BROADCAST_EXCHANGE: "topic",
    EVENTS_EXCHANGE: "topic",
    DEAD_EXCHANGE: "fanout",
}
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
                BROADCAST_EXCHANGE, write=NOTHING, read=f"^{_any_of(_broadcast_keys(groups))}$"
            ),
        ),
    )


def _broadcast_keys(groups: Sequence[str]) -> list[str]:
    return [BROADCAST_ALL, *(group_key(group) for group in groups)]


def orchestrator_grant() -> Grant:
    return Grant(
        configure=_names(PRIVATE_QUEUES),
        write=_names(re.escape(COMMANDS_EXCHANGE), re.escape(BROADCAST_EXCHANGE), PRIVATE_QUEUES),
        read=_names(re.escape(EVENTS_EXCHANGE), PRIVATE_QUEUES),
        topics=(TopicGrant(EVENTS_EXCHANGE, write=NOTHING, read=".*"),),
    )


def subscriber_grant(hosts: Sequence[str] = ()) -> Grant:
    """Events of every host, or of ``hosts`` only."""
    keys = f"^{_any_of(hosts)}\\." if hosts else ".*"
    return Grant(
        configure=_names(PRIVATE_QUEUES),
        # write on its own queues is what binding them takes; no exchange matches
        write=_names(PRIVATE_QUEUES),
        read=_names(re.escape(EVENTS_EXCHANGE), PRIVATE_QUEUES),
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
        """The shared exchanges and the dead-letter queue (DESIGN §2), idempotently."""
        where = _quoted(vhost)
        for name, kind in EXCHANGES.items():
            await self._call(
                "PUT",
                f"exchanges/{where}/{_quoted(name)}",
                {"type": kind, "durable": True, "auto_delete": False, "internal": False},
            )
        await self._call(
            "PUT",
            f"queues/{where}/{_quoted(DEAD_QUEUE)}",
            {"durable": True, "auto_delete": False, "arguments": {"x-queue-type": "quorum"}},
        )
        await self._bind(vhost, DEAD_EXCHANGE, DEAD_QUEUE, "")

    async def declare_host_queue(
        self,
        host: str,
        groups: Sequence[str] = (),
        queue_type: Literal["quorum", "classic"] = "quorum",
        vhost: str = DEFAULT_VHOST,
    ) -> None:
        """Host's queue as its agent would declare it, bound to ``host`` on the command
        exchange and to ``all`` and ``groups`` on the broadcast exchange; bindings to other
        groups are removed."""
        queue = host_queue(host)
        where = _quoted(vhost)
        await self._call(
            "PUT",
            f"queues/{where}/{_quoted(queue)}",
            {
                "durable": True,
                "auto_delete": False,
                "arguments": {"x-queue-type": queue_type, "x-dead-letter-exchange": DEAD_EXCHANGE},
            },
        )
        await self._bind(vhost, COMMANDS_EXCHANGE, queue, host)
        wanted = _broadcast_keys(groups)
        for key in wanted:
            await self._bind(vhost, BROADCAST_EXCHANGE, queue, key)
        path = f"bindings/{where}/e/{_quoted(BROADCAST_EXCHANGE)}/q/{_quoted(queue)}"
        for binding in await self._get(path):
            if binding["routing_key"] not in wanted:
                await self._call("DELETE", f"{path}/{_quoted(binding['properties_key'])}")

    async def _bind(self, vhost: str, exchange: str, queue: str, routing_key: str) -> None:
        path = f"bindings/{_quoted(vhost)}/e/{_quoted(exchange)}/q/{_quoted(queue)}"
        await self._call("POST", path, {"routing_key": routing_key, "arguments": {}})

    async def remove(self, user: str) -> bool:
        """Delete ``user`` and its permissions; False if there was no such user."""
        return await self._call("DELETE", f"users/{_quoted(user)}", missing_ok=True)


def _quoted(segment: str) -> str:
    return quote(segment, safe="")
