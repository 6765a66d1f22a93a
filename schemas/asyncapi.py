"""The whole bus as an AsyncAPI 3.0.0 document, generated from the wire models. No I/O.

Every schema comes from pydantic (validation mode, as ``virtbus schema``). Pydantic speaks
JSON Schema 2020-12, with an OpenAPI-style ``discriminator`` object on the command union;
AsyncAPI's own Schema Object wants ``discriminator`` to be a string. Rather than rewrite
the generated schemas, every schema is declared in draft-07 format through a Multi Format
Schema Object (``{"schemaFormat": ..., "schema": ...}``), which AsyncAPI validates against
the draft-07 meta-schema, where ``discriminator`` is an annotation like any other. Apart
from that, the keywords pydantic uses for these models (``const``, ``anyOf``, ``oneOf``,
``pattern``, ``format``, ``$ref``) mean the same in draft-07; only a ``default`` next to a
``$ref`` goes unread there, and it is an annotation anyway. ``$defs`` are hoisted into
``components.schemas`` and, since a reference must stay within one schema format, ``$ref``s
point at ``#/components/schemas/<Model>/schema``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, get_args

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from schemas.codes import Lifecycle, NetworkLifecycle
from schemas.commands import COMMAND_ADAPTER
from schemas.events import (
    AgentEvent,
    DeviceEvent,
    HealthEvent,
    ImagePullEvent,
    LifecycleEvent,
    MetadataChangeEvent,
    NetworkEvent,
    Presence,
    RebootEvent,
    TunableEvent,
)
from schemas.replies import Reply
from schemas.topology import (
    BROADCAST,
    BROADCAST_ALL,
    BROADCAST_EXCHANGE,
    COMMAND_MAX_AGE_MS,
    COMMANDS,
    COMMANDS_EXCHANGE,
    DEAD,
    DEAD_EXCHANGE,
    DEAD_LETTER_BODY_BYTES,
    DEAD_LETTERS,
    DEAD_LETTERS_MAX_BYTES,
    DEAD_LETTERS_MAX_LENGTH,
    DEAD_LETTERS_TTL_MS,
    DEAD_QUEUE,
    EVENTS,
    EVENTS_EXCHANGE,
    HISTORY,
    HISTORY_KEYS,
    HISTORY_MAX_AGE,
    HISTORY_MAX_BYTES,
    HISTORY_QUEUE,
    Exchange,
    Queue,
    QueueType,
    command_queue,
    group_key,
    host_queue,
)

__all__ = [
    "ASYNCAPI_VERSION",
    "SCHEMA_FORMAT",
    "asyncapi_document",
    "dangling_refs",
    "resolve_ref",
]

ASYNCAPI_VERSION = "3.0.0"
SCHEMA_FORMAT = "application/schema+json;version=draft-07"
JSON = "application/json"
AMQP_BINDING_VERSION = "0.3.0"
VHOST = "/"

_SCHEMAS = "#/components/schemas/"
_REF_TEMPLATE = _SCHEMAS + "{model}/schema"

# Message name -> what generates its payload schema.
_PAYLOADS: dict[str, TypeAdapter[Any]] = {
    "Command": COMMAND_ADAPTER,
    "Reply": TypeAdapter(Reply),
    "LifecycleEvent": TypeAdapter(LifecycleEvent),
    "RebootEvent": TypeAdapter(RebootEvent),
    "TunableEvent": TypeAdapter(TunableEvent),
    "DeviceEvent": TypeAdapter(DeviceEvent),
    "NetworkEvent": TypeAdapter(NetworkEvent),
    "MetadataChangeEvent": TypeAdapter(MetadataChangeEvent),
    "HealthEvent": TypeAdapter(HealthEvent),
    "AgentEvent": TypeAdapter(AgentEvent),
    "ImagePullEvent": TypeAdapter(ImagePullEvent),
}

_DESCRIPTION = """\
virtbus gives Docker hosts the management model of libvirt, over RabbitMQ (AMQP 0-9-1).
A host agent runs on every Docker host: it takes libvirt-style domain commands
(`domain.define`, `domain.create`, `domain.suspend`, ...) from its queue, runs them
against the local Docker engine, replies, and publishes domain events shaped like
libvirt's event callbacks (the same event types, detail codes, states, reasons and
`virErrorNumber` error codes). A *domain* is one container. Every body is UTF-8 JSON.

**Point of view.** The operations below are written from the side of a client of the
bus, consistently: an orchestrator that sends commands and a subscriber that follows
events. `send` means the client publishes, `receive` means the client consumes. The
agent does the opposite of each.

**The contract in short.**

- Commands go to `virtbus.commands` (routing key: the host name) or to
  `virtbus.broadcast` (`all`, or `group.<g>`). Validation is strict: unknown fields are
  refused at every level and types are not coerced.
- Each agent that receives a command replies to its `reply_to` queue through the
  default exchange, with the command's `correlation_id` (default: the command id) and
  the header `host`. A broadcast gets one reply per matching agent.
- A command is acked only after its reply is confirmed by the broker. A command id runs
  at most once: a redelivered or re-sent id gets the recorded reply; the id reused with
  another op, target or arguments is refused with `INVALID_ARG`.
- Commands about one domain run in arrival order, each once Docker has finished the one
  before; a `deadline` that has passed when the command's turn comes answers
  `OPERATION_ABORTED` and nothing runs. A command waits in a host queue at most its
  `expiration` and at most the queue's message TTL.
- A body that is not a valid command gets an `INVALID_ARG` reply (when it has a
  `reply_to`) and is dead-lettered to `virtbus.dead`.
- Events go to the topic exchange `virtbus.events` as persistent messages published
  with confirms. Domain events carry `seq`, one more per event per host, kept across
  agent restarts, so a subscriber can see a gap; presence events carry none.

**Schemas** are generated from virtbus's pydantic models and declared in JSON Schema
draft-07 format (`schemaFormat`), so they stay exactly as generated: the command union
keeps pydantic's `discriminator` object (`propertyName` `op` and its `mapping`).
"""


# ------------------------------------------------------------------ schemas --


def _multi_format(schema: Any) -> dict[str, Any]:
    return {"schemaFormat": SCHEMA_FORMAT, "schema": schema}


def _component_schemas() -> dict[str, Any]:
    """Every payload schema and everything it refers to, by model name."""
    mode: JsonSchemaMode = "validation"
    inputs = [(name, mode, adapter) for name, adapter in _PAYLOADS.items()]
    tops, definitions = TypeAdapter.json_schemas(inputs, ref_template=_REF_TEMPLATE)
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    for name in _PAYLOADS:
        top = tops[(name, mode)]
        if top.get("$ref") == _REF_TEMPLATE.format(model=name):
            continue  # a model: already among the definitions under its own name
        if name in schemas:
            raise ValueError(f"two schemas named {name}")
        schemas[name] = {"title": name, **top}
    schemas["Command"]["description"] = (
        "A command: one model per op, told apart by `op`. Send the fields of that op's "
        "model only; `id` may be left out when the AMQP `message_id` (else "
        "`correlation_id`) is set."
    )
    return {name: _multi_format(schemas[name]) for name in sorted(schemas)}


def _payload(name: str) -> dict[str, Any]:
    return {"$ref": f"{_SCHEMAS}{name}"}


# --------------------------------------------------------------- channels --


def _exchange(exchange: Exchange) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {
                "name": exchange.name,
                "type": exchange.kind,
                "durable": exchange.durable,
                "autoDelete": exchange.auto_delete,
                "vhost": VHOST,
            },
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def _queue(queue: Queue | None = None) -> dict[str, Any]:
    """A named queue's binding, or an unnamed one's (the client's own)."""
    declared: dict[str, Any] = {}
    if queue is not None:
        declared = {
            "name": queue.name,
            "durable": queue.durable,
            "exclusive": queue.exclusive,
            "autoDelete": queue.auto_delete,
        }
    return {
        "amqp": {
            "is": "queue",
            "queue": {**declared, "vhost": VHOST},
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def _queue_arguments(queue: Queue, **choices: Any) -> dict[str, Any]:
    """The queue's AMQP arguments, with ``choices`` for those the agent's settings pick."""
    return {**queue.arguments, **choices}


def _messages(*names: str) -> dict[str, Any]:
    return {_lower(name): {"$ref": f"#/components/messages/{name}"} for name in names}


def _lower(name: str) -> str:
    return name[:1].lower() + name[1:]


def _unique(values: Iterator[str]) -> list[str]:
    return list(dict.fromkeys(values))


_HOST = (
    "Host name of an agent: a DNS label, `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?` (no dots: "
    "it is one routing-key word)."
)


def _host(location: str | None = None) -> dict[str, Any]:
    parameter: dict[str, Any] = {"description": _HOST, "examples": ["h1", "demo1"]}
    if location is not None:
        parameter["location"] = location
    return parameter


def _event_channel(
    address: str, title: str, description: str, message: str, **parameters: Any
) -> dict[str, Any]:
    return {
        "address": address,
        "title": title,
        "description": description,
        "messages": _messages(message),
        "parameters": {"host": _host("$message.payload#/host"), **parameters},
        "bindings": _exchange(EVENTS),
    }


def _channels() -> dict[str, Any]:
    presence: list[str] = list(get_args(Presence))
    return {
        "hostCommands": {
            "address": "{host}",
            "title": "Commands for one host",
            "description": (
                f"The direct exchange `{COMMANDS_EXCHANGE}`; the routing key is the host "
                f"name, so the command lands in that host's queue `{host_queue('{host}')}`."
                " Set `reply_to` to get an answer, `message_id` to the command id, and "
                "`delivery_mode` 2 if the command must survive a broker restart on a "
                "classic queue. An optional `expiration` is a per-message TTL (the client "
                "library sets it to the command's deadline): a command that expires in the "
                f"queue is dead-lettered to `{DEAD_EXCHANGE}`. Without one, the host "
                f"queue's message TTL ({COMMAND_MAX_AGE_MS} ms) bounds its wait."
            ),
            "messages": _messages("Command"),
            "parameters": {"host": _host()},
            "bindings": _exchange(COMMANDS),
        },
        "broadcastCommands": {
            "address": "{selector}",
            "title": "Commands for the fleet or a group",
            "description": (
                f"The topic exchange `{BROADCAST_EXCHANGE}`. Every agent binds its queue "
                f"with `{BROADCAST_ALL}` and with `{group_key('<g>')}` for each group it "
                "joined, so a command reaches every matching agent and each replies to the "
                "same `reply_to` with the same `correlation_id` and its own `host`. "
                "Gathering the replies (and naming the hosts that stayed silent) is up to "
                "the client."
            ),
            "messages": _messages("Command"),
            "parameters": {
                "selector": {
                    "description": (
                        f"`{BROADCAST_ALL}` for every agent, or `{group_key('<g>')}` for the "
                        "agents of group `<g>` (group names follow the host-name syntax)."
                    ),
                    "examples": [BROADCAST_ALL, group_key("web")],
                }
            },
            "bindings": _exchange(BROADCAST),
        },
        "replies": {
            "address": None,
            "title": "Replies",
            "description": (
                "The client's own queue, named by the command's `reply_to` (the address is "
                "dynamic, hence null: see the reply address of the send operations). The "
                "agent publishes the reply to the default exchange with routing key "
                "`reply_to`, so it goes straight into that queue, with the properties "
                "`correlation_id` (the command's, else its id), `content_type` "
                "`application/json`, `message_id` `<host>:<command id>`, and the header "
                "`host`."
            ),
            "messages": _messages("Reply"),
            "bindings": _queue(),
        },
        "lifecycleEvents": _event_channel(
            "{host}.lifecycle.{event}.{detail}",
            "Lifecycle events",
            "libvirt's VIR_DOMAIN_EVENT_ID_LIFECYCLE (0): `virDomainEventType` and its "
            "detail, by name in the routing key and by number in the body. Useful "
            "bindings: `*.lifecycle.#`, `h1.lifecycle.#`, `*.lifecycle.stopped.*`.",
            "LifecycleEvent",
            event={
                "description": "The lifecycle event (`virDomainEventType`), by name.",
                "enum": _unique(member.event for member in Lifecycle),
                "location": "$message.payload#/event",
            },
            detail={
                "description": (
                    "The event's detail, by name. Each event uses some of them: defined "
                    "added/updated/renamed, undefined removed/renamed, started booted, "
                    "suspended paused, resumed unpaused, stopped "
                    "shutdown/destroyed/crashed/failed."
                ),
                "enum": _unique(member.detail for member in Lifecycle),
                "location": "$message.payload#/detail",
            },
        ),
        "rebootEvents": _event_channel(
            "{host}.reboot",
            "Reboot events",
            "libvirt's VIR_DOMAIN_EVENT_ID_REBOOT (1): a domain was rebooted (one event, "
            "no stopped/started pair).",
            "RebootEvent",
        ),
        "tunableEvents": _event_channel(
            "{host}.tunable",
            "Tunable events",
            "libvirt's VIR_DOMAIN_EVENT_ID_TUNABLE (17): tunables of a domain changed "
            "(`memory_kib`, `soft_limit_kib`, `swap_hard_limit_kib`, `vcpus`, `cpu_shares`).",
            "TunableEvent",
        ),
        "deviceEvents": _event_channel(
            "{host}.device.{event}",
            "Device events",
            "libvirt's VIR_DOMAIN_EVENT_ID_DEVICE_ADDED (19) and _DEVICE_REMOVED (15): an "
            "interface plugged into or out of a running domain, by its alias (`net1`).",
            "DeviceEvent",
            event={
                "description": "added (event ID 19) or removed (15).",
                "enum": ["added", "removed"],
                "location": "$message.payload#/event",
            },
        ),
        "networkEvents": _event_channel(
            "{host}.network.{event}.{detail}",
            "Network lifecycle events",
            "libvirt's network lifecycle event (`virNetworkEventLifecycleType`): a "
            "network defined (0), undefined (1), started (2) or stopped (3). Bind "
            "`h1.network.#`.",
            "NetworkEvent",
            event={
                "description": "The network event, by name.",
                "enum": [member.event for member in NetworkLifecycle],
                "location": "$message.payload#/event",
            },
            detail={
                "description": "Always `none` (0): libvirt's network events have no detail.",
                "enum": ["none"],
                "location": "$message.payload#/detail",
            },
        ),
        "metadataChangeEvents": _event_channel(
            "{host}.metadata_change",
            "Metadata change events",
            "libvirt's VIR_DOMAIN_EVENT_ID_METADATA_CHANGE (23): a domain's description, "
            "title or namespaced metadata element changed (`domain.set_metadata`), one "
            "event per change.",
            "MetadataChangeEvent",
        ),
        "healthEvents": _event_channel(
            "{host}.health.{status}",
            "Health events",
            "A domain's health check (its spec's `healthcheck`, or its image's) changed its "
            "verdict. libvirt has no such event; the gateway reports it as "
            "VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE (18), healthy as a connected guest agent.",
            "HealthEvent",
            status={
                "description": "The health check's verdict.",
                "enum": ["healthy", "unhealthy"],
                "location": "$message.payload#/status",
            },
        ),
        "presence": _event_channel(
            "{host}.agent.{state}",
            "Agent presence",
            "An agent came online, is alive (every `heartbeat_s` seconds) or went "
            "offline after a graceful stop. Presence events carry no `seq`. Bind "
            "`*.agent.*` to follow the fleet.",
            "AgentEvent",
            state={
                "description": "The agent's presence.",
                "enum": presence,
                "location": "$message.payload#/state",
            },
        ),
        "imagePullEvents": _event_channel(
            "{host}.image.pull",
            "Image pull progress",
            "Progress of an image pull that a `domain.define` or `domain.create_xml` "
            "started (`cause` is the command's id): at most one event every 0.5 s while "
            "the pull runs, then one `complete` or `failed`. The command's reply comes "
            "after the pull: a client waiting for it starts its timeout again at each of "
            "these events. No `seq`; libvirt has no such event. Bind `h1.image.pull`.",
            "ImagePullEvent",
        ),
        "deadLetterExchange": {
            "address": None,
            "title": "Dead-letter exchange",
            "description": (
                f"The fanout exchange `{DEAD_EXCHANGE}`, the dead-letter exchange of every "
                "host queue. The broker routes here the commands that were refused at the "
                "edge (rejected without requeue) or that expired in a host queue; they keep "
                "their original routing key, which a fanout ignores (hence no address). "
                f"The queue `{DEAD_QUEUE}` is bound to it so nothing is dropped."
            ),
            "messages": _messages("DeadLetter"),
            "bindings": _exchange(DEAD),
        },
        "deadLetters": {
            "address": DEAD_QUEUE,
            "title": "Dead-letter queue",
            "description": (
                f"The durable quorum queue `{DEAD_QUEUE}`, bound to the `{DEAD_EXCHANGE}` "
                "exchange. Nothing consumes it: drain it yourself. Bounded: at most "
                f"{DEAD_LETTERS_MAX_LENGTH} letters and {DEAD_LETTERS_MAX_BYTES} bytes of "
                "bodies (past either, the oldest are dropped) and "
                f"{DEAD_LETTERS_TTL_MS} ms of age; as queue arguments when it is declared "
                "and as an operator policy `virtbus provision` sets for a queue declared "
                "before."
            ),
            "messages": _messages("DeadLetter"),
            "bindings": _queue(DEAD_LETTERS),
            "x-amqp-queue-arguments": _queue_arguments(DEAD_LETTERS),
        },
        "eventHistory": {
            "address": HISTORY_QUEUE,
            "title": "Event history",
            "description": (
                f"The durable stream queue `{HISTORY_QUEUE}`, bound to `{EVENTS_EXCHANGE}` "
                f"with {', '.join(f'`{key}`' for key in HISTORY_KEYS)}: every domain event "
                "and the agents' arrivals and goodbyes, not their heartbeats. Bounded by "
                f"age ({HISTORY_MAX_AGE}) and size ({HISTORY_MAX_BYTES} bytes); the oldest "
                "segment goes first. A reader consumes it with a prefetch count, manual "
                "acknowledgements and the consumer argument `x-stream-offset` (`first`, "
                "`last`, `next`, an offset, or a timestamp) to replay what happened before it "
                "connected; each message carries its offset in the header `x-stream-offset`. "
                "Reading removes nothing."
            ),
            "messages": _messages("LifecycleEvent", "RebootEvent", "TunableEvent", "AgentEvent"),
            "bindings": _queue(HISTORY),
            "x-amqp-queue-arguments": _queue_arguments(HISTORY),
        },
        "hostQueue": {
            "address": host_queue("{host}"),
            "title": "A host's command queue",
            "description": (
                "Declared by the agent at start-up and consumed by it only. Durable; "
                "arguments `x-queue-type` `quorum` (the default) or `classic` (the agent's "
                f"`--queue-type`), `x-dead-letter-exchange` `{DEAD_EXCHANGE}` and "
                f"`x-message-ttl` {COMMAND_MAX_AGE_MS} (the maximum age of a command; a "
                "queue declared before it existed keeps its arguments and gets it from "
                "`virtbus provision`'s operator policy). Bound to "
                f"`{COMMANDS_EXCHANGE}` with `{{host}}`, and to `{BROADCAST_EXCHANGE}` with "
                f"`{BROADCAST_ALL}` and `{group_key('<g>')}` for each group of the agent. "
                "Clients publish to the exchanges, never to this queue."
            ),
            "messages": _messages("Command"),
            "parameters": {"host": _host()},
            "bindings": _queue(command_queue("{host}")),
            "x-amqp-queue-arguments": _queue_arguments(
                command_queue("{host}"),
                **{"x-queue-type": {"enum": list(get_args(QueueType)), "default": "quorum"}},
            ),
        },
    }


# ------------------------------------------------------------- operations --


def _channel_ref(channel: str) -> dict[str, str]:
    return {"$ref": f"#/channels/{channel}"}


def _channel_messages(channel: str, *names: str) -> list[dict[str, str]]:
    return [{"$ref": f"#/channels/{channel}/messages/{_lower(name)}"} for name in names]


def _amqp_operation(**fields: Any) -> dict[str, Any]:
    return {"amqp": {**fields, "bindingVersion": AMQP_BINDING_VERSION}}


def _reply() -> dict[str, Any]:
    return {
        "address": {
            "location": "$message.header#/reply_to",
            "description": (
                "The AMQP property `reply_to` of the command: the queue the reply goes to. "
                "Without it the command still runs but nothing is answered."
            ),
        },
        "channel": _channel_ref("replies"),
        "messages": _channel_messages("replies", "Reply"),
    }


def _receive(channel: str, message: str, title: str, summary: str) -> dict[str, Any]:
    return {
        "action": "receive",
        "channel": _channel_ref(channel),
        "title": title,
        "summary": summary,
        "messages": _channel_messages(channel, message),
        "bindings": _amqp_operation(deliveryMode=2),
    }


def _operations() -> dict[str, Any]:
    return {
        "sendCommand": {
            "action": "send",
            "channel": _channel_ref("hostCommands"),
            "title": "Send a command to one host",
            "summary": "Publish a command to one host and get its reply.",
            "description": (
                "The agent of the host runs the command against its Docker engine and "
                "replies once. Persistent delivery (`delivery_mode` 2) is recommended."
            ),
            "messages": _channel_messages("hostCommands", "Command"),
            "reply": _reply(),
            "bindings": _amqp_operation(deliveryMode=2),
        },
        "broadcastCommand": {
            "action": "send",
            "channel": _channel_ref("broadcastCommands"),
            "title": "Send a command to the fleet or a group",
            "summary": "Publish a command to every agent, or to the agents of one group.",
            "description": (
                "Every matching agent runs the command and replies to the same `reply_to` "
                "with the same `correlation_id` and its own `host`: collect replies until "
                "every host you expect has answered or your deadline passes."
            ),
            "messages": _channel_messages("broadcastCommands", "Command"),
            "reply": _reply(),
            "bindings": _amqp_operation(deliveryMode=2),
        },
        "receiveLifecycleEvents": _receive(
            "lifecycleEvents",
            "LifecycleEvent",
            "Follow lifecycle events",
            "Domains defined, undefined, started, suspended, resumed and stopped.",
        ),
        "receiveRebootEvents": _receive(
            "rebootEvents", "RebootEvent", "Follow reboot events", "Domains rebooted."
        ),
        "receiveTunableEvents": _receive(
            "tunableEvents", "TunableEvent", "Follow tunable events", "Domain tunables changed."
        ),
        "receiveDeviceEvents": _receive(
            "deviceEvents", "DeviceEvent", "Follow device events", "Interfaces hot-plugged."
        ),
        "receiveNetworkEvents": _receive(
            "networkEvents",
            "NetworkEvent",
            "Follow network events",
            "Networks defined, undefined, started and stopped.",
        ),
        "receiveMetadataChangeEvents": _receive(
            "metadataChangeEvents",
            "MetadataChangeEvent",
            "Follow metadata change events",
            "Domain descriptions, titles and metadata elements changed.",
        ),
        "receiveHealthEvents": _receive(
            "healthEvents",
            "HealthEvent",
            "Follow health events",
            "Domains whose health check turned healthy or unhealthy.",
        ),
        "receivePresence": _receive(
            "presence",
            "AgentEvent",
            "Follow agent presence",
            "Agents coming online, alive, and going offline.",
        ),
        "receiveImagePullEvents": _receive(
            "imagePullEvents",
            "ImagePullEvent",
            "Follow image pulls",
            "Bytes and layers of the image pulls that commands started.",
        ),
        "receiveDeadLetters": {
            "action": "receive",
            "channel": _channel_ref("deadLetters"),
            "title": "Drain dead letters",
            "summary": "Commands the agents refused at the edge, and commands that expired.",
            "messages": _channel_messages("deadLetters", "DeadLetter"),
        },
        "replayEvents": {
            "action": "receive",
            "channel": _channel_ref("eventHistory"),
            "title": "Replay the event history",
            "summary": "What happened before the reader connected, then what happens next.",
            "messages": _channel_messages(
                "eventHistory", "LifecycleEvent", "RebootEvent", "TunableEvent", "AgentEvent"
            ),
        },
    }


# --------------------------------------------------------------- messages --

_CORRELATION_ID = "$message.header#/correlation_id"

_EXAMPLE_RECORD = {
    "name": "web",
    "uuid": "90d31472-e84f-44ad-ac57-e60bed91a399",
    "id": 17628,
    "state": 3,
    "reason": 1,
    "persistent": True,
    "autostart": False,
}
_EXAMPLE_XML = """\
<domain type='docker'>
  <name>web</name>
  <uuid>90d31472-e84f-44ad-ac57-e60bed91a399</uuid>
  <os>
    <type>exe</type>
    <init>sleep</init>
    <initarg>3600</initarg>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <filesystem type='template' accessmode='passthrough'>
      <source name='busybox:latest'/>
      <target dir='/'/>
    </filesystem>
  </devices>
</domain>
"""
_EXAMPLE_DOMAIN = {"name": "web", "uuid": "90d31472-e84f-44ad-ac57-e60bed91a399", "id": 17628}

EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "Command": [
        {
            "v": 1,
            "id": "6f1c2a",
            "op": "domain.suspend",
            "target": {"name": "web"},
            "args": {},
            "deadline": "2026-11-28T21:00:05Z",
        },
        {"v": 1, "id": "6f1c2c", "op": "host.list_domains", "args": {"flags": ["active"]}},
        {"v": 1, "id": "6f1c2d", "op": "domain.define", "args": {"xml": _EXAMPLE_XML}},
        {"v": 1, "id": "6f1c2e", "op": "domain.get_xml_desc", "target": {"name": "web"}},
    ],
    "Reply": [
        {"v": 1, "id": "6f1c2a", "host": "h1", "ok": True, "result": _EXAMPLE_RECORD},
        {"v": 1, "id": "6f1c2e", "host": "h1", "ok": True, "result": {"xml": _EXAMPLE_XML}},
        {
            "v": 1,
            "id": "6f1c2b",
            "host": "h1",
            "ok": False,
            "error": {
                "code": "NO_DOMAIN",
                "vir_error": 42,
                "message": "Domain not found: no domain with matching name 'web'",
            },
        },
    ],
    "LifecycleEvent": [
        {
            "v": 1,
            "host": "h1",
            "time": "2026-11-28T21:00:00.123456Z",
            "seq": 1042,
            "domain": _EXAMPLE_DOMAIN,
            "origin": "agent",
            "cause": "6f1c2a",
            "kind": "lifecycle",
            "event": "suspended",
            "event_code": 3,
            "detail": "paused",
            "detail_code": 0,
            "exit_code": None,
        }
    ],
    "RebootEvent": [
        {
            "v": 1,
            "host": "h1",
            "time": "2026-11-28T21:01:00Z",
            "seq": 1043,
            "domain": _EXAMPLE_DOMAIN,
            "origin": "external",
            "cause": None,
            "kind": "reboot",
        }
    ],
    "TunableEvent": [
        {
            "v": 1,
            "host": "h1",
            "time": "2026-11-28T21:02:00Z",
            "seq": 1044,
            "domain": _EXAMPLE_DOMAIN,
            "origin": "agent",
            "cause": "6f1c2d",
            "kind": "tunable",
            "params": {"memory_kib": 131072},
        }
    ],
    "DeviceEvent": [
        {
            "v": 1,
            "host": "h1",
            "time": "2026-11-28T21:03:00Z",
            "seq": 1045,
            "domain": _EXAMPLE_DOMAIN,
            "origin": "agent",
            "cause": "6f1c2f",
            "kind": "device",
            "event": "added",
            "event_id": 19,
            "alias": "net1",
        }
    ],
    "NetworkEvent": [
        {
            "v": 1,
            "host": "h1",
            "time": "2026-11-28T21:04:00Z",
            "seq": 1046,
            "kind": "network",
            "network": {"name": "lan", "uuid": "3e3fce45-4f53-4fa7-bb32-11f34168b82b"},
            "event": "started",
            "event_code": 2,
            "detail": "none",
            "detail_code": 0,
            "cause": "6f1c30",
        }
    ],
    "MetadataChangeEvent": [
        {
            "v": 1,
            "host": "h1",
            "time": "2026-11-28T21:03:00Z",
            "seq": 1045,
            "domain": _EXAMPLE_DOMAIN,
            "origin": "agent",
            "cause": "6f1c2f",
            "kind": "metadata_change",
            "type": "element",
            "type_code": 2,
            "nsuri": "http://example.org/app",
        }
    ],
    "HealthEvent": [
        {
            "v": 1,
            "host": "h1",
            "time": "2026-11-28T21:04:00Z",
            "seq": 1046,
            "domain": _EXAMPLE_DOMAIN,
            "origin": "external",
            "cause": None,
            "kind": "health",
            "status": "unhealthy",
        }
    ],
    "AgentEvent": [
        {
            "v": 1,
            "host": "h1",
            "time": "2026-11-28T21:00:00Z",
            "kind": "agent",
            "state": "online",
            "agent_version": "0.1.0",
            "groups": ["web"],
            "capabilities": ["domain.create", "host.ping"],
            "heartbeat_s": 10.0,
            "domains": 3,
        }
    ],
    "ImagePullEvent": [
        {
            "v": 1,
            "host": "h1",
            "time": "2026-11-28T21:05:00Z",
            "kind": "image",
            "image": "registry.example.org/web:1.4",
            "cause": "6f1c31",
            "status": "pulling",
            "layers": 3,
            "layers_done": 1,
            "bytes_done": 7340032,
            "bytes_total": 31457280,
        }
    ],
}
"""Message examples, by message name; each one valid for its pydantic model."""


def _message(name: str, title: str, summary: str, description: str, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "title": title,
        "summary": summary,
        "description": description,
        "contentType": JSON,
        "payload": _payload(name),
        **extra,
    }
    examples = EXAMPLES.get(name)
    if examples:
        message["examples"] = [
            {"name": f"{_lower(name)}{index}", "payload": copy.deepcopy(example)}
            for index, example in enumerate(examples, 1)
        ]
    return message


_EVENT_PROPERTIES = (
    "Published persistent (`delivery_mode` 2) with publisher confirms; `message_id` is "
    "`<host>:<seq>`."
)


_SIGNATURE_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": (
        "Signed commands (required by an agent configured with trusted keys). The "
        "signature covers, as UTF-8, these lines each ended by a line feed: "
        "`virtbus-command-v1`, the key id, the timestamp (decimal), the exchange the "
        "command is published to, the routing key, the `message_id` property (or "
        "nothing), the `correlation_id` property (or nothing); then the body, byte for "
        "byte. No line may contain a line feed. The algorithm is the one the agent "
        "trusts the key for: HMAC-SHA256 or Ed25519."
    ),
    "properties": {
        "x-virtbus-key-id": {
            "type": "string",
            "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
            "description": "The id of the key that signed the command.",
        },
        "x-virtbus-timestamp": {
            "type": ["integer", "string"],
            "description": (
                "Unix time of signing in whole seconds (an integer, or its decimal "
                "text); refused as stale outside the agent's window (default ±60 s)."
            ),
        },
        "x-virtbus-signature": {
            "type": "string",
            "contentEncoding": "base64",
            "description": (
                "Base64 of the signature: 32 bytes (HMAC-SHA256) or 64 (Ed25519). A "
                "signature is accepted once: a copy is refused as a replay."
            ),
        },
    },
}


def _messages_components() -> dict[str, Any]:
    return {
        "Command": _message(
            "Command",
            "Command",
            "A libvirt-style command for an agent.",
            "One op with its target and arguments. AMQP properties: `message_id` (the "
            "command id; used as `id` when the body has none), `reply_to` (queue for the "
            "reply), `correlation_id` (echoed in the reply; defaults to the command id), "
            "`content_type` `application/json` (expected, not checked), optional "
            "`expiration`. An agent that trusts signing keys requires the three "
            "`x-virtbus-*` headers (see `headers`) and refuses anything else with "
            "`AUTH_FAILED` (45).",
            headers=_multi_format(_SIGNATURE_HEADERS),
            correlationId={
                "location": _CORRELATION_ID,
                "description": (
                    "The AMQP property `correlation_id`, echoed in every reply to this "
                    "command; when absent the replies carry the command id."
                ),
            },
        ),
        "Reply": _message(
            "Reply",
            "Reply",
            "An agent's answer to one command.",
            "`ok` with `result`, or not `ok` with `error` (a libvirt `virErrorNumber` code "
            "and libvirt-worded message); fields that do not apply are left out. AMQP "
            "properties: `correlation_id`, `content_type` `application/json`, `message_id` "
            "`<host>:<command id>`; header `host`.",
            correlationId={
                "location": _CORRELATION_ID,
                "description": "The command's `correlation_id`, or its id.",
            },
            headers=_multi_format(
                {
                    "type": "object",
                    "properties": {
                        "host": {
                            "type": "string",
                            "description": "The agent that answered.",
                            "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
                            "maxLength": 63,
                        }
                    },
                    "required": ["host"],
                }
            ),
        ),
        "LifecycleEvent": _message(
            "LifecycleEvent",
            "Lifecycle event",
            "A domain changed state (VIR_DOMAIN_EVENT_ID_LIFECYCLE).",
            "libvirt's event and detail codes; `exit_code` on stopped events; `origin` "
            "says whether the agent, something outside it, or reconciliation after a gap "
            "caused it, and `cause` names the causing command. " + _EVENT_PROPERTIES,
        ),
        "RebootEvent": _message(
            "RebootEvent",
            "Reboot event",
            "A domain was rebooted (VIR_DOMAIN_EVENT_ID_REBOOT).",
            _EVENT_PROPERTIES,
        ),
        "TunableEvent": _message(
            "TunableEvent",
            "Tunable event",
            "Tunables of a domain changed (VIR_DOMAIN_EVENT_ID_TUNABLE).",
            "`params` holds the new values by their spec names. " + _EVENT_PROPERTIES,
        ),
        "DeviceEvent": _message(
            "DeviceEvent",
            "Device event",
            "A device plugged into or out of a running domain (DEVICE_ADDED, DEVICE_REMOVED).",
            "`event_id` is libvirt's event ID, `alias` the device's. " + _EVENT_PROPERTIES,
        ),
        "NetworkEvent": _message(
            "NetworkEvent",
            "Network event",
            "A network defined, undefined, started or stopped.",
            "`event_code` is libvirt's `virNetworkEventLifecycleType`; `seq` is the host's "
            "one sequence, shared with domain events. " + _EVENT_PROPERTIES,
        ),
        "MetadataChangeEvent": _message(
            "MetadataChangeEvent",
            "Metadata change event",
            "A domain's metadata changed (VIR_DOMAIN_EVENT_ID_METADATA_CHANGE).",
            "`type` (`virDomainMetadataType` by name, `type_code` by number) and, for an "
            "element, its namespace `nsuri`. " + _EVENT_PROPERTIES,
        ),
        "HealthEvent": _message(
            "HealthEvent",
            "Health event",
            "A domain's health check turned healthy or unhealthy.",
            "`status` is Docker's verdict. " + _EVENT_PROPERTIES,
        ),
        "AgentEvent": _message(
            "AgentEvent",
            "Agent presence",
            "An agent's presence: online, heartbeat or offline.",
            "With the agent's version, groups, capabilities (its ops), heartbeat period "
            "and number of domains. Published persistent with publisher confirms; no "
            "`seq`, no `message_id`.",
        ),
        "ImagePullEvent": _message(
            "ImagePullEvent",
            "Image pull progress",
            "Where an image pull that a command started stands.",
            "Layers seen and finished, compressed bytes downloaded of the layers whose "
            "size is known so far (`bytes_total` may grow), and `status` pulling, "
            "complete or failed; `cause` is the command's id. Best effort: no `seq`, no "
            "`message_id`, not stored; a lost one is superseded by the next.",
        ),
        "DeadLetter": {
            "name": "DeadLetter",
            "title": "Dead letter",
            "summary": "A command the broker dead-lettered, body untouched or truncated.",
            "description": (
                "The original body as it was published: a body an agent refused (after its "
                "error reply) need not be JSON at all, so the payload is not constrained. "
                "The agent publishes what it refuses itself, with the reason in "
                f"`x-virtbus-reason`; a body larger than {DEAD_LETTER_BODY_BYTES} bytes as "
                "its first that many bytes, with `x-virtbus-truncated`, "
                "`x-virtbus-original-size` and `x-virtbus-original-sha256`. A message the "
                "broker dead-letters (one that expired in the queue) carries RabbitMQ's "
                "`x-death` headers instead."
            ),
            "payload": _multi_format(
                {"description": "The original body, as published (usually a command)."}
            ),
            "headers": _multi_format(
                {
                    "type": "object",
                    "properties": {
                        "x-virtbus-reason": {
                            "type": "string",
                            "description": "Why the agent refused it: its error reply's message.",
                        },
                        "x-virtbus-host": {
                            "type": "string",
                            "description": "The host whose agent refused it.",
                        },
                        "x-virtbus-truncated": {
                            "type": "boolean",
                            "description": "The body is the head of a larger original.",
                        },
                        "x-virtbus-original-size": {
                            "type": "integer",
                            "description": "The size in bytes of a truncated body's original.",
                        },
                        "x-virtbus-original-sha256": {
                            "type": "string",
                            "description": "The SHA-256 (hex) of a truncated body's original.",
                        },
                        "x-death": {
                            "type": "array",
                            "items": {"type": "object"},
                            "description": "RabbitMQ's dead-letter history.",
                        },
                        "x-first-death-exchange": {"type": "string"},
                        "x-first-death-queue": {"type": "string"},
                        "x-first-death-reason": {
                            "type": "string",
                            "description": (
                                "`expired` (its `expiration` ran out in the queue), "
                                "among RabbitMQ's reasons."
                            ),
                        },
                    },
                }
            ),
        },
    }


# --------------------------------------------------------------- document --


def asyncapi_document(version: str = "0.1.0") -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the whole bus; ``version`` is the API's version."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:virtbus:bus",
        "info": {
            "title": "virtbus",
            "version": version,
            "description": _DESCRIPTION,
            "license": {
                "name": "Apache-2.0",
                "url": "https://www.apache.org/licenses/LICENSE-2.0",
            },
        },
        "defaultContentType": JSON,
        "servers": {
            "local": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "title": "RabbitMQ",
                "description": (
                    "A RabbitMQ broker (AMQP 0-9-1); agents and clients take its URL from "
                    "`--amqp-url` / `VIRTBUS_AMQP_URL`, here the default."
                ),
            }
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {
            "schemas": _component_schemas(),
            "messages": _messages_components(),
        },
    }


# ------------------------------------------------------------- references --


def resolve_ref(document: Any, ref: str) -> Any:
    """The value a local ``$ref`` (``#/a/b``, JSON Pointer) names; KeyError if none."""
    if not ref.startswith("#"):
        raise KeyError(f"not a local reference: {ref}")
    node = document
    pointer = ref[1:]
    if pointer == "":
        return node
    if not pointer.startswith("/"):
        raise KeyError(f"not a JSON Pointer: {ref}")
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise KeyError(f"{ref}: nothing at {token!r}")
    return node


def _references(node: Any, path: str = "#") -> Iterator[tuple[str, str]]:
    """Every ``$ref`` and discriminator mapping target under node, with where it is."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield path, ref
        mapping = node.get("discriminator", {})
        if isinstance(mapping, dict):
            for key, target in mapping.get("mapping", {}).items():
                yield f"{path}/discriminator/mapping/{key}", target
        for key, value in node.items():
            yield from _references(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _references(value, f"{path}/{index}")


def dangling_refs(document: Any) -> list[str]:
    """Each reference in the document that does not resolve, as ``where -> ref``."""
    problems = []
    for where, ref in _references(document):
        try:
            resolve_ref(document, ref)
        except KeyError:
            problems.append(f"{where} -> {ref}")
    return problems
