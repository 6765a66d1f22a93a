"""MkDocs hook: the wire reference rendered from the models in ``schemas/``.

A page marks where a generated part goes with ``<!-- wire:NAME -->`` on a line of its
own. An unknown NAME, an op without a libvirt function in ``LIBVIRT``, or a function for
an op that no longer exists fails the build, so the reference cannot fall behind the
models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from enum import IntEnum
from types import ModuleType
from typing import Any, get_args

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page
from pydantic import BaseModel

import schemas
from schemas import topology
from schemas.codes import (
    DomainState,
    ErrorCode,
    EventId,
    Lifecycle,
    PausedReason,
    RunningReason,
    ShutoffReason,
)
from schemas.commands import OPS, Command, DomainCommand, NetworkCommand
from schemas.events import Event

LIBVIRT: dict[str, str] = {
    "domain.define": "virDomainDefineXML",
    "domain.create_xml": "virDomainCreateXML",
    "domain.create": "virDomainCreate",
    "domain.shutdown": "virDomainShutdown",
    "domain.destroy": "virDomainDestroy",
    "domain.reboot": "virDomainReboot",
    "domain.suspend": "virDomainSuspend",
    "domain.resume": "virDomainResume",
    "domain.undefine": "virDomainUndefine",
    "domain.lookup": "virDomainLookupByName / ByUUID / ByID",
    "domain.get_info": "virDomainGetInfo",
    "domain.get_state": "virDomainGetState",
    "domain.set_autostart": "virDomainSetAutostart",
    "domain.set_memory": "virDomainSetMemory",
    "domain.set_vcpus": "virDomainSetVcpus",
    "domain.rename": "virDomainRename",
    "domain.get_xml_desc": "virDomainGetXMLDesc",
    "host.list_domains": "virConnectListAllDomains",
    "host.get_info": "virConnectGetHostname / virNodeGetInfo",
    "host.ping": "—",
    "host.login": "— (docker login)",
    "host.logout": "— (docker logout)",
    "domain.get_stats": "virDomainListGetStats (and its memory, block, interface, CPU stats)",
    "domain.get_tuning": "virDomainGetSchedulerParametersFlags, virDomainGetMemoryParameters",
    "domain.set_tuning": (
        "virDomainSetSchedulerParametersFlags, virDomainSetMemoryParameters, "
        "virDomainSetMemoryFlags, virDomainSetVcpusFlags"
    ),
    "host.get_all_domain_stats": "virConnectGetAllDomainStats",
    "host.get_capabilities": "virConnectGetCapabilities / GetDomainCapabilities / GetSysinfo",
    "host.get_node_stats": "virNodeGetMemoryStats / virNodeGetCPUStats",
    "network.define": "virNetworkDefineXML",
    "network.create": "virNetworkCreate",
    "network.destroy": "virNetworkDestroy",
    "network.undefine": "virNetworkUndefine",
    "network.set_autostart": "virNetworkSetAutostart",
    "network.lookup": "virNetworkLookupByName / ByUUID",
    "network.get_xml_desc": "virNetworkGetXMLDesc",
    "network.get_dhcp_leases": "virNetworkGetDHCPLeases",
    "host.list_networks": "virConnectListAllNetworks",
    "domain.attach_device": "virDomainAttachDeviceFlags",
    "domain.detach_device": "virDomainDetachDeviceFlags",
    "domain.interface_addresses": "virDomainInterfaceAddresses",
    "host.list_pools": "virConnectListAllStoragePools",
    "pool.lookup": "virStoragePoolLookupByName / virStoragePoolGetInfo",
    "pool.get_xml_desc": "virStoragePoolGetXMLDesc",
    "pool.list_volumes": "virStoragePoolListAllVolumes",
    "volume.create": "virStorageVolCreateXML",
    "volume.delete": "virStorageVolDelete",
    "volume.get_info": "virStorageVolLookupByName / virStorageVolGetInfo",
    "volume.get_xml_desc": "virStorageVolGetXMLDesc",
    "domain.snapshot_create": "virDomainSnapshotCreateXML",
    "domain.snapshot_list": "virDomainListAllSnapshots",
    "domain.snapshot_current": "virDomainSnapshotCurrent",
    "snapshot.lookup": "virDomainSnapshotLookupByName",
    "snapshot.get_xml_desc": "virDomainSnapshotGetXMLDesc",
    "domain.snapshot_revert": "virDomainRevertToSnapshot",
    "snapshot.delete": "virDomainSnapshotDelete",
    "domain.set_metadata": "virDomainSetMetadata",
    "domain.get_metadata": "virDomainGetMetadata",
    "domain.get_console_output": "— (nova's get_console_output)",
    "domain.open_console": "virDomainOpenConsole",
}
"""The libvirt function each op stands for: the one fact of the op table that the models
do not carry."""

OTHER_EVENT_IDS = {
    "device": "`DEVICE_ADDED` (19), `DEVICE_REMOVED` (15)",
    "network": "network `LIFECYCLE` (0)",
    "image": "— (pull progress)",
}
"""Event kinds whose libvirt event ID is not named by the kind."""
LIBVIRT_EVENTS = {"health": "AGENT_LIFECYCLE"}
"""Event kinds whose libvirt event is not named as they are."""

REASONS: dict[DomainState, type[IntEnum]] = {
    DomainState.RUNNING: RunningReason,
    DomainState.PAUSED: PausedReason,
    DomainState.SHUTOFF: ShutoffReason,
}

MARKER = re.compile(r"^<!-- wire:([a-z_]+) -->$", re.MULTILINE)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _union_members(annotated: Any) -> tuple[type[BaseModel], ...]:
    """The models of an ``Annotated[A | B | …, Field(discriminator=…)]`` union."""
    return tuple(get_args(get_args(annotated)[0]))


def _range(low: object, high: object, unit: str = "") -> str:
    if low is not None and high is not None:
        return f"{low}\N{EN DASH}{high}{unit}"
    return f"≥ {low}{unit}" if low is not None else f"≤ {high}{unit}"


def _describe(name: str, prop: dict[str, Any], required: bool) -> str:
    """One argument from its JSON Schema: type, default and bounds."""
    if "$ref" in prop:
        kind = f"`{prop['$ref'].rsplit('/', 1)[-1]}`"
    elif prop.get("type") == "array":
        items = prop.get("items", {})
        values = items.get("enum")
        kind = "list of " + (" ".join(f"`{v}`" for v in values) if values else items["type"])
    else:
        kind = str(prop.get("type", "any"))
    head = f"`{name}` {kind}"
    head += ", required" if required else ""
    head += f" = `{json.dumps(prop['default'])}`" if "default" in prop else ""
    parts = [head]
    if "minimum" in prop or "maximum" in prop:
        parts.append(_range(prop.get("minimum"), prop.get("maximum")))
    if "minLength" in prop or "maxLength" in prop:
        parts.append(_range(prop.get("minLength"), prop.get("maxLength"), " chars"))
    if "pattern" in prop:
        parts.append(f"`{prop['pattern']}`")
    if prop.get("writeOnly"):
        parts.append("never echoed")
    return _cell(", ".join(parts))


def ops_table() -> str:
    models = {get_args(m.model_fields["op"].annotation)[0]: m for m in _union_members(Command)}
    missing = sorted(set(OPS) - set(LIBVIRT))
    stale = sorted(set(LIBVIRT) - set(OPS))
    if missing or stale:
        raise PluginError(f"LIBVIRT in {__file__}: no entry for {missing}, no such op {stale}")
    rows = ["| op | model | `target` | `args` | libvirt |", "|---|---|---|---|---|"]
    for op in OPS:
        model = models[op]
        args_field = model.model_fields["args"]
        args_model = args_field.annotation
        assert isinstance(args_model, type) and issubclass(args_model, BaseModel)
        schema = args_model.model_json_schema()
        required = set(schema.get("required", []))
        described = [
            _describe(name, prop, name in required)
            for name, prop in schema.get("properties", {}).items()
        ]
        if "oneOf" in schema:
            described.append(
                "exactly one of "
                + " and ".join(f"`{one['required'][0]}`" for one in schema["oneOf"])
            )
        args = "<br>".join(described) or "—"
        if described and not args_field.is_required():
            args += "<br>(`args` may be left out)"
        target = "required" if issubclass(model, DomainCommand | NetworkCommand) else "—"
        rows.append(f"| `{op}` | `{model.__name__}` | {target} | {args} | {LIBVIRT[op]} |")
    return "\n".join(rows)


def error_codes() -> str:
    rows = ["| code | `vir_error` | message prefix |", "|---|---|---|"]
    rows += [f"| `{code.name}` | {int(code)} | `{code.prefix}: …` |" for code in ErrorCode]
    return "\n".join(rows)


def event_kinds() -> str:
    rows = ["| `kind` | model | routing key | libvirt event ID |", "|---|---|---|---|"]
    for model in _union_members(Event):
        kind = model.model_fields["kind"].default
        states = (
            get_args(model.model_fields["state"].annotation)
            if "state" in model.model_fields
            else (None,)
        )
        keys = [
            model.model_construct(
                host="<host>", event="<event>", detail="<detail>", state=state, status="<status>"
            ).routing_key  # type: ignore[attr-defined]
            for state in states
        ]
        event_id = EventId.__members__.get(LIBVIRT_EVENTS.get(kind, kind.upper()))
        libvirt = "— (presence)" if event_id is None else f"`{event_id.name}` ({int(event_id)})"
        libvirt = OTHER_EVENT_IDS.get(kind, libvirt)
        routing = _cell(" · ".join(f"`{key}`" for key in keys))
        rows.append(f"| `{kind}` | `{model.__name__}` | {routing} | {libvirt} |")
    return "\n".join(rows)


def lifecycle() -> str:
    rows = [
        "| `event` | `event_code` | `detail` | `detail_code` | state (reason) after |",
        "|---|---|---|---|---|",
    ]
    for member in Lifecycle:
        outcome = member.outcome
        after = "unchanged"
        if outcome is not None:
            state, reason = outcome
            after = f"{state.name} ({REASONS[state](reason).name})"
        rows.append(
            f"| `{member.event}` | {member.event_code} | `{member.detail}` "
            f"| {member.detail_code} | {after} |"
        )
    return "\n".join(rows)


def states() -> str:
    rows = ["| state | number | reasons |", "|---|---|---|"]
    for state in DomainState:
        reasons = REASONS.get(state)
        listed = ", ".join(f"{r.name} {int(r)}" for r in reasons) if reasons else ""
        rows.append(f"| {state.name} | {int(state)} | {listed} |")
    return "\n".join(rows)


def _name(value: object) -> str | None:
    if isinstance(value, str):
        return value
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else None


def names(module: ModuleType = topology) -> str:
    """Every name the broker knows virtbus by, as ``schemas.topology`` defines it."""
    rows = ["| in `schemas.topology` | name on the broker |", "|---|---|"]
    for attribute, value in vars(module).items():
        if attribute.isupper() and (name := _name(value)) is not None:
            rows.append(f"| `{attribute}` | `{name}` |")
    for attribute in ("host_queue", "group_key"):
        function: Callable[[str], object] | None = getattr(module, attribute, None)
        if function is not None and (name := _name(function("<x>"))) is not None:
            rows.append(f"| `{attribute}(x)` | `{name}` |")
    return "\n".join(rows)


def json_schemas() -> str:
    blocks = []
    for name, schema in schemas.json_schemas().items():
        text = json.dumps(schema, indent=2, ensure_ascii=False)
        body = "\n".join("    " + line for line in text.splitlines())
        blocks.append(
            f'### {name}\n\n??? example "{name} (JSON Schema)"\n\n    ```json\n{body}\n    ```\n'
        )
    return "\n".join(blocks)


GENERATORS: dict[str, Callable[[], str]] = {
    "ops": ops_table,
    "error_codes": error_codes,
    "event_kinds": event_kinds,
    "lifecycle": lifecycle,
    "states": states,
    "names": names,
    "json_schemas": json_schemas,
}


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    def generate(match: re.Match[str]) -> str:
        generator = GENERATORS.get(match.group(1))
        if generator is None:
            raise PluginError(f"{page.file.src_uri}: unknown marker {match.group(0)}")
        return generator()

    return MARKER.sub(generate, markdown)
