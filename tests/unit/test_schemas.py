"""Wire models: what parses, what is refused and why, and the numbers of the contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import jsonschema
import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from schemas import EVENT_ADAPTER, DomainRecord, DomainSpec, Reply, json_schemas
from schemas.codes import (
    DomainState,
    ErrorCode,
    EventId,
    PausedReason,
    RunningReason,
    ShutoffReason,
)
from schemas.commands import OPS, InvalidCommand, Login, Target, parse_command
from schemas.events import DomainRef
from schemas.replies import (
    DomainCounts,
    DomainInfo,
    DomainList,
    DomainStateInfo,
    DomainStats,
    DomainStatsList,
    Done,
    ErrorBody,
    HostCapabilities,
    HostInfo,
    NodeStats,
    Pong,
)

UUID_TEXT = "5c1e3b1a-2f4d-4e6b-9a7c-0d8e9f1a2b3c"
SPEC: dict[str, Any] = {"name": "web", "image": "busybox:latest", "command": ["sleep", "3600"]}
WEB = {"name": "web"}

MINIMAL: dict[str, dict[str, Any]] = {
    "domain.define": {"args": {"spec": SPEC}},
    "domain.create_xml": {"args": {"spec": SPEC}},
    "domain.create": {"target": WEB},
    "domain.shutdown": {"target": WEB},
    "domain.destroy": {"target": WEB},
    "domain.reboot": {"target": WEB},
    "domain.suspend": {"target": WEB},
    "domain.resume": {"target": WEB},
    "domain.undefine": {"target": WEB},
    "domain.lookup": {"target": {"uuid": UUID_TEXT}},
    "domain.get_info": {"target": {"id": 4242}},
    "domain.get_state": {"target": WEB},
    "domain.set_autostart": {"target": WEB, "args": {"autostart": True}},
    "domain.set_memory": {"target": WEB, "args": {"memory_kib": 65536}},
    "domain.set_vcpus": {"target": WEB, "args": {"vcpus": 2}},
    "domain.rename": {"target": WEB, "args": {"new_name": "web2"}},
    "domain.get_xml_desc": {"target": WEB},
    "host.list_domains": {},
    "host.get_info": {},
    "host.ping": {},
    "host.login": {
        "args": {"registry": "registry.example:5000", "username": "u", "password": "pw"}
    },
    "host.logout": {"args": {"registry": "registry.example"}},
    "domain.get_stats": {"target": WEB},
    "host.get_all_domain_stats": {},
    "host.get_capabilities": {},
    "host.get_node_stats": {},
    "network.define": {"args": {"spec": {"name": "lan"}}},
    "network.create": {"target": {"name": "lan"}},
    "network.destroy": {"target": {"name": "lan"}},
    "network.undefine": {"target": {"name": "lan"}},
    "network.set_autostart": {"target": {"name": "lan"}, "args": {"autostart": True}},
    "network.lookup": {"target": {"uuid": UUID_TEXT}},
    "network.get_xml_desc": {"target": {"name": "lan"}},
    "network.get_dhcp_leases": {"target": {"name": "lan"}},
    "host.list_networks": {},
    "domain.attach_device": {"target": WEB, "args": {"interface": {"network": "lan"}}},
    "domain.detach_device": {"target": WEB, "args": {"interface": {"network": "lan"}}},
    "domain.interface_addresses": {"target": WEB},
    "host.list_pools": {},
    "pool.lookup": {"args": {"pool": "default"}},
    "pool.get_xml_desc": {"args": {"pool": "default"}},
    "pool.list_volumes": {"args": {"pool": "default"}},
    "volume.create": {"args": {"pool": "default", "name": "data"}},
    "volume.delete": {"args": {"pool": "default", "volume": "data"}},
    "volume.get_info": {"args": {"pool": "default", "volume": "data"}},
    "volume.get_xml_desc": {"args": {"pool": "default", "volume": "data"}},
    "domain.snapshot_create": {"target": WEB},
    "domain.snapshot_list": {"target": WEB},
    "domain.snapshot_current": {"target": WEB},
    "snapshot.lookup": {"target": WEB, "args": {"snapshot": "s1"}},
    "snapshot.get_xml_desc": {"target": WEB, "args": {"snapshot": "s1"}},
    "domain.snapshot_revert": {"target": WEB, "args": {"snapshot": "s1"}},
    "snapshot.delete": {"target": WEB, "args": {"snapshot": "s1"}},
    "domain.set_metadata": {"target": WEB, "args": {"type": "title"}},
    "domain.get_metadata": {"target": WEB, "args": {"type": "description"}},
    "domain.get_console_output": {"target": WEB},
    "domain.get_tuning": {"target": WEB},
    "domain.set_tuning": {"target": WEB, "args": {"cpu_shares": 512}},
    "domain.open_console": {"target": WEB, "args": {"queue": "amq.gen-x"}},
}
"""The smallest valid body of every op, without the envelope."""


def body(op: str, **fields: Any) -> bytes:
    document: dict[str, Any] = {"v": 1, "id": "cmd-1", "op": op, **MINIMAL[op]}
    for key, value in fields.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return json.dumps(document).encode()


def spec_body(**spec: Any) -> bytes:
    return body("domain.define", args={"spec": {**SPEC, **spec}})


# -- commands --------------------------------------------------------------------------------


def test_every_op_has_a_minimal_body() -> None:
    assert set(MINIMAL) == set(OPS)


@pytest.mark.parametrize("op", OPS)
def test_op_round_trips(op: str) -> None:
    command = parse_command(body(op))
    assert command.op == op
    assert command.id == "cmd-1"
    assert parse_command(command.model_dump_json().encode()) == command


def test_deadline_round_trips() -> None:
    command = parse_command(body("host.ping", deadline="2026-11-28T21:00:05Z"))
    assert command.deadline == datetime(2026, 11, 28, 21, 0, 5, tzinfo=UTC)
    assert parse_command(command.model_dump_json().encode()) == command
    assert command.expired(datetime(2026, 11, 28, 21, 0, 6, tzinfo=UTC))
    assert not command.expired(datetime(2026, 11, 28, 21, 0, 5, tzinfo=UTC))


def test_fallback_id_fills_a_missing_id() -> None:
    assert parse_command(body("host.ping", id=None), "msg-7").id == "msg-7"


def test_fallback_id_does_not_replace_a_given_id() -> None:
    assert parse_command(body("host.ping"), "msg-7").id == "cmd-1"


def test_target_by_each_key() -> None:
    assert str(Target(name="web")) == "name 'web'"
    assert str(Target(id=7)) == "id '7'"
    assert str(Target(uuid=UUID(UUID_TEXT))) == f"uuid '{UUID_TEXT}'"


def test_defaults_are_the_contracts() -> None:
    shutdown = parse_command(body("domain.shutdown"))
    assert shutdown.args.model_dump() == {"timeout_s": 10, "escalate": True}
    define = parse_command(body("domain.define"))
    assert define.op == "domain.define"
    spec = define.args.spec
    assert (spec.network, spec.init, spec.on_crash, spec.autostart) == (
        "none",
        True,
        "destroy",
        False,
    )


REJECTIONS: dict[str, tuple[bytes, str]] = {
    "malformed JSON": (b'{"op": "host.ping",', "JSON"),
    "not UTF-8": (b"\xff\xfe", "UTF-8"),
    "array body": (b'[{"op": "host.ping"}]', "object"),
    "string body": (b'"host.ping"', "object"),
    "unknown op": (b'{"v": 1, "id": "c", "op": "domain.migrate"}', "domain.migrate"),
    "no op": (b'{"v": 1, "id": "c"}', "op"),
    "no id": (body("host.ping", id=None), "id"),
    "unknown top-level field": (body("host.ping", priority=5), "priority"),
    "unknown args field": (body("domain.destroy", args={"force": True}), "args.force"),
    "unknown spec field": (spec_body(privileged=True), "args.spec.privileged"),
    "name with a space": (body("domain.suspend", target={"name": "my web"}), "target.name"),
    "name with a leading dot": (body("domain.suspend", target={"name": ".web"}), "target.name"),
    "name of 64 chars": (body("domain.suspend", target={"name": "w" * 64}), "target.name"),
    "spec name bad": (spec_body(name="-web"), "args.spec.name"),
    "rename to bad name": (
        body("domain.rename", args={"new_name": "a/b"}),
        "args.new_name",
    ),
    "target with two keys": (body("domain.suspend", target={"name": "web", "id": 3}), "target"),
    "empty target": (body("domain.suspend", target={}), "target"),
    "target id 0": (body("domain.suspend", target={"id": 0}), "target.id"),
    "target id string": (body("domain.suspend", target={"id": "3"}), "target.id"),
    "target unknown key": (body("domain.suspend", target={"pid": 3}), "target.pid"),
    "domain op without target": (body("domain.suspend", target=None), "target"),
    "define with target": (body("domain.define", target=WEB), "target"),
    "host op with target": (body("host.ping", target=WEB), "target"),
    "bad uuid": (body("domain.lookup", target={"uuid": "not-a-uuid"}), "target.uuid"),
    "bad spec uuid": (spec_body(uuid="1234"), "args.spec.uuid"),
    "network host": (spec_body(network="host"), "args.spec.network"),
    "relative mount": (spec_body(mounts=[{"source": "data", "target": "/d"}]), "source"),
    "mount with ..": (spec_body(mounts=[{"source": "/srv/../etc", "target": "/d"}]), "source"),
    "mount target with ..": (spec_body(mounts=[{"source": "/srv", "target": "/../d"}]), "target"),
    "workdir with ..": (spec_body(workdir="/app/.."), "args.spec.workdir"),
    "spec memory below 6 MiB": (spec_body(memory_kib=6143), "args.spec.memory_kib"),
    "set_memory below 6 MiB": (
        body("domain.set_memory", args={"memory_kib": 6143}),
        "args.memory_kib",
    ),
    "spec vcpus 0": (spec_body(vcpus=0), "args.spec.vcpus"),
    "set_vcpus 0": (body("domain.set_vcpus", args={"vcpus": 0}), "args.vcpus"),
    "empty command": (spec_body(command=[]), "args.spec.command"),
    "version 2": (body("host.ping", v=2), "v"),
    "timeout as string": (body("domain.shutdown", args={"timeout_s": "10"}), "args.timeout_s"),
    "timeout negative": (body("domain.shutdown", args={"timeout_s": -1}), "args.timeout_s"),
    "autostart as string": (
        body("domain.set_autostart", args={"autostart": "true"}),
        "args.autostart",
    ),
    "deadline without timezone": (body("host.ping", deadline="2026-11-28T21:00:05"), "deadline"),
    "deadline not a date": (body("host.ping", deadline="tomorrow"), "deadline"),
    "missing required args": (body("domain.set_memory", args={}), "args.memory_kib"),
    "set_tuning of nothing": (body("domain.set_tuning", args={"live": True}), "no control to set"),
    "cpu_shares below the kernel's": (
        body("domain.set_tuning", args={"cpu_shares": 1}),
        "args.cpu_shares",
    ),
    "swap without memory": (
        spec_body(swap_hard_limit_kib=65536),
        "a swap_hard_limit needs a memory hard_limit",
    ),
    "swap below memory": (
        spec_body(memory_kib=65536, swap_hard_limit_kib=32768),
        "must be lower than or equal to swap_hard_limit",
    ),
    "soft above hard": (
        spec_body(memory_kib=32768, soft_limit_kib=65536),
        "a memory soft_limit above the hard_limit",
    ),
    "unknown list flag": (body("host.list_domains", args={"flags": ["zombie"]}), "args.flags"),
    "empty password": (
        body("host.login", args={"registry": "r.io", "username": "u", "password": ""}),
        "args.password",
    ),
}


@pytest.mark.parametrize(("raw", "mentions"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_rejection_says_why(raw: bytes, mentions: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_command(raw)
    assert mentions in caught.value.reason
    assert str(caught.value) == caught.value.reason


def test_boundaries_are_accepted() -> None:
    assert parse_command(body("domain.suspend", target={"name": "w" * 63}))
    assert parse_command(body("domain.suspend", target={"name": "a_b.c-d"}))
    assert parse_command(spec_body(memory_kib=6144, vcpus=1))
    assert parse_command(body("domain.shutdown", args={"timeout_s": 0}))


# -- login secrets ---------------------------------------------------------------------------


def test_login_password_stays_out_of_repr_but_goes_on_the_wire() -> None:
    password = "s3cr3t-hunter2"
    raw = body("host.login", args={"registry": "r.io", "username": "u", "password": password})
    command = parse_command(raw)
    assert isinstance(command, Login)
    assert isinstance(command.args.password, SecretStr)
    assert command.args.password.get_secret_value() == password
    assert password not in repr(command)
    assert password not in str(command)
    assert password not in repr(command.model_dump())
    assert password in command.model_dump_json()
    assert parse_command(command.model_dump_json().encode()) == command


# -- replies ---------------------------------------------------------------------------------

RECORD = DomainRecord(
    name="web",
    uuid=UUID(UUID_TEXT),
    id=4242,
    state=1,
    reason=1,
    persistent=True,
    autostart=False,
)
NOW = datetime(2026, 11, 28, 21, 0, 0, 123456, tzinfo=UTC)
RESULTS: dict[str, BaseModel] = {
    "record": RECORD,
    "list": DomainList(domains=[RECORD]),
    "info": DomainInfo(state=1, max_mem_kib=65536, memory_kib=1024, nr_virt_cpu=1, cpu_time_ns=7),
    "state": DomainStateInfo(state=5, reason=2),
    "host": HostInfo(
        hostname="h1",
        groups=["g"],
        cpus=4,
        memory_kib=1 << 20,
        engine_version="20.10",
        agent_version="0.1.0",
        heartbeat_s=10.0,
        domains=DomainCounts(total=1, active=1, inactive=0, persistent=1, transient=0),
    ),
    "pong": Pong(host="h1", time=NOW),
    "done": Done(),
    "stats": DomainStats(
        domain=DomainRef(name="web", uuid=UUID(UUID_TEXT), id=4242),
        time=NOW,
        stats={"state.state": 1, "cpu.time": 7, "block.0.name": "rootfs"},
    ),
    "stats_list": DomainStatsList(records=[]),
    "capabilities": HostCapabilities(
        capabilities="<capabilities/>", domain_capabilities="<domainCapabilities/>", sysinfo=""
    ),
    "node_stats": NodeStats(time=NOW, memory={"total": 1}, cpu={"idle": 2}, cpus=[]),
}


@pytest.mark.parametrize("result", RESULTS.values(), ids=RESULTS.keys())
def test_ok_reply_round_trips(result: BaseModel) -> None:
    reply = Reply(id="cmd-1", host="h1", ok=True, result=result)  # type: ignore[arg-type]
    again = Reply.model_validate_json(reply.model_dump_json())
    assert again == reply
    assert type(again.result) is type(result)


def test_error_reply_round_trips() -> None:
    error = ErrorBody.of(
        ErrorCode.NO_DOMAIN, "Domain not found: no domain with matching name 'web'"
    )
    reply = Reply(id="cmd-1", host="h1", ok=False, error=error)
    wire = json.loads(reply.model_dump_json())
    assert wire["error"] == {
        "code": "NO_DOMAIN",
        "vir_error": 42,
        "message": "Domain not found: no domain with matching name 'web'",
    }
    assert wire["v"] == 1
    assert Reply.model_validate_json(reply.model_dump_json()) == reply


# -- events ----------------------------------------------------------------------------------

DOMAIN_EVENT: dict[str, Any] = {
    "v": 1,
    "host": "h1",
    "seq": 1042,
    "time": "2026-11-28T21:00:00.123456Z",
    "domain": {"name": "web", "uuid": UUID_TEXT, "id": 4242},
    "origin": "agent",
    "cause": "6f1c",
}
EVENTS: dict[str, tuple[dict[str, Any], str]] = {
    "lifecycle": (
        {
            **DOMAIN_EVENT,
            "kind": "lifecycle",
            "event": "stopped",
            "event_code": 5,
            "detail": "destroyed",
            "detail_code": 1,
            "exit_code": 137,
        },
        "h1.lifecycle.stopped.destroyed",
    ),
    "reboot": ({**DOMAIN_EVENT, "kind": "reboot"}, "h1.reboot"),
    "tunable": ({**DOMAIN_EVENT, "kind": "tunable", "params": {"memory_kib": 65536}}, "h1.tunable"),
    "agent": (
        {
            "v": 1,
            "kind": "agent",
            "host": "h1",
            "time": "2026-11-28T21:00:00Z",
            "state": "heartbeat",
            "agent_version": "0.1.0",
            "groups": ["g"],
            "capabilities": [],
            "heartbeat_s": 5.0,
            "domains": 0,
        },
        "h1.agent.heartbeat",
    ),
}


@pytest.mark.parametrize(("document", "routing_key"), EVENTS.values(), ids=EVENTS.keys())
def test_event_validates_and_routes(document: dict[str, Any], routing_key: str) -> None:
    event = EVENT_ADAPTER.validate_json(json.dumps(document))
    assert event.kind == document["kind"]
    assert event.routing_key == routing_key
    assert EVENT_ADAPTER.validate_json(EVENT_ADAPTER.dump_json(event)) == event


@pytest.mark.parametrize(("document", "routing_key"), EVENTS.values(), ids=EVENTS.keys())
def test_event_refuses_unknown_field(document: dict[str, Any], routing_key: str) -> None:
    with pytest.raises(ValidationError, match="surprise"):
        EVENT_ADAPTER.validate_json(json.dumps({**document, "surprise": 1}))


def test_agent_event_has_no_seq() -> None:
    document = {**EVENTS["agent"][0], "seq": 1}
    with pytest.raises(ValidationError, match="seq"):
        EVENT_ADAPTER.validate_json(json.dumps(document))


def test_lifecycle_event_names_its_lifecycle() -> None:
    event = EVENT_ADAPTER.validate_json(json.dumps(EVENTS["lifecycle"][0]))
    assert event.kind == "lifecycle"
    assert event.lifecycle.name == "STOPPED_DESTROYED"


# -- libvirt's numbers -----------------------------------------------------------------------

ERROR_CODES = {
    "INTERNAL_ERROR": 1,
    "NO_SUPPORT": 3,
    "NO_CONNECT": 5,
    "INVALID_ARG": 8,
    "OPERATION_FAILED": 9,
    "XML_ERROR": 27,
    "DOM_EXIST": 28,
    "OPERATION_DENIED": 29,
    "NETWORK_EXIST": 36,
    "RPC": 39,
    "NO_DOMAIN": 42,
    "NO_NETWORK": 43,
    "AUTH_FAILED": 45,
    "NO_STORAGE_POOL": 49,
    "NO_STORAGE_VOL": 50,
    "OPERATION_INVALID": 55,
    "CONFIG_UNSUPPORTED": 67,
    "OPERATION_TIMEOUT": 68,
    "NO_DOMAIN_SNAPSHOT": 72,
    "ARGUMENT_UNSUPPORTED": 74,
    "OPERATION_ABORTED": 78,
    "NO_DOMAIN_METADATA": 80,
    "OPERATION_UNSUPPORTED": 84,
    "RESOURCE_BUSY": 87,
    "ACCESS_DENIED": 88,
    "STORAGE_VOL_EXIST": 90,
}
"""The code list of docs/protocol.md#replies, exactly."""

DOMAIN_STATES = {
    "NOSTATE": 0,
    "RUNNING": 1,
    "BLOCKED": 2,
    "PAUSED": 3,
    "SHUTDOWN": 4,
    "SHUTOFF": 5,
    "CRASHED": 6,
    "PMSUSPENDED": 7,
}


def test_error_codes_are_libvirts() -> None:
    assert {code.name: code.value for code in ErrorCode} == ERROR_CODES


@pytest.mark.parametrize("code", list(ErrorCode), ids=[code.name for code in ErrorCode])
def test_error_code_has_a_prefix(code: ErrorCode) -> None:
    assert code.prefix


def test_domain_states_are_libvirts() -> None:
    assert {state.name: state.value for state in DomainState} == DOMAIN_STATES


def test_reasons_are_libvirts() -> None:
    assert (RunningReason.BOOTED, RunningReason.FROM_SNAPSHOT, RunningReason.UNPAUSED) == (1, 4, 5)
    assert int(PausedReason.USER) == 1
    assert {reason.name: reason.value for reason in ShutoffReason} == {
        "UNKNOWN": 0,
        "SHUTDOWN": 1,
        "DESTROYED": 2,
        "CRASHED": 3,
        "FAILED": 6,
        "FROM_SNAPSHOT": 7,
    }


def test_event_ids_are_libvirts() -> None:
    assert {event.name: event.value for event in EventId} == {
        "LIFECYCLE": 0,
        "REBOOT": 1,
        "BALLOON_CHANGE": 13,
        "TUNABLE": 17,
        "DEVICE_REMOVED": 15,
        "AGENT_LIFECYCLE": 18,
        "DEVICE_ADDED": 19,
        "METADATA_CHANGE": 23,
    }


# -- models are frozen and closed ------------------------------------------------------------

FROZEN: dict[str, tuple[BaseModel, str, Any]] = {
    "command": (parse_command(body("host.ping")), "id", "other"),
    "target": (Target(name="web"), "name", "other"),
    "spec": (DomainSpec(name="web", image="busybox"), "image", "alpine"),
    "record": (RECORD, "state", 5),
    "reply": (Reply(id="c", host="h1", ok=True, result=Done()), "ok", False),
    "event": (EVENT_ADAPTER.validate_json(json.dumps(EVENTS["reboot"][0])), "seq", 2),
}


@pytest.mark.parametrize(("model", "field", "value"), FROZEN.values(), ids=FROZEN.keys())
def test_models_are_frozen(model: BaseModel, field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        setattr(model, field, value)


CLOSED: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    "spec": (DomainSpec, SPEC),
    "record": (DomainRecord, json.loads(RECORD.model_dump_json())),
    "reply": (Reply, {"id": "c", "host": "h1", "ok": True}),
}


@pytest.mark.parametrize(("model", "document"), CLOSED.values(), ids=CLOSED.keys())
def test_models_forbid_extra_fields(model: type[BaseModel], document: dict[str, Any]) -> None:
    assert model.model_validate_json(json.dumps(document))
    with pytest.raises(ValidationError, match="Extra inputs"):
        model.model_validate_json(json.dumps({**document, "extra": 1}))


# -- JSON Schema -----------------------------------------------------------------------------


def test_json_schemas_cover_every_wire_model() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"Command", "Reply", "Event", "DomainSpec", "DomainRecord"}
    for name, schema in schemas.items():
        assert isinstance(schema, dict), name
        assert "$defs" in schema or "properties" in schema, name
        json.dumps(schema)


@pytest.mark.parametrize("op", OPS)
def test_command_schema_names_every_op(op: str) -> None:
    assert json.dumps(op) in json.dumps(json_schemas()["Command"])


def test_command_schema_accepts_and_refuses_like_the_models() -> None:
    schema = json_schemas()["Command"]
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    # checked once: ``jsonschema.validate`` checks the whole schema at every call
    validator = validator_class(schema)
    for op in OPS:
        validator.validate(json.loads(body(op)))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(json.loads(body("host.ping", priority=5)))
