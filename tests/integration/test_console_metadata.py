"""Consoles, metadata and every event through the gateway, with the real virsh and
libvirt-python against a real agent (docs/console-metadata.md)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
from pathlib import Path

import pytest

from agent.gateway.server import Gateway
from schemas.events import HealthEvent, LifecycleEvent, MetadataChangeEvent
from tests.integration import test_gateway
from tests.integration.test_gateway import TIMEOUT_S, Virsh, lifecycle, uri, watch
from tests.support.fleet import CLI, VIRTBUS, Host, spec

pytestmark = pytest.mark.integration

# the fixtures of the gateway's tests: a gateway, virsh on it, libvirt-python
gateway = test_gateway.gateway
virsh = test_gateway.virsh
virsh_path = test_gateway.virsh_path
libvirt_python = test_gateway.libvirt_python

ESCAPE = b"\x1d"  # Ctrl-], virsh's default escape key
NS = "http://example.org/virtbus-test"


class Terminal:
    """A process on a pseudo-terminal: what it prints, and keys typed into it."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process = process
        self.master = master
        self.seen = b""
        self._arrived = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.seen += data
        self._arrived.set()

    async def expect(self, text: bytes, after: int = 0) -> int:
        """Until ``text`` has been printed (past offset ``after``); where it ends."""
        async with asyncio.timeout(TIMEOUT_S):
            while (found := self.seen.find(text, after)) < 0:
                self._arrived.clear()
                await self._arrived.wait()
        return found + len(text)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.process.wait(), TIMEOUT_S)
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)


async def on_pty(*argv: str, env: dict[str, str] | None = None) -> Terminal:
    master, slave = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**(env or os.environ), "LC_ALL": "C", "TERM": "dumb"},
        start_new_session=True,
    )
    os.close(slave)
    return Terminal(process, master)


async def test_virsh_console_echoes_a_line_and_detaches_with_the_escape_key(
    virsh: Virsh, gateway: Gateway, host: Host
) -> None:
    await host.ok("domain.define", args={"spec": spec("cat", "cat", console=True)})
    await virsh.ok("start", "cat")
    terminal = await on_pty(virsh.path, "-c", virsh.uri, "console", "cat")
    try:
        ready = await terminal.expect(b"Escape character is ^]")
        # virsh makes its terminal raw (flushing what was typed) before it opens the
        # console: once the console is open, keys reach it
        await gateway.wait(lambda: gateway.streams == 1, TIMEOUT_S)
        terminal.type(b"hello virtbus\r")
        # the domain's terminal echoes the line, then cat writes it back
        echoed = await terminal.expect(b"hello virtbus", ready)
        await terminal.expect(b"hello virtbus", echoed)
        terminal.type(ESCAPE)
        assert await asyncio.wait_for(terminal.process.wait(), TIMEOUT_S) == 0
    finally:
        await terminal.close()
    await gateway.wait(lambda: gateway.streams == 0, TIMEOUT_S)
    await host.agent.consoles.wait(lambda n: n == 0, TIMEOUT_S)
    record = await host.ok("domain.lookup", "cat")
    assert record["state"] == 1  # still running
    output = await host.ok("domain.get_console_output", "cat")
    assert "hello virtbus" in output["output"]


async def test_a_cut_console_is_cleaned_up_on_every_side(
    virsh: Virsh, gateway: Gateway, host: Host
) -> None:
    await host.ok("domain.define", args={"spec": spec("cat", "cat", console=True)})
    await virsh.ok("start", "cat")
    terminal = await on_pty(virsh.path, "-c", virsh.uri, "console", "cat")
    try:
        await terminal.expect(b"Escape character is ^]")
        await host.agent.consoles.wait(lambda n: n == 1, TIMEOUT_S)
    finally:
        await terminal.close()  # SIGKILL: the client just disappears
    await gateway.wait(lambda: gateway.streams == 0, TIMEOUT_S)
    await host.agent.consoles.wait(lambda n: n == 0, TIMEOUT_S)
    assert (await host.ok("domain.lookup", "cat"))["state"] == 1
    # and the console can be opened again
    again = await on_pty(virsh.path, "-c", virsh.uri, "console", "cat")
    try:
        await again.expect(b"Escape character is ^]")
        # virsh makes its terminal raw (flushing what was typed) before it opens the
        # console: once the console is open, keys reach it
        await gateway.wait(lambda: gateway.streams == 1, TIMEOUT_S)
        again.type(ESCAPE)
        assert await asyncio.wait_for(again.process.wait(), TIMEOUT_S) == 0
    finally:
        await again.close()


async def test_a_domain_without_a_console_refuses_one(virsh: Virsh, host: Host) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})
    await virsh.ok("start", "web")
    terminal = await on_pty(virsh.path, "-c", virsh.uri, "console", "web")
    try:
        await terminal.expect(b"has no console")
        assert await asyncio.wait_for(terminal.process.wait(), TIMEOUT_S) == 1
    finally:
        await terminal.close()


LIBVIRT_CONSOLE = """
import json, sys
import libvirt

conn = libvirt.open(sys.argv[1])
dom = conn.lookupByName("cat")
stream = conn.newStream(0)
dom.openConsole(None, stream, 0)
stream.send(b"through libvirt-python\\r")
seen = b""
while seen.count(b"through libvirt-python") < 2:
    seen += stream.recv(4096)
stream.finish()
print(json.dumps({"seen": seen.decode(), "state": dom.state()}))
conn.close()
"""


async def test_libvirt_python_streams_a_console(
    libvirt_python: str, gateway: Gateway, host: Host, tmp_path: Path
) -> None:
    await host.ok("domain.define", args={"spec": spec("cat", "cat", console=True)})
    await host.ok("domain.create", "cat")
    script = tmp_path / "console.py"
    script.write_text(LIBVIRT_CONSOLE)
    process = await asyncio.create_subprocess_exec(
        libvirt_python,
        str(script),
        uri(gateway, host.name),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    assert process.returncode == 0, err.decode()
    found = json.loads(out)
    assert found["seen"].count("through libvirt-python") == 2
    assert found["state"] == [1, 1]
    await host.agent.consoles.wait(lambda n: n == 0, TIMEOUT_S)


async def test_metadata_set_through_virsh_comes_back_through_the_bus(
    virsh: Virsh, host: Host
) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})
    assert "No description for domain: web" in await virsh.ok("desc", "web")
    before = len(await host.fence())
    await virsh.ok("desc", "web", "--new-desc", "the web server")
    await virsh.ok("desc", "web", "--title", "--new-desc", "Web")
    await virsh.ok("metadata", "web", NS, "--key", "t", "--set", "<owner team='a'>ops</owner>")
    assert (await virsh.ok("desc", "web")).strip() == "the web server"
    assert (await virsh.ok("desc", "web", "--title")).strip() == "Web"
    assert (await virsh.ok("metadata", "web", NS)).strip() == '<owner team="a">ops</owner>'

    got = await host.ok("domain.get_metadata", "web", {"type": "element", "uri": NS})
    assert got["metadata"] == '<owner team="a">ops</owner>'
    got = await host.ok("domain.get_metadata", "web", {"type": "description"})
    assert got["metadata"] == "the web server"
    dumped = await virsh.ok("dumpxml", "web")
    assert "<title>Web</title>" in dumped
    assert f'<t:owner xmlns:t="{NS}" team="a">ops</t:owner>' in dumped

    changes = [e for e in (await host.fence())[before:] if isinstance(e, MetadataChangeEvent)]
    assert [(e.type, e.type_code, e.nsuri) for e in changes] == [
        ("description", 0, None),
        ("title", 1, None),
        ("element", 2, NS),
    ]
    everything = (await host.fence())[before:]
    assert not [e for e in everything if isinstance(e, LifecycleEvent)]  # no redefinition

    await virsh.ok("metadata", "web", NS, "--remove")
    missing = await virsh("metadata", "web", NS)
    assert missing.status == 1
    assert "metadata not found" in missing.err


async def test_virsh_event_prints_balloon_tunable_and_metadata_events(
    virsh: Virsh, gateway: Gateway, host: Host
) -> None:
    await host.ok("domain.define", args={"spec": spec("web", memory_kib=65536)})
    await virsh.ok("start", "web")
    events = await watch(virsh, gateway)
    try:
        await virsh.ok("setmem", "web", "32M")
        assert await events.next() == "event 'balloon-change' for domain 'web': 32768KiB"
        await virsh.ok("setvcpus", "web", "1")
        assert await events.lines(3) == [
            "event 'tunable' for domain 'web':",
            "\tcputune.global_period: 100000",
            "\tcputune.global_quota: 100000",
        ]
        await virsh.ok("desc", "web", "--new-desc", "watched")
        assert await events.next() == (
            "event 'metadata-change' for domain 'web': type description, uri <null>"
        )
        await virsh.ok("metadata", "web", NS, "--key", "t", "--set", "<x/>")
        assert await events.next() == (
            f"event 'metadata-change' for domain 'web': type element, uri {NS}"
        )
    finally:
        await events.stop()


async def test_the_cli_sets_and_shows_metadata_and_console_output(cli: CLI, host: Host) -> None:
    on = ("--host", host.name)
    await host.ok("domain.define", args={"spec": spec("hello", "echo", "hello from the console")})
    await host.ok("domain.create", "hello")
    await host.events.wait_for(
        lambda e: (
            isinstance(e, LifecycleEvent) and e.domain.name == "hello" and e.event == "stopped"
        )
    )
    shown = await cli("console-output", "hello", *on)
    assert shown.out.strip() == "hello from the console", shown.err
    updated = await cli("desc", "hello", "--new-desc", "says hello", *on)
    assert updated.out.strip() == "Domain description updated successfully", updated.err
    assert (await cli("desc", "hello", *on)).out.strip() == "says hello"
    await cli("metadata", "hello", NS, "--key", "t", "--set", "<greeting/>", *on)
    assert (await cli("metadata", "hello", NS, *on)).out.strip() == "<greeting/>"
    missing = await cli("desc", "hello", "--title", *on)
    assert missing.status == 1
    assert "metadata not found" in missing.err


async def test_the_cli_console_echoes_and_detaches(cli: CLI, host: Host) -> None:
    await host.ok("domain.define", args={"spec": spec("cat", "cat", console=True)})
    await host.ok("domain.create", "cat")
    terminal = await on_pty(str(VIRTBUS), "console", "cat", "--host", host.name, env=cli.env)
    try:
        ready = await terminal.expect(b"Escape character is ^]")
        terminal.type(b"from the cli\r")
        echoed = await terminal.expect(b"from the cli", ready)
        await terminal.expect(b"from the cli", echoed)
        terminal.type(ESCAPE)
        assert await asyncio.wait_for(terminal.process.wait(), TIMEOUT_S) == 0
    finally:
        await terminal.close()
    await host.agent.consoles.wait(lambda n: n == 0, TIMEOUT_S)
    assert (await host.ok("domain.lookup", "cat"))["state"] == 1


async def test_health_checks_are_events_and_libvirts_agent_lifecycle(
    virsh: Virsh, gateway: Gateway, host: Host
) -> None:
    check = {"command": ["true"], "interval_s": 1, "timeout_s": 5, "retries": 1}
    sick = {"command": ["false"], "interval_s": 1, "timeout_s": 5, "retries": 1}
    await host.ok("domain.define", args={"spec": spec("well", healthcheck=check)})
    await host.ok("domain.define", args={"spec": spec("sick", healthcheck=sick)})
    assert "<virtbus:healthcheck interval='1'" in await virsh.ok("dumpxml", "well")
    events = await watch(virsh, gateway)
    try:
        await virsh.ok("start", "well")
        assert await events.next() == lifecycle("well", "Started Booted")
        assert await events.next() == (
            "event 'agent-lifecycle' for domain 'well': state: 'connected' reason: 'channel event'"
        )
        await virsh.ok("start", "sick")
        assert await events.next() == lifecycle("sick", "Started Booted")
        assert await events.next() == (
            "event 'agent-lifecycle' for domain 'sick': "
            "state: 'disconnected' reason: 'channel event'"
        )
    finally:
        await events.stop()
    statuses = [
        (e.domain.name, e.status) for e in host.events.domain_events() if isinstance(e, HealthEvent)
    ]
    assert statuses[:2] == [("well", "healthy"), ("sick", "unhealthy")]
