"""The AsyncAPI document of the bus: complete, self-consistent, and valid for the real parser."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from schemas.asyncapi import (
    ASYNCAPI_VERSION,
    EXAMPLES,
    SCHEMA_FORMAT,
    asyncapi_document,
    dangling_refs,
    resolve_ref,
)
from schemas.codes import Lifecycle
from schemas.commands import COMMAND_ADAPTER, OPS
from schemas.events import (
    AgentEvent,
    DeviceEvent,
    HealthEvent,
    LifecycleEvent,
    MetadataChangeEvent,
    NetworkEvent,
    RebootEvent,
    TunableEvent,
)
from schemas.replies import Reply
from schemas.topology import (
    BROADCAST_EXCHANGE,
    COMMANDS_EXCHANGE,
    DEAD_EXCHANGE,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
)
from tests.environment import unavailable

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "asyncapi"
VALIDATOR = TOOLS / "validate.mjs"
PARSER = TOOLS / "node_modules" / "@asyncapi" / "parser"
PARAMETER = re.compile(r"\{([^{}]+)\}")

ADAPTERS: dict[str, TypeAdapter[Any]] = {
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
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document()


def walk(node: Any) -> list[Any]:
    """Every dict and list in node, node included."""
    found = [node]
    if isinstance(node, dict):
        for value in node.values():
            found.extend(walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(walk(value))
    return found


# ------------------------------------------------------------ the document --


def test_is_asyncapi_3_and_json(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == ASYNCAPI_VERSION == "3.0.0"
    assert document["defaultContentType"] == "application/json"
    assert json.loads(json.dumps(document)) == document
    assert json.dumps(asyncapi_document()) == json.dumps(document), "not deterministic"
    assert asyncapi_document("9.8.7")["info"]["version"] == "9.8.7"
    assert document["info"]["version"] == "0.1.0"
    server = document["servers"]["local"]
    assert (server["host"], server["protocol"], server["protocolVersion"]) == (
        "localhost:5672",
        "amqp",
        "0.9.1",
    )


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    assert dangling_refs(document) == []
    refs = [node["$ref"] for node in walk(document) if isinstance(node, dict) and "$ref" in node]
    assert len(refs) > 50
    assert all(ref.startswith("#/") for ref in refs)


def test_no_defs_are_left_behind(document: dict[str, Any]) -> None:
    for node in walk(document):
        if isinstance(node, dict):
            assert "$defs" not in node
            assert "definitions" not in node
            ref = node.get("$ref")
            assert not (isinstance(ref, str) and "$defs" in ref), ref


def test_every_schema_is_declared_draft_07(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {"Command", "Reply", "DomainSpec", "DomainRecord", "Target", "LifecycleEvent"} <= set(
        schemas
    )
    for name, schema in schemas.items():
        assert schema["schemaFormat"] == SCHEMA_FORMAT, name
        assert isinstance(schema["schema"], dict), name
    for name, message in document["components"]["messages"].items():
        payload = message["payload"]
        target = resolve_ref(document, payload["$ref"]) if "$ref" in payload else payload
        assert target["schemaFormat"] == SCHEMA_FORMAT, name


def test_schema_refs_stay_inside_the_draft_07_schemas(document: dict[str, Any]) -> None:
    """A reference inside a schema points at a schema of the same format, never at a
    Multi Format Schema Object."""
    for name, wrapper in document["components"]["schemas"].items():
        for node in walk(wrapper["schema"]):
            if isinstance(node, dict) and "$ref" in node:
                assert re.fullmatch(r"#/components/schemas/[A-Za-z0-9_]+/schema", node["$ref"]), (
                    name,
                    node["$ref"],
                )


def test_command_payload_has_every_op(document: dict[str, Any]) -> None:
    command = document["components"]["schemas"]["Command"]["schema"]
    discriminator = command["discriminator"]
    assert discriminator["propertyName"] == "op"
    assert sorted(discriminator["mapping"]) == list(OPS)
    consts = sorted(
        resolve_ref(document, member["$ref"])["properties"]["op"]["const"]
        for member in command["oneOf"]
    )
    assert consts == list(OPS)
    for op, ref in discriminator["mapping"].items():
        assert resolve_ref(document, ref)["properties"]["op"]["const"] == op


def test_payloads_are_what_pydantic_generates(document: dict[str, Any]) -> None:
    """Faithful: the hoisted schemas are pydantic's own, only the refs moved."""
    for name, adapter in ADAPTERS.items():
        generated = adapter.json_schema(ref_template="#/components/schemas/{model}/schema")
        definitions = generated.pop("$defs", {})
        for model, schema in definitions.items():
            assert document["components"]["schemas"][model]["schema"] == schema, model
        ours = document["components"]["schemas"][name]["schema"]
        if generated.get("$ref"):
            assert generated["$ref"] == f"#/components/schemas/{name}/schema"
        else:
            assert {key: ours[key] for key in generated} == generated, name


def test_every_channel_declares_its_address_parameters(document: dict[str, Any]) -> None:
    for name, channel in document["channels"].items():
        address = channel["address"]
        used = set(PARAMETER.findall(address)) if address is not None else set()
        assert used == set(channel.get("parameters", {})), name


def test_channels_match_the_topology(document: dict[str, Any]) -> None:
    channels = document["channels"]

    def exchange(channel: str) -> tuple[str, str]:
        binding = channels[channel]["bindings"]["amqp"]
        assert binding["is"] == "routingKey"
        assert binding["bindingVersion"] == "0.3.0"
        spec = binding["exchange"]
        assert (spec["durable"], spec["autoDelete"], spec["vhost"]) == (True, False, "/")
        return spec["name"], spec["type"]

    assert exchange("hostCommands") == (COMMANDS_EXCHANGE, "direct")
    assert exchange("broadcastCommands") == (BROADCAST_EXCHANGE, "topic")
    for channel in ("lifecycleEvents", "rebootEvents", "tunableEvents", "presence"):
        assert exchange(channel) == (EVENTS_EXCHANGE, "topic")
    assert exchange("deadLetterExchange") == (DEAD_EXCHANGE, "fanout")
    assert channels["deadLetters"]["bindings"]["amqp"]["queue"]["name"] == DEAD_QUEUE
    assert channels["replies"]["bindings"]["amqp"]["is"] == "queue"
    assert channels["replies"]["address"] is None  # dynamic: the operations' reply address
    host_queue = channels["hostQueue"]
    assert host_queue["address"] == "virtbus.host.{host}"
    assert host_queue["bindings"]["amqp"]["is"] == "queue"
    assert host_queue["x-amqp-queue-arguments"]["x-dead-letter-exchange"] == DEAD_EXCHANGE

    lifecycle = channels["lifecycleEvents"]["parameters"]
    assert lifecycle["event"]["enum"] == list(dict.fromkeys(m.event for m in Lifecycle))
    assert lifecycle["detail"]["enum"] == list(dict.fromkeys(m.detail for m in Lifecycle))
    assert channels["presence"]["parameters"]["state"]["enum"] == [
        "online",
        "heartbeat",
        "offline",
    ]


def test_operations_are_the_clients_view(document: dict[str, Any]) -> None:
    operations = document["operations"]
    assert operations["sendCommand"]["action"] == "send"
    assert operations["broadcastCommand"]["action"] == "send"
    for name in ("sendCommand", "broadcastCommand"):
        reply = operations[name]["reply"]
        assert reply["address"]["location"] == "$message.header#/reply_to"
        assert reply["channel"] == {"$ref": "#/channels/replies"}
    for name, operation in operations.items():
        if name.startswith("receive"):
            assert operation["action"] == "receive", name
    messages = document["components"]["messages"]
    for name in ("Command", "Reply"):
        assert messages[name]["correlationId"]["location"] == "$message.header#/correlation_id"
    for name in ("Command", "Reply", "LifecycleEvent", "RebootEvent", "TunableEvent"):
        message = messages[name]
        assert message["name"] == name
        assert message["title"] and message["summary"]
        assert message["contentType"] == "application/json"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_message_examples_are_valid(name: str, document: dict[str, Any]) -> None:
    examples = document["components"]["messages"][name]["examples"]
    assert [example["payload"] for example in examples] == EXAMPLES[name]
    for example in EXAMPLES[name]:
        ADAPTERS[name].validate_json(json.dumps(example))


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ("lifecycleEvents", "LifecycleEvent"),
        ("rebootEvents", "RebootEvent"),
        ("tunableEvents", "TunableEvent"),
        ("deviceEvents", "DeviceEvent"),
        ("networkEvents", "NetworkEvent"),
        ("metadataChangeEvents", "MetadataChangeEvent"),
        ("healthEvents", "HealthEvent"),
        ("presence", "AgentEvent"),
    ],
)
def test_event_addresses_are_the_routing_keys(
    channel: str, message: str, document: dict[str, Any]
) -> None:
    spec = document["channels"][channel]

    def word(parameter: str) -> str:
        enum = spec["parameters"][parameter].get("enum")
        return "(" + "|".join(map(re.escape, enum)) + ")" if enum else r"[^.]+"

    # split() alternates literal text and parameter names
    parts = PARAMETER.split(spec["address"])
    pattern = "".join(word(part) if odd % 2 else re.escape(part) for odd, part in enumerate(parts))
    for example in EXAMPLES[message]:
        event = ADAPTERS[message].validate_json(json.dumps(example))
        assert re.fullmatch(pattern, event.routing_key), (pattern, event.routing_key)
    if channel == "lifecycleEvents":
        for member in Lifecycle:
            assert re.fullmatch(pattern, f"h1.lifecycle.{member.event}.{member.detail}")


# ------------------------------------------------------- the ref checker --


def test_resolve_ref_follows_json_pointer() -> None:
    document: dict[str, Any] = {"a": {"b/c": [10, {"~d": 5}]}, "e": None}
    assert resolve_ref(document, "#") is document
    assert resolve_ref(document, "#/a/b~1c/0") == 10
    assert resolve_ref(document, "#/a/b~1c/1/~0d") == 5
    assert resolve_ref(document, "#/e") is None
    for bad in ("#/a/b/c", "#/a/b~1c/2", "#/x", "other.json#/a", "#a"):
        with pytest.raises(KeyError):
            resolve_ref(document, bad)


def test_dangling_refs_are_reported() -> None:
    document: dict[str, Any] = {
        "components": {"schemas": {"A": {"schema": {"type": "string"}}}},
        "ok": {"$ref": "#/components/schemas/A/schema"},
        "list": [{"$ref": "#/components/schemas/B"}],
        "deep": {"x": {"$ref": "#/$defs/A"}},
        "union": {
            "oneOf": [{"$ref": "#/components/schemas/A/schema"}],
            "discriminator": {
                "propertyName": "k",
                "mapping": {"a": "#/components/schemas/A/schema", "z": "#/components/schemas/Z"},
            },
        },
        "external": {"$ref": "elsewhere.json#/A"},
    }
    assert dangling_refs(document) == [
        "#/list/0 -> #/components/schemas/B",
        "#/deep/x -> #/$defs/A",
        "#/union/discriminator/mapping/z -> #/components/schemas/Z",
        "#/external -> elsewhere.json#/A",
    ]
    broken = copy.deepcopy(asyncapi_document())
    del broken["components"]["schemas"]["Target"]
    problems = dangling_refs(broken)
    assert problems and all("#/components/schemas/Target/schema" in p for p in problems)


# -------------------------------------------------------- the real parser --


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the parser installed; skip (fail under CI) without them."""
    missing = []
    node = shutil.which("node")
    if node is None:
        missing.append("node")
    if not (PARSER / "package.json").is_file():
        missing.append(f"{PARSER.relative_to(TOOLS.parents[1])}")
    if missing:
        message = (
            f"the AsyncAPI parser cannot run ({', '.join(missing)} missing): run scripts/setup.sh"
        )
        unavailable(message)
    assert node is not None
    return node


def validate(node: str, document: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(json.dumps(document), encoding="utf-8")
    return subprocess.run(
        [node, str(VALIDATOR), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_real_parser_accepts_the_document(node: str, tmp_path: Path) -> None:
    result = validate(node, asyncapi_document(), tmp_path / "asyncapi.json")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not [line for line in result.stdout.splitlines() if line.startswith("error ")], output
    assert re.search(
        r"^OK: .*AsyncAPI 3\.0\.0, 15 channels, 12 operations, 11 messages", output, re.M
    )


def _missing_channel(document: dict[str, Any]) -> None:
    document["operations"]["sendCommand"]["channel"] = {"$ref": "#/channels/nowhere"}


def _not_draft_07(document: dict[str, Any]) -> None:
    document["components"]["schemas"]["Target"]["schema"]["type"] = 5


def _undeclared_parameter(document: dict[str, Any]) -> None:
    document["channels"]["rebootEvents"]["address"] = "{host}.reboot.{why}"


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_missing_channel, "#/channels/nowhere"),
        (_not_draft_07, "/components/schemas/Target/schema/type"),
        (_undeclared_parameter, "asyncapi3-channel-parameters"),
    ],
)
def test_the_real_parser_rejects_a_broken_document(
    node: str, tmp_path: Path, breakage: Any, expected: str
) -> None:
    broken = copy.deepcopy(asyncapi_document())
    breakage(broken)
    result = validate(node, broken, tmp_path / "broken.json")
    errors = [line for line in result.stdout.splitlines() if line.startswith("error ")]
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(expected in line for line in errors), result.stdout
