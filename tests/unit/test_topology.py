"""The topology is data: the agent's declarer puts exactly those objects on the broker,
and provisioning sends the management API the same ones."""

from __future__ import annotations

from typing import Any, cast

from aio_pika.abc import AbstractChannel

from agent.admin.provision import Management
from agent.host.bus import Declarer
from schemas.topology import (
    BROADCAST,
    COMMAND_MAX_AGE_MS,
    COMMANDS,
    DEAD,
    DEAD_LETTER_BINDING,
    DEAD_LETTERS,
    EVENTS,
    EXCHANGES,
    HISTORY,
    HISTORY_KEYS,
    command_bindings,
    command_queue,
)


class RecordingQueue:
    def __init__(self, name: str, calls: list[tuple[Any, ...]]) -> None:
        self.name = name
        self._calls = calls

    async def bind(self, exchange: RecordingExchange, routing_key: str) -> None:
        self._calls.append(("bind", exchange.name, self.name, routing_key))


class RecordingExchange:
    def __init__(self, name: str) -> None:
        self.name = name


class RecordingChannel:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def declare_exchange(self, name: str, kind: Any, **options: Any) -> RecordingExchange:
        self.calls.append(("exchange", name, kind.value, options))
        return RecordingExchange(name)

    async def declare_queue(self, name: str, **options: Any) -> RecordingQueue:
        self.calls.append(("queue", name, options))
        return RecordingQueue(name, self.calls)


def test_a_host_queue_is_bound_to_its_name_all_and_its_groups() -> None:
    queue = command_queue("h1", "classic")
    assert queue.name == "virtbus.host.h1"
    assert queue.arguments == {
        "x-queue-type": "classic",
        "x-dead-letter-exchange": DEAD.name,
        "x-message-ttl": COMMAND_MAX_AGE_MS,
    }
    legacy = command_queue("h1", "classic", max_age=False)
    assert "x-message-ttl" not in legacy.arguments and legacy.name == queue.name
    assert [(b.exchange, b.routing_key) for b in command_bindings(queue, "h1", ["web"])] == [
        (COMMANDS, "h1"),
        (BROADCAST, "all"),
        (BROADCAST, "group.web"),
    ]


async def test_the_declarer_declares_each_object_once_with_its_arguments() -> None:
    channel = RecordingChannel()
    declarer = Declarer(cast(AbstractChannel, channel))
    queue = command_queue("h1")
    for binding in command_bindings(queue, "h1", []):
        await declarer.bind(binding)
    await declarer.bind(DEAD_LETTER_BINDING)
    durable = {"durable": True, "auto_delete": False, "arguments": {}, "passive": False}
    assert channel.calls == [
        ("exchange", COMMANDS.name, "direct", durable),
        (
            "queue",
            queue.name,
            {
                "durable": True,
                "auto_delete": False,
                "exclusive": False,
                "arguments": dict(queue.arguments),
                "passive": False,
            },
        ),
        ("bind", COMMANDS.name, queue.name, "h1"),
        ("exchange", BROADCAST.name, "topic", durable),
        ("bind", BROADCAST.name, queue.name, "all"),
        ("exchange", DEAD.name, "fanout", durable),
        (
            "queue",
            DEAD_LETTERS.name,
            {
                "durable": True,
                "auto_delete": False,
                "exclusive": False,
                "arguments": dict(DEAD_LETTERS.arguments),
                "passive": False,
            },
        ),
        ("bind", DEAD.name, DEAD_LETTERS.name, ""),
    ]


async def test_a_passive_check_declares_nothing() -> None:
    channel = RecordingChannel()
    declarer = Declarer(cast(AbstractChannel, channel))
    await declarer.exchange(EVENTS, passive=True)
    await declarer.queue(command_queue("h1"), passive=True)
    assert [call[-1]["passive"] for call in channel.calls] == [True, True]


async def test_provisioning_sends_the_same_objects(monkeypatch: Any) -> None:
    sent: list[tuple[str, str, dict[str, Any] | None]] = []

    async def record(
        self: Management,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        sent.append((method, path, body))
        return []

    monkeypatch.setattr(Management, "_send", record)
    async with Management() as api:
        await api.declare_topology()
        await api.declare_host_queue("h1", ["web"], "classic")
    exchanges = {
        path.rsplit("/", 1)[1]: body for method, path, body in sent if "exchanges/" in path
    }
    assert exchanges == {
        exchange.name: {
            "type": exchange.kind,
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        }
        for exchange in EXCHANGES
    }
    queues = {
        path.rsplit("/", 1)[1]: body["arguments"]
        for method, path, body in sent
        if path.startswith("queues/") and body is not None
    }
    assert queues == {
        "virtbus.dead": dict(DEAD_LETTERS.arguments),
        "virtbus.events.history": dict(HISTORY.arguments),
        "virtbus.host.h1": dict(command_queue("h1", "classic").arguments),
    }
    bindings = [
        (path.split("/")[3], path.split("/")[5], body["routing_key"])
        for method, path, body in sent
        if method == "POST" and body is not None
    ]
    assert bindings == [
        ("virtbus.dead", "virtbus.dead", ""),
        *(("virtbus.events", "virtbus.events.history", key) for key in HISTORY_KEYS),
        ("virtbus.commands", "virtbus.host.h1", "h1"),
        ("virtbus.broadcast", "virtbus.host.h1", "all"),
        ("virtbus.broadcast", "virtbus.host.h1", "group.web"),
    ]
