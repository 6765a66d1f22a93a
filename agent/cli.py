"""``virtbus``: the operator's virsh for a fleet of Docker hosts, and the agent.

Domain verbs talk to one host (``--host``), one group (``--group``) or every host
(``--all-hosts``). Tables for people, ``--json`` for scripts; errors go to stderr as
``error: <message>`` with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from agent import __version__, logs
from agent.agent import Agent
from agent.client import (
    BroadcastResult,
    Connection,
    EventKind,
    HostStatus,
    VirtbusError,
    connect,
)
from agent.config import DEFAULT_AMQP_URL, Config
from agent.gateway import usercli
from agent.provision import (
    DEFAULT_MANAGEMENT_URL,
    DEFAULT_VHOST,
    Grant,
    Management,
    ProvisionError,
    agent_grant,
    new_password,
    orchestrator_grant,
    subscriber_grant,
)
from agent.signing import SigningKey
from agent.tls import client_context
from schemas import json_schemas
from schemas.base import HostName
from schemas.codes import DomainState, ErrorCode, Lifecycle
from schemas.commands import ListFlag
from schemas.domain import DomainRecord
from schemas.events import AgentEvent, Event, LifecycleEvent, RebootEvent, TunableEvent
from schemas.replies import DomainInfo, DomainList, DomainStateInfo, DomainXml, Reply, Result

if TYPE_CHECKING:
    from agent.gateway.settings import GatewaySettings

STATE_NAMES = {
    DomainState.NOSTATE: "no state",
    DomainState.RUNNING: "running",
    DomainState.BLOCKED: "idle",
    DomainState.PAUSED: "paused",
    DomainState.SHUTDOWN: "in shutdown",
    DomainState.SHUTOFF: "shut off",
    DomainState.CRASHED: "crashed",
    DomainState.PMSUSPENDED: "pmsuspended",
}
REASON_NAMES: dict[tuple[int, int], str] = {
    (1, 0): "unknown",
    (1, 1): "booted",
    (1, 5): "unpaused",
    (3, 0): "unknown",
    (3, 1): "user",
    (5, 0): "unknown",
    (5, 1): "shutdown",
    (5, 2): "destroyed",
    (5, 3): "crashed",
    (5, 6): "failed",
    (6, 0): "unknown",
}


def state_name(state: int) -> str:
    return STATE_NAMES.get(DomainState(state), "unknown")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """virsh's layout: a leading space, aligned columns, a rule under the headers."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return " " + "   ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    rule = "-" * (sum(widths) + 3 * (len(widths) - 1) + 2)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def target_of(domain: str) -> dict[str, Any]:
    """A DOMAIN argument as virsh takes it: an ID, a UUID or a name."""
    if domain.isdigit():
        return {"id": int(domain)}
    try:
        return {"uuid": str(uuid.UUID(domain))}
    except ValueError:
        return {"name": domain}


SIZE_UNITS = {"": 1, "k": 1, "kib": 1, "m": 1024, "mib": 1024, "g": 1024**2, "gib": 1024**2}


def kib(text: str) -> int:
    """A size as virsh takes it: KiB by default, or with a unit (``512M``, ``1GiB``)."""
    number = text.lower().rstrip("kmgib")
    unit = text[len(number) :].lower()
    if not number.isdigit() or unit not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"invalid size '{text}' (KiB, or with K, M or G)")
    return int(number) * SIZE_UNITS[unit]


def read_definition(path: str) -> dict[str, Any]:
    """A definition file as a command's args: ``{"xml": …}`` for libvirt domain XML (a
    ``.xml`` name, or text that starts with ``<``), ``{"spec": …}`` for a JSON spec."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"cannot read {path}: {error}") from None
    if path.endswith(".xml") or text.lstrip("\ufeff \t\r\n").startswith("<"):
        return {"xml": text}
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, f"{path} is neither JSON nor XML: {error}"
        ) from None
    if not isinstance(spec, dict):
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"{path} must hold a JSON object")
    return {"spec": spec}


@dataclass(frozen=True)
class Request:
    """One verb as a command: the op, its args and target, and how to print the result."""

    op: str
    args: dict[str, Any] | None
    target: dict[str, Any] | None
    render: Callable[[Result], str]


def record_line(message: str) -> Callable[[Result], str]:
    def render(result: Result) -> str:
        name = result.name if isinstance(result, DomainRecord) else "?"
        return message.format(name=name)

    return render


def render_list(result: Result) -> str:
    assert isinstance(result, DomainList)
    rows = [(d.id if d.id > 0 else "-", d.name, state_name(d.state)) for d in result.domains]
    return table(["Id", "Name", "State"], rows)


def render_state(with_reason: bool) -> Callable[[Result], str]:
    def render(result: Result) -> str:
        assert isinstance(result, DomainStateInfo)
        name = state_name(result.state)
        if with_reason:
            name += f" ({REASON_NAMES.get((result.state, result.reason), 'unknown')})"
        return name

    return render


def render_xml(result: Result) -> str:
    assert isinstance(result, DomainXml)
    return result.xml.rstrip("\n")


def render_field(field: str) -> Callable[[Result], str]:
    def render(result: Result) -> str:
        assert isinstance(result, DomainRecord)
        value = getattr(result, field)
        return "-" if field == "id" and value < 0 else str(value)

    return render


LIST_FLAGS: dict[str, ListFlag] = {
    "state_running": "running",
    "state_paused": "paused",
    "state_shutoff": "shutoff",
    "persistent": "persistent",
    "transient": "transient",
    "autostart": "autostart",
    "no_autostart": "no_autostart",
    "inactive": "inactive",
}


def list_flags(args: argparse.Namespace) -> list[ListFlag]:
    flags = [flag for option, flag in LIST_FLAGS.items() if getattr(args, option)]
    if not args.all and not any(f in flags for f in ("running", "paused", "shutoff", "inactive")):
        flags.append("active")
    return flags


def request_of(args: argparse.Namespace) -> Request:
    """The command a domain verb stands for."""
    verb = args.verb
    if verb == "list":
        return Request("host.list_domains", {"flags": list_flags(args)}, None, render_list)
    if verb in ("define", "create"):
        definition = read_definition(args.file)
        op, message = {
            "define": ("domain.define", "Domain '{name}' defined from " + args.file),
            "create": ("domain.create_xml", "Domain '{name}' created from " + args.file),
        }[verb]
        extra = {"start_paused": True} if verb == "create" and args.paused else {}
        return Request(op, {**definition, **extra}, None, record_line(message))
    target = target_of(args.domain)
    simple: dict[str, tuple[str, str]] = {
        "shutdown": ("domain.shutdown", "Domain '{name}' is being shutdown"),
        "destroy": ("domain.destroy", "Domain '{name}' destroyed"),
        "reboot": ("domain.reboot", "Domain '{name}' is being rebooted"),
        "suspend": ("domain.suspend", "Domain '{name}' suspended"),
        "resume": ("domain.resume", "Domain '{name}' resumed"),
        "undefine": ("domain.undefine", "Domain '{name}' has been undefined"),
    }
    if verb in simple:
        op, message = simple[verb]
        args_of = {"timeout_s": args.grace} if verb == "shutdown" and args.grace else None
        return Request(op, args_of, target, record_line(message))
    if verb == "start":
        return Request(
            "domain.create",
            {"start_paused": args.paused},
            target,
            record_line("Domain '{name}' started"),
        )
    if verb == "domstate":
        return Request("domain.get_state", None, target, render_state(args.reason))
    if verb == "dumpxml":
        return Request("domain.get_xml_desc", {"inactive": args.inactive}, target, render_xml)
    if verb in ("domid", "domuuid", "domname"):
        return Request("domain.lookup", None, target, render_field(verb[3:]))
    if verb == "autostart":
        message = (
            "Domain '{name}' " + ("unmarked" if args.disable else "marked") + " as autostarted"
        )
        return Request(
            "domain.set_autostart", {"autostart": not args.disable}, target, record_line(message)
        )
    if verb == "setmem":
        return Request("domain.set_memory", {"memory_kib": args.size}, target, record_line(""))
    if verb == "setvcpus":
        return Request("domain.set_vcpus", {"vcpus": args.count}, target, record_line(""))
    if verb == "domrename":
        return Request(
            "domain.rename",
            {"new_name": args.new_name},
            target,
            record_line("Domain successfully renamed"),
        )
    raise AssertionError(f"no command for verb {verb}")


def dominfo_text(record: DomainRecord, info: DomainInfo) -> str:
    rows = [
        ("Id", record.id if record.id > 0 else "-"),
        ("Name", record.name),
        ("UUID", record.uuid),
        ("OS Type", "exe"),
        ("State", state_name(record.state)),
        ("CPU(s)", info.nr_virt_cpu),
        ("CPU time", f"{info.cpu_time_ns / 1e9:.1f}s"),
        ("Max memory", f"{info.max_mem_kib} KiB"),
        ("Used memory", f"{info.memory_kib} KiB"),
        ("Persistent", "yes" if record.persistent else "no"),
        ("Autostart", "enable" if record.autostart else "disable"),
    ]
    return "\n".join(f"{label + ':':<15} {value}" for label, value in rows)


class Output:
    """Where results go: text for people or JSON for scripts; errors always to stderr."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err

    def result(self, value: Any, text: str) -> None:
        if self.as_json:
            json.dump(_jsonable(value), self.out, indent=2, default=str)
            self.out.write("\n")
        elif text:
            print(text, file=self.out)

    def error(self, message: str) -> None:
        print(f"error: {message}", file=self.err)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    return value


async def run_domain_verb(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    if args.verb == "dominfo":
        target = target_of(args.domain)
        record = await conn.call(args.host, "domain.lookup", target=target)
        info = await conn.call(args.host, "domain.get_info", target=target)
        assert isinstance(record, DomainRecord) and isinstance(info, DomainInfo)
        output.result({"record": record, "info": info}, dominfo_text(record, info))
        return 0
    request = request_of(args)
    timeout_s = args.timeout
    if request.args and "timeout_s" in request.args:
        timeout_s = max(timeout_s, request.args["timeout_s"] + 10.0)
    result = await conn.call(args.host, request.op, request.args, request.target, timeout_s)
    output.result(result, request.render(result))
    return 0


class Progress:
    """Hosts answered / expected, redrawn on one stderr line while replies come in."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._live = stream.isatty()

    def __call__(self, host: str, answered: int, expected: int | None) -> None:
        total = "?" if expected is None else str(expected)
        if self._live:
            self._stream.write(f"\r{answered}/{total} hosts answered (last: {host})\x1b[K")
            self._stream.flush()

    def done(self, result: BroadcastResult) -> None:
        if result.expected is None:
            summary = f"{len(result.replies)} hosts answered"
        else:
            answered = len(result.expected & result.replies.keys())
            others = len(result.replies) - answered
            summary = f"{answered}/{len(result.expected)} expected hosts answered"
            summary += f" (+{others} others)" if others else ""
        summary += f" in {result.elapsed_s:.2f} s"
        self._stream.write(f"\r{summary}\x1b[K\n" if self._live else f"{summary}\n")


async def run_broadcast(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    request = request_of(args)
    expect = expected_hosts(args)
    progress = Progress(output.err)
    result = await conn.broadcast(
        request.op,
        request.args,
        target=request.target,
        group=args.group,
        expect=expect,
        timeout_s=args.timeout,
        progress=progress,
    )
    progress.done(result)
    remember(result.replies)
    if output.as_json:
        output.result(
            {
                "replies": result.replies,
                "expected": sorted(result.expected) if result.expected is not None else None,
                "missing": sorted(result.missing),
            },
            "",
        )
    else:
        for host in sorted(result.replies):
            reply = result.replies[host]
            print(f"== {host}", file=output.out)
            if reply.error is not None:
                print(f"error: {reply.error.message}", file=output.out)
            elif reply.result is not None:
                print(request.render(reply.result), file=output.out)
        for host in sorted(result.missing):
            print(f"== {host}\nerror: no reply within {args.timeout:g} s", file=output.out)
    for host in sorted(result.missing):
        output.error(f"host {host} did not answer within {args.timeout:g} s")
    return 1 if result.failed or result.missing else 0


def known_hosts_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(os.environ.get("VIRTBUS_KNOWN_HOSTS", Path(base) / "virtbus" / "hosts.json"))


def load_known() -> dict[str, dict[str, Any]]:
    path = known_hosts_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return known if isinstance(known, dict) else {}


def save_known(known: dict[str, dict[str, Any]]) -> None:
    path = known_hosts_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1, sort_keys=True))
    except OSError:
        return


def remember(replies: dict[str, Reply], statuses: Iterable[HostStatus] = ()) -> None:
    """Keep the hosts seen, so that a later broadcast knows whom to expect."""
    known = load_known()
    now = datetime.now(UTC).isoformat()
    for host in replies:
        known.setdefault(host, {}).update(last_seen=now, state="alive")
    for status in statuses:
        known[status.host] = {
            "last_seen": status.last_seen.isoformat(),
            "state": status.state,
            "groups": status.groups,
            "heartbeat_s": status.heartbeat_s,
            "agent_version": status.agent_version,
        }
    save_known(known)


def expected_hosts(args: argparse.Namespace) -> set[str] | None:
    if args.expect:
        return {h for item in args.expect for h in item.split(",") if h}
    known = load_known()
    chosen = {
        host
        for host, facts in known.items()
        if facts.get("state") != "offline"
        and (args.group is None or args.group in facts.get("groups", []))
    }
    return chosen or None


async def run_hosts(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    known = load_known()
    if args.forget:
        for host in args.forget:
            known.pop(host, None)
        save_known(known)
        return 0
    async with conn.hosts(misses=args.misses, discover_s=args.timeout) as registry:
        now = datetime.now(UTC)
        for host, facts in known.items():
            if host in registry.hosts:
                continue
            last_seen = datetime.fromisoformat(facts.get("last_seen", now.isoformat()))
            heartbeat_s = float(facts.get("heartbeat_s", 10.0))
            silent_s = (now - last_seen).total_seconds()
            registry.hosts[host] = HostStatus(
                host=host,
                state="offline"
                if facts.get("state") == "offline"
                else ("lost" if silent_s > args.misses * heartbeat_s else "alive"),
                last_seen=last_seen,
                agent_version=str(facts.get("agent_version", "")),
                groups=list(facts.get("groups", [])),
                heartbeat_s=heartbeat_s,
            )
        statuses = sorted(registry.hosts.values(), key=lambda s: s.host)
    remember({}, statuses)
    shown = [s for s in statuses if args.group is None or args.group in s.groups]
    rows = [
        (
            s.host,
            s.state,
            s.last_seen.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            s.agent_version or "-",
            s.domains,
            ",".join(s.groups) or "-",
        )
        for s in shown
    ]
    output.result(
        [{**s.__dict__, "last_seen": s.last_seen.isoformat()} for s in shown],
        table(["Host", "State", "Last seen (UTC)", "Version", "Domains", "Groups"], rows),
    )
    return 0


def event_text(event: Event) -> str:
    if isinstance(event, LifecycleEvent):
        return (
            f"event 'lifecycle' for domain '{event.domain.name}' on host '{event.host}': "
            f"{event.event.capitalize()} {event.detail.capitalize()}"
        )
    if isinstance(event, RebootEvent):
        return f"event 'reboot' for domain '{event.domain.name}' on host '{event.host}'"
    if isinstance(event, TunableEvent):
        params = "".join(f"\n\t{key}: {value}" for key, value in event.params.items())
        return f"event 'tunable' for domain '{event.domain.name}' on host '{event.host}':{params}"
    assert isinstance(event, AgentEvent)
    return f"event 'agent' for host '{event.host}': {event.state}"


async def run_event(conn: Connection, args: argparse.Namespace, output: Output) -> int:
    if not args.all and args.event is None:
        output.error("one of --event or --all is required")
        return 1
    kind: EventKind | None = None
    event: str | None = None
    if args.event in ("reboot", "tunable", "agent"):
        kind = args.event
    elif args.event == "lifecycle":
        kind = "lifecycle"
    elif args.event is not None:
        event = args.event
    received = 0
    async with conn.events(
        host=args.host or "*", domain=args.domain, kind=kind, event=event
    ) as stream:
        if args.ready:
            print("ready", file=output.err, flush=True)
        loop = asyncio.get_running_loop()
        deadline = None if args.timeout is None else loop.time() + args.timeout
        while True:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                break
            try:
                item = await (stream.next(left) if left is not None else stream.__anext__())
            except VirtbusError:
                break
            received += 1
            if output.as_json:
                print(json.dumps(_jsonable(item)), file=output.out)
            else:
                print(event_text(item), file=output.out)
            output.out.flush()
            if not args.loop:
                break
    print(f"events received: {received}", file=output.err)
    return 0


def _agent_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "agent",
        help="run the host agent",
        description="Run the host agent. Flags override VIRTBUS_* variables, which "
        "override the defaults.",
    )
    parser.add_argument("--host", help="this host's name, a DNS label (VIRTBUS_HOST)")
    parser.add_argument("--amqp-url", help="broker URL (VIRTBUS_AMQP_URL)")
    parser.add_argument(
        "--group", dest="groups", action="append", help="a group to join; repeatable"
    )
    parser.add_argument("--docker-url", help="Docker engine URL (VIRTBUS_DOCKER_URL)")
    parser.add_argument("--state-dir", help="base of the per-host state (VIRTBUS_STATE_DIR)")
    parser.add_argument("--queue-type", choices=["quorum", "classic"])
    parser.add_argument("--concurrency", type=int, help="commands run at once")
    parser.add_argument("--prefetch", type=int, help="commands taken from the queue at once")
    parser.add_argument("--heartbeat-s", type=float, help="seconds between heartbeats")
    parser.add_argument("--drain-s", type=float, help="graceful stop bound, in seconds")
    parser.add_argument("--reconcile-s", type=float, help="seconds between re-lists of Docker")
    parser.add_argument(
        "--outbox-limit", type=int, help="pending events beyond which commands wait"
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.add_argument("--metrics-port", type=int, help="serve /metrics and /health on this port")
    parser.add_argument("--metrics-host", help="address of the metrics endpoint (127.0.0.1)")
    parser.add_argument(
        "--trusted-key",
        dest="trusted_keys",
        action="append",
        metavar="ID=ALGORITHM:PATH",
        help="accept commands signed by this key (hmac-sha256 secret or ed25519 public key "
        "file); repeatable; any one makes signatures required (VIRTBUS_TRUSTED_KEYS)",
    )
    parser.add_argument(
        "--signing-window-s", type=float, help="allowed clock difference of a signed command"
    )
    parser.add_argument("--policy-file", help="TOML host policy (VIRTBUS_POLICY_FILE)")
    parser.add_argument("--max-message-bytes", type=int, help="largest command body accepted")
    parser.add_argument(
        "--declare-topology",
        action=argparse.BooleanOptionalAction,
        help="declare exchanges, the host queue and its bindings at start (default); "
        "--no-declare-topology for a user made by `virtbus provision agent` "
        "(VIRTBUS_DECLARE_TOPOLOGY)",
    )
    for peer, prefix in (("amqp", "amqps"), ("docker", "Docker over TLS")):
        for what, meaning in TLS_FILES.items():
            parser.add_argument(
                f"--{peer}-{what}-file",
                help=f"{prefix}: {meaning} (VIRTBUS_{peer.upper()}_{what.upper()}_FILE)",
            )


HOST_NAME: TypeAdapter[str] = TypeAdapter(HostName)


def host_name(text: str) -> str:
    """An argparse type: a host or group name (a DNS label)."""
    try:
        return HOST_NAME.validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a host or group name (a DNS label: a-z, 0-9, -)"
        ) from None


def _provision_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "provision",
        help="create broker users for agents, orchestrators and subscribers",
        description="Create (or reset) a RabbitMQ user with exactly the permissions of its "
        "role, through the management API. A generated password is printed once on stdout.",
    )
    roles = parser.add_subparsers(dest="role", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--management-url",
        default=os.environ.get("VIRTBUS_MANAGEMENT_URL", DEFAULT_MANAGEMENT_URL),
        help="management API with an administrator's credentials (VIRTBUS_MANAGEMENT_URL)",
    )
    common.add_argument("--vhost", default=DEFAULT_VHOST, help="virtual host (default /)")
    password = common.add_mutually_exclusive_group()
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    password.add_argument(
        "--password-env", metavar="VAR", help="take the password from this environment variable"
    )
    agent = roles.add_parser("agent", parents=[common], help="the agent of one host")
    agent.add_argument("host", type=host_name, help="the host's name")
    agent.add_argument(
        "--group",
        dest="groups",
        type=host_name,
        action="append",
        default=[],
        help="a group it may join; repeatable",
    )
    agent.add_argument("--user", help="user name (default agent-HOST)")
    agent.add_argument(
        "--queue-type",
        choices=["quorum", "classic"],
        default="quorum",
        help="type of the host queue declared here (default quorum)",
    )
    agent.add_argument(
        "--agent-declares",
        action="store_true",
        help="let the agent declare the topology itself (run without --no-declare-topology); "
        "it can then also bind its queue to other hosts' commands and delete shared exchanges",
    )
    orchestrator = roles.add_parser(
        "orchestrator", parents=[common], help="sends commands, reads replies and events"
    )
    orchestrator.add_argument("user", help="user name")
    subscriber = roles.add_parser("subscriber", parents=[common], help="reads events only")
    subscriber.add_argument("user", help="user name")
    subscriber.add_argument(
        "--host",
        dest="hosts",
        type=host_name,
        action="append",
        default=[],
        help="only this host's events; repeatable",
    )
    remove = roles.add_parser("remove", help="delete a user")
    remove.add_argument("user", help="user name")
    remove.add_argument(
        "--management-url", default=os.environ.get("VIRTBUS_MANAGEMENT_URL", DEFAULT_MANAGEMENT_URL)
    )


def _role(args: argparse.Namespace) -> tuple[str, Grant, str]:
    """The user, its grant, and what it may do in words."""
    if args.role == "agent":
        groups = f" (groups: {', '.join(args.groups)})" if args.groups else ""
        return (
            args.user or f"agent-{args.host}",
            agent_grant(args.host, args.groups, args.agent_declares),
            f"the agent of host {args.host}{groups}",
        )
    if args.role == "orchestrator":
        return args.user, orchestrator_grant(), "an orchestrator"
    only = f" of {', '.join(args.hosts)}" if args.hosts else ""
    return args.user, subscriber_grant(args.hosts), f"a subscriber to the events{only}"


async def run_provision(args: argparse.Namespace, output: Output) -> int:
    async with Management(args.management_url) as api:
        if args.role == "remove":
            if not await api.remove(args.user):
                output.error(f"no user {args.user!r}")
                return 1
            print(f"user {args.user!r} removed", file=sys.stderr)
            return 0
        if args.password_stdin:
            password = SecretStr(sys.stdin.readline().rstrip("\n"))
        elif args.password_env:
            password = SecretStr(os.environ.get(args.password_env, ""))
        else:
            password = new_password()
        if not password.get_secret_value():
            output.error("the password is empty")
            return 1
        user, grant, what = _role(args)
        declares_queue = args.role == "agent" and not args.agent_declares
        await api.provision(user, password, grant, args.vhost)
        await api.declare_topology(args.vhost)
        if declares_queue:
            await api.declare_host_queue(args.host, args.groups, args.queue_type, args.vhost)
        if not (args.password_stdin or args.password_env):
            print(password.get_secret_value())
        print(f"user {user!r} is now {what} on vhost {args.vhost!r}", file=sys.stderr)
        if declares_queue:
            print(
                "run the agent with --no-declare-topology: its queue and bindings are declared",
                file=sys.stderr,
            )
        return 0


TLS_FILES = {
    "ca": "CA bundle that signed the peer's certificate",
    "cert": "client certificate",
    "key": "client certificate's key",
}


def _signing_key(text: str) -> SigningKey:
    try:
        return SigningKey.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _gateway_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "gateway",
        parents=[_client_options()],
        help="serve libvirt's remote protocol: virsh -c virtbus+tcp://ADDRESS:PORT/HOST",
    )
    parser.add_argument(
        "--listen",
        type=listen_address,
        default=("127.0.0.1", 16509),
        help="ADDRESS:PORT (default 127.0.0.1:16509)",
    )
    parser.add_argument("--tls-cert", help="serve TLS (virtbus+tls://) with this PEM certificate")
    parser.add_argument("--tls-key", help="the certificate's PEM key")
    parser.add_argument(
        "--tls-ca", help="accept only clients with a certificate signed by this PEM CA"
    )
    from agent.gateway.settings import GatewaySettings

    _settings_options(parser, GatewaySettings)
    parser.set_defaults(timeout=30.0)


GATEWAY_GROUPS = {
    "who is admitted (see docs/gateway-security.md)": ("tls_allowed_dn", "sasl_users", "authz"),
    "limits (libvirtd's defaults)": (
        "max_clients",
        "max_anonymous_clients",
        "max_client_requests",
        "max_packet_bytes",
        "max_client_callbacks",
        "handshake_timeout_s",
        "packet_timeout_s",
        "keepalive_interval_s",
        "keepalive_count",
        "log_interval_s",
    ),
}


def _settings_options(parser: argparse.ArgumentParser, model: Any) -> None:
    """One option per settings field, ``--max-clients`` for ``max_clients``, in groups;
    the field's description is its help and its default is shown."""
    for title, names in GATEWAY_GROUPS.items():
        group = parser.add_argument_group(title)
        for name in names:
            info = model.model_fields[name]
            flag = "--" + name.replace("_", "-").removesuffix("-s")
            if name == "tls_allowed_dn":
                group.add_argument(
                    flag,
                    action="append",
                    dest=name,
                    metavar="DN",
                    help=f"{info.description} (repeat the option for each)",
                )
                continue
            kind = {int: int, float: float}.get(info.annotation, str)
            unit = " (seconds)" if name.endswith("_s") else ""
            default = "" if info.default is None else f" (default {info.default})"
            group.add_argument(
                flag,
                type=kind,
                dest=name,
                metavar="FILE" if info.annotation == Path | None else None,
                help=f"{info.description}{unit}{default}",
            )


def listen_address(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (``[::1]:PORT`` for IPv6) for ``--listen``."""
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDRESS:PORT")
    return address.strip("[]"), int(port)


def gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    """The options given on the command line; the defaults for the others."""
    from agent.gateway.settings import GatewaySettings

    given = {
        name: getattr(args, name)
        for names in GATEWAY_GROUPS.values()
        for name in names
        if getattr(args, name, None) is not None
    }
    return GatewaySettings.model_validate(given)


async def run_gateway(args: argparse.Namespace) -> int:
    from agent.gateway import Gateway, tls_context

    if (args.tls_key or args.tls_ca or args.sasl_users) and not args.tls_cert:
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, "--tls-key, --tls-ca and --sasl-users need --tls-cert"
        )
    if args.tls_allowed_dn and not args.tls_ca:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, "--tls-allowed-dn needs --tls-ca")
    try:
        tls = tls_context(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None
    except OSError as error:  # ssl.SSLError included
        raise VirtbusError.of(
            ErrorCode.INVALID_ARG, f"cannot load the TLS certificate, key or CA: {error}"
        ) from None
    try:
        broker_tls = client_context(args.ca_file, args.cert_file, args.key_file)
    except ValueError as error:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, str(error)) from None
    try:
        settings = gateway_settings(args)
    except ValidationError as error:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, str(error)) from None
    conn = Connection(args.connect, args.timeout, args.signing_key, broker_tls)
    try:
        address, port = args.listen
        gateway = Gateway(conn, address, port, tls, settings)
    except ValueError as error:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, str(error)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    async with gateway:
        await stop.wait()
    return 0


def _client_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "-c",
        "--connect",
        default=os.environ.get("VIRTBUS_AMQP_URL", DEFAULT_AMQP_URL),
        help="broker URL (VIRTBUS_AMQP_URL)",
    )
    options.add_argument("--json", action="store_true", help="print JSON for scripts")
    options.add_argument(
        "--signing-key",
        type=_signing_key,
        default=os.environ.get("VIRTBUS_SIGNING_KEY"),
        metavar="ID=ALGORITHM:PATH",
        help="sign every command with this key (hmac-sha256 secret or ed25519 private key "
        "file) (VIRTBUS_SIGNING_KEY)",
    )
    options.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for replies (default 10)"
    )
    for what, meaning in TLS_FILES.items():
        options.add_argument(
            f"--{what}-file",
            type=Path,
            default=os.environ.get(f"VIRTBUS_AMQP_{what.upper()}_FILE"),
            help=f"amqps: {meaning} (VIRTBUS_AMQP_{what.upper()}_FILE)",
        )
    return options


def _targeting() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    where = options.add_mutually_exclusive_group()
    where.add_argument("--host", default=os.environ.get("VIRTBUS_HOST"), help="one host")
    where.add_argument("--group", help="every host of a group (broadcast)")
    where.add_argument("--all-hosts", action="store_true", help="every host (broadcast)")
    options.add_argument(
        "--expect",
        action="append",
        help="hosts expected to answer a broadcast (comma-separated; repeatable); "
        "default: the hosts seen before",
    )
    return options


EVENT_CHOICES = (
    "lifecycle",
    "reboot",
    "tunable",
    "agent",
    *dict.fromkeys(member.event for member in Lifecycle),
)

DOMAIN_VERBS: dict[str, str] = {
    "dominfo": "domain information",
    "domstate": "domain state",
    "domid": "domain id",
    "domuuid": "domain UUID",
    "domname": "domain name",
    "dumpxml": "a domain's libvirt domain XML",
    "start": "start a defined domain",
    "shutdown": "gracefully shut a domain down",
    "destroy": "stop a domain at once",
    "reboot": "reboot a domain",
    "suspend": "suspend a domain",
    "resume": "resume a suspended domain",
    "undefine": "undefine a domain",
    "autostart": "start a domain when its agent starts",
    "setmem": "set a domain's memory",
    "setvcpus": "set a domain's vCPU count",
    "domrename": "rename a shut-off domain",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtbus", description=__doc__)
    parser.add_argument("--version", action="version", version=f"virtbus {__version__}")
    commands = parser.add_subparsers(dest="verb", required=True)
    _agent_parser(commands)
    _gateway_parser(commands)
    usercli.add_parser(commands)
    _provision_parser(commands)
    schema = commands.add_parser("schema", help="print the wire models' schemas")
    schema.add_argument(
        "--asyncapi", action="store_true", help="an AsyncAPI 3.0 document of the whole bus"
    )
    listing = commands.add_parser(
        "list", parents=[_client_options(), _targeting()], help="list domains"
    )
    listing.add_argument("--all", action="store_true", help="active and inactive domains")
    listing.add_argument("--inactive", action="store_true")
    for option in ("state-running", "state-paused", "state-shutoff", "persistent"):
        listing.add_argument(f"--{option}", action="store_true")
    for option in ("transient", "autostart", "no-autostart"):
        listing.add_argument(f"--{option}", action="store_true")
    for verb in ("define", "create"):
        command = commands.add_parser(
            verb,
            parents=[_client_options(), _targeting()],
            help=f"{verb} a domain from a JSON spec or libvirt domain XML file",
        )
        command.add_argument(
            "file", help="JSON spec or domain XML file (.xml, or starting with <), or - for stdin"
        )
        if verb == "create":
            command.add_argument("--paused", action="store_true")
    for verb, summary in DOMAIN_VERBS.items():
        command = commands.add_parser(verb, parents=[_client_options(), _targeting()], help=summary)
        command.add_argument("domain", help="name, UUID or ID")
        if verb == "start":
            command.add_argument("--paused", action="store_true")
        elif verb == "shutdown":
            command.add_argument(
                "--grace", type=int, help="seconds before the domain is killed (default 10)"
            )
        elif verb == "domstate":
            command.add_argument("--reason", action="store_true")
        elif verb == "dumpxml":
            command.add_argument(
                "--inactive", action="store_true", help="the definition for the next start"
            )
        elif verb == "autostart":
            command.add_argument("--disable", action="store_true")
        elif verb == "setmem":
            command.add_argument("size", type=kib, help="KiB, or with a unit: 64M, 1G")
        elif verb == "setvcpus":
            command.add_argument("count", type=int)
        elif verb == "domrename":
            command.add_argument("new_name")
    event = commands.add_parser("event", parents=[_client_options()], help="wait for domain events")
    event.add_argument("domain", nargs="?", help="only this domain (by name)")
    event.add_argument("--host", default=None, help="only this host (default: all)")
    event.add_argument(
        "--event",
        choices=EVENT_CHOICES,
        help="an event kind, or a lifecycle event",
    )
    event.add_argument("--all", action="store_true", help="every domain event")
    event.add_argument("--loop", action="store_true", help="keep going after the first event")
    event.add_argument("--ready", action="store_true", help="say 'ready' on stderr once listening")
    event.set_defaults(timeout=None)
    hosts = commands.add_parser(
        "hosts", parents=[_client_options()], help="the fleet and its presence"
    )
    hosts.add_argument("--group", help="only this group")
    hosts.add_argument("--misses", type=int, default=3, help="heartbeats missed before lost")
    hosts.add_argument(
        "--forget", action="append", metavar="HOST", help="stop expecting a retired host"
    )
    hosts.set_defaults(timeout=2.0)
    return parser


async def run_client(args: argparse.Namespace, output: Output) -> int:
    try:
        tls = client_context(args.ca_file, args.cert_file, args.key_file)
    except ValueError as error:
        output.error(str(error))
        return 1
    async with connect(
        args.connect,
        timeout_s=args.timeout or 10.0,
        signing_key=args.signing_key,
        ssl_context=tls,
    ) as conn:
        if args.verb == "event":
            return await run_event(conn, args, output)
        if args.verb == "hosts":
            return await run_hosts(conn, args, output)
        if args.group or args.all_hosts:
            if args.verb == "dominfo":
                output.error("dominfo takes one host: use --host")
                return 1
            return await run_broadcast(conn, args, output)
        if not args.host:
            output.error("no host: give --host, --group or --all-hosts (or set VIRTBUS_HOST)")
            return 1
        return await run_domain_verb(conn, args, output)


def config_from(args: argparse.Namespace) -> Config:
    flags = {key: value for key, value in vars(args).items() if key != "verb" and value is not None}
    return Config(**flags)


async def run_agent(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    async with Agent(config):
        await stop.wait()


def _run(work: Awaitable[int], output: Output) -> int:
    try:
        return asyncio.run(_guarded(work, output))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (| head): nothing left to say, and nobody to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


async def _guarded(work: Awaitable[int], output: Output) -> int:
    try:
        return await work
    except VirtbusError as error:
        output.error(error.message)
        return 1
    except ProvisionError as error:
        output.error(str(error))
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verb == "schema":
        if args.asyncapi:
            from schemas.asyncapi import asyncapi_document

            document = asyncapi_document(__version__)
        else:
            document = json_schemas()
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.verb == "gateway":
        logs.configure("info", "text", "gateway")
        try:
            return _run(run_gateway(args), Output(False))
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    if args.verb == "gateway-user":
        return usercli.run(args)
    if args.verb == "provision":
        return _run(run_provision(args, Output(False)), Output(False))
    if args.verb != "agent":
        # the client's own errors are reported as `error: …`; library chatter is not
        logging.basicConfig(level=logging.CRITICAL)
        return _run(run_client(args, Output(args.json)), Output(args.json))
    try:
        config = config_from(args)
    except ValidationError as error:
        print(f"error: invalid configuration: {error}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format, config.host)
    try:
        asyncio.run(run_agent(config))
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
