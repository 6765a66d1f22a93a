"""The virtbus demo, as any AMQP client would drive an agent: plain aio-pika, raw JSON.

Run by ``scripts/demo.sh``, which starts the agent; three steps:

    demo.py reset                 delete the demo host's command queue (no stale commands)
    demo.py wait --pid-file F     bounded wait for ``<host>.agent.online`` (or a ping answer)
    demo.py run --agent-pid PID   follow ``<host>.#`` events, take a domain through its
                                  life cycle, stop the agent with SIGTERM, show it go offline

Exit status: 0 when every step got the reply and the events it should, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from schemas.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE, host_queue

JSON = dict[str, Any]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REPLY_TIMEOUT_S = 30.0
EVENT_TIMEOUT_S = 10.0
OFFLINE_TIMEOUT_S = 45.0
PING_EVERY_S = 1.0

SPEC: JSON = {
    "name": "demo-web",
    "image": "virtbus-test:latest",
    "command": ["sleep", "3600"],
    "memory_kib": 65536,
}


# ------------------------------------------------------------------ output --

_TTY = sys.stdout.isatty()


def _style(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _TTY else text


def bold(text: str) -> str:
    return _style("1", text)


def dim(text: str) -> str:
    return _style("2", text)


def red(text: str) -> str:
    return _style("31", text)


def green(text: str) -> str:
    return _style("32", text)


def say(label: str, text: str) -> None:
    print(f"  {label:<8} {text}", flush=True)


def compact(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"))


# ------------------------------------------------------------------ events --


@dataclass
class EventLog:
    """Every event bound by the demo's pattern, printed as it arrives."""

    events: list[JSON] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    shown_kinds: set[str] = field(default_factory=set)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event: JSON = json.loads(message.body)
        except ValueError:
            say("event?", f"{message.routing_key}: not JSON: {message.body[:200]!r}")
            return
        self.show(message.routing_key or "", event)
        async with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def show(self, routing_key: str, event: JSON) -> None:
        kind = str(event.get("kind", "?"))
        seq = f"#{event['seq']}" if "seq" in event else "-"
        if kind == "lifecycle":
            what = (
                f"{event['event']}/{event['detail']} ({event['event_code']}/{event['detail_code']})"
            )
            if event.get("exit_code") is not None:
                what += f" exit={event['exit_code']}"
        elif kind == "agent":
            what = f"{event['state']} (domains={event['domains']})"
        elif kind == "tunable":
            what = f"tunable {compact(event.get('params'))}"
        else:
            what = kind
        extra = ""
        if kind != "agent":
            extra = f"  origin={event.get('origin')}  cause={event.get('cause')}"
        say("event", f"{seq:<5} {routing_key:<36} {what:<28}{extra}".rstrip())
        if kind not in self.shown_kinds:
            # the full body once per kind, so the wire shape is on screen
            self.shown_kinds.add(kind)
            say("", dim(compact(event)))

    async def wait_for(self, match: Callable[[JSON], bool], timeout_s: float) -> JSON | None:
        def found() -> JSON | None:
            return next((e for e in self.events if match(e)), None)

        try:
            async with self.changed:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: found() is not None), timeout_s
                )
        except TimeoutError:
            return None
        return found()


# ------------------------------------------------------------------ client --


class Client:
    """One connection: a reply queue, and optionally an event subscription."""

    def __init__(self, url: str, host: str, agent_pid: int | None = None) -> None:
        self.url = url
        self.host = host
        self.agent_pid = agent_pid
        self.run_id = secrets.token_hex(3)
        self._count = 0
        self._replies: dict[str, asyncio.Future[JSON]] = {}
        self.log = EventLog()

    async def __aenter__(self) -> Client:
        self.connection: AbstractConnection = await aio_pika.connect(
            self.url, client_properties={"connection_name": f"virtbus demo {self.run_id}"}
        )
        self.channel: AbstractChannel = await self.connection.channel()
        # Declared exactly as the agent declares them, so either side may come first.
        self.commands: AbstractExchange = await self.channel.declare_exchange(
            COMMANDS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self.events: AbstractExchange = await self.channel.declare_exchange(
            EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.reply_queue: AbstractQueue = await self.channel.declare_queue(
            exclusive=True, auto_delete=True
        )
        await self.reply_queue.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def subscribe(self, pattern: str) -> None:
        queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.events, routing_key=pattern)
        await queue.consume(self.log.on_message, no_ack=True)
        print(f"subscribed: queue {queue.name} bound to {EVENTS_EXCHANGE} with '{pattern}'")

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._replies.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(json.loads(message.body))

    def next_id(self) -> str:
        self._count += 1
        return f"demo-{self.run_id}-{self._count}"

    async def send(
        self,
        op: str,
        target: JSON | None = None,
        args: JSON | None = None,
        *,
        expiration_s: float | None = None,
        quiet: bool = False,
    ) -> tuple[str, asyncio.Future[JSON]]:
        command_id = self.next_id()
        command: JSON = {"v": 1, "id": command_id, "op": op}
        if target is not None:
            command["target"] = target
        if args is not None:
            command["args"] = args
        deadline = datetime.now(UTC) + timedelta(seconds=REPLY_TIMEOUT_S)
        command["deadline"] = deadline.isoformat(timespec="seconds").replace("+00:00", "Z")
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._replies[command_id] = future
        if not quiet:
            say("command", compact(command))
            say(
                "",
                dim(
                    f"-> exchange {COMMANDS_EXCHANGE}, routing key {self.host}; "
                    f"message_id=correlation_id={command_id}, reply_to={self.reply_queue.name}"
                ),
            )
        await self.commands.publish(
            aio_pika.Message(
                compact(command).encode(),
                content_type="application/json",
                message_id=command_id,
                correlation_id=command_id,
                reply_to=self.reply_queue.name,
                expiration=expiration_s,
            ),
            routing_key=self.host,
        )
        return command_id, future

    @property
    def agent_gone(self) -> bool:
        return self.agent_pid is not None and not alive(self.agent_pid)

    async def reply(self, command_id: str, future: asyncio.Future[JSON], timeout_s: float) -> JSON:
        """The reply, or TimeoutError once ``timeout_s`` passed or the agent is gone."""
        deadline = time.monotonic() + timeout_s
        try:
            while not future.done():
                left = deadline - time.monotonic()
                if left <= 0 or self.agent_gone:
                    raise TimeoutError
                await asyncio.wait([future], timeout=min(left, 0.5))
            return future.result()
        finally:
            self._replies.pop(command_id, None)

    async def call(
        self, op: str, target: JSON | None = None, args: JSON | None = None, timeout_s: float = 0
    ) -> tuple[str, JSON | None]:
        """Send a command, print it and its reply; None when no reply came in time."""
        started = time.monotonic()
        timeout_s = timeout_s or REPLY_TIMEOUT_S
        command_id, future = await self.send(op, target, args)
        try:
            reply = await self.reply(command_id, future, timeout_s)
        except TimeoutError:
            why = f"the agent (pid {self.agent_pid}) is gone" if self.agent_gone else None
            say("reply", red(f"none: {why or f'nothing within {timeout_s:.0f} s'}"))
            return command_id, None
        took = (time.monotonic() - started) * 1000
        say("reply", f"{compact(reply)}  {dim(f'({took:.0f} ms)')}")
        return command_id, reply


# ------------------------------------------------------------------- steps --


@dataclass(frozen=True)
class Step:
    op: str
    target: JSON | None
    args: JSON | None
    events: tuple[tuple[str, str], ...]
    timeout_s: float = REPLY_TIMEOUT_S


def steps() -> list[Step]:
    web = {"name": SPEC["name"]}
    return [
        Step("domain.define", None, {"spec": SPEC}, (("defined", "added"),)),
        Step("domain.create", web, None, (("started", "booted"),)),
        Step("domain.suspend", web, None, (("suspended", "paused"),)),
        Step("domain.resume", web, None, (("resumed", "unpaused"),)),
        Step(
            "domain.shutdown",
            web,
            {"timeout_s": 10},
            (("stopped", "shutdown"),),
            REPLY_TIMEOUT_S + 10,
        ),
        Step("domain.undefine", web, None, (("undefined", "removed"),)),
        Step("host.list_domains", None, None, ()),
    ]


def caused(command_id: str, event: str, detail: str) -> Callable[[JSON], bool]:
    def match(candidate: JSON) -> bool:
        return (
            candidate.get("cause") == command_id
            and candidate.get("event") == event
            and candidate.get("detail") == detail
        )

    return match


async def run_steps(client: Client, problems: list[str]) -> None:
    plan = steps()
    for number, step in enumerate(plan, 1):
        print(f"\n{bold(f'[{number}/{len(plan)}] {step.op}')}", flush=True)
        command_id, reply = await client.call(step.op, step.target, step.args, step.timeout_s)
        if reply is None:
            problems.append(f"{step.op}: no reply")
            return
        if not reply.get("ok"):
            problems.append(f"{step.op}: {compact(reply.get('error'))}")
            return
        for event, detail in step.events:
            seen = await client.log.wait_for(caused(command_id, event, detail), EVENT_TIMEOUT_S)
            if seen is None:
                problems.append(f"{step.op}: no {event}/{detail} event caused by {command_id}")
                say("missing", red(f"{event}/{detail} event within {EVENT_TIMEOUT_S:.0f} s"))


async def leave_nothing_behind(client: Client) -> None:
    """If the demo domain still exists, destroy and undefine it through the agent."""
    if client.agent_gone:
        print(red("cleanup: the agent is gone; scripts/demo.sh removes what is left"))
        return
    command_id, future = await client.send("domain.lookup", {"name": SPEC["name"]}, quiet=True)
    try:
        reply = await client.reply(command_id, future, REPLY_TIMEOUT_S)
    except TimeoutError:
        print(red("cleanup: the agent did not answer domain.lookup"))
        return
    if not reply.get("ok"):
        return
    print(f"\n{bold('cleanup')}: domain {SPEC['name']} still exists; removing it")
    record: JSON = reply["result"]
    target = {"name": SPEC["name"]}
    if record["id"] != -1:
        await client.call("domain.destroy", target)
    if record["persistent"]:
        await client.call("domain.undefine", target)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def stop_agent(client: Client, pid: int, problems: list[str]) -> None:
    print(f"\n{bold('stopping the agent')}: SIGTERM to pid {pid}", flush=True)
    offline = f"{client.host}.agent.offline"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        problems.append(f"the agent (pid {pid}) was already gone")
        return
    seen = await client.log.wait_for(
        lambda e: e.get("kind") == "agent" and e.get("state") == "offline",
        OFFLINE_TIMEOUT_S,
    )
    if seen is None:
        problems.append(f"no {offline} event within {OFFLINE_TIMEOUT_S:.0f} s")
        say("missing", red(f"{offline} event"))


# -------------------------------------------------------------- subcommands --


async def reset(url: str, host: str) -> int:
    """Delete the host's command queue: commands left by an earlier run are not replayed."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(host_queue(host))
    print(f"reset: deleted queue {host_queue(host)} (if it existed)")
    return 0


async def wait_ready(
    url: str, host: str, pid_file: Path, subscribed_file: Path | None, timeout_s: float
) -> int:
    """Bounded wait until the agent is ready: its ``agent.online`` event, or an answer to
    ``host.ping``. Touches ``subscribed_file`` once bound, so the agent can start after."""
    started = time.monotonic()
    async with Client(url, host) as client:
        await client.subscribe(f"{host}.agent.*")
        if subscribed_file is not None:
            touch(subscribed_file)

        def online(event: JSON) -> bool:
            return event.get("kind") == "agent" and event.get("state") == "online"

        while (left := timeout_s - (time.monotonic() - started)) > 0:
            pid = read_pid(pid_file)
            if pid is not None and not alive(pid):
                print(red(f"wait: the agent (pid {pid}) exited before it was ready"))
                return 1
            if pid is None:  # not started yet
                await client.log.wait_for(online, min(left, 0.2))
            else:
                # Each ping expires, so none pile up in the queue while nobody consumes.
                _, future = await client.send(
                    "host.ping", expiration_s=2 * PING_EVERY_S, quiet=True
                )
                with suppress(TimeoutError):
                    reply = await asyncio.wait_for(future, min(left, PING_EVERY_S))
                    took = time.monotonic() - started
                    print(f"agent {host} is ready: host.ping answered after {took:.1f} s")
                    say("reply", compact(reply))
                    return 0
            if any(online(event) for event in client.log.events):
                took = time.monotonic() - started
                print(f"agent {host} is ready: {host}.agent.online after {took:.1f} s")
                return 0
    print(red(f"wait: agent {host} neither went online nor answered within {timeout_s:.0f} s"))
    return 1


def touch(path: Path) -> None:
    path.touch()


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


async def run(url: str, host: str, pid: int | None) -> int:
    problems: list[str] = []
    async with Client(url, host, pid) as client:
        print(bold(f"virtbus demo: host {host}, run {client.run_id}, broker {mask(url)}"))
        await client.subscribe(f"{host}.#")
        try:
            await run_steps(client, problems)
        finally:
            await leave_nothing_behind(client)
        if pid is not None:
            await stop_agent(client, pid, problems)
        await asyncio.sleep(0.2)  # let a late event print before the summary
    print()
    if problems:
        print(red(bold("demo FAILED:")))
        for problem in problems:
            print(red(f"  - {problem}"))
        return 1
    print(green(bold("demo OK")) + ": every reply and event arrived as expected")
    return 0


def mask(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", default=os.environ.get("VIRTBUS_AMQP_URL", DEFAULT_AMQP_URL))
    parser.add_argument("--host", default="demo1")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("reset", help="delete the host's command queue")
    wait = verbs.add_parser("wait", help="wait until the agent is online")
    wait.add_argument("--pid-file", type=Path, required=True, help="holds the agent's pid")
    wait.add_argument("--subscribed-file", type=Path, help="touched once subscribed")
    wait.add_argument("--timeout", type=float, default=60.0)
    go = verbs.add_parser("run", help="run the demo")
    go.add_argument("--agent-pid", type=int, help="SIGTERM this agent at the end")
    args = parser.parse_args()
    try:
        if args.verb == "reset":
            return asyncio.run(reset(args.amqp_url, args.host))
        if args.verb == "wait":
            return asyncio.run(
                wait_ready(
                    args.amqp_url, args.host, args.pid_file, args.subscribed_file, args.timeout
                )
            )
        return asyncio.run(run(args.amqp_url, args.host, args.agent_pid))
    except (OSError, aio_pika.exceptions.AMQPException) as error:
        print(red(f"demo: {type(error).__name__}: {error}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
