"""Debian's virt-manager manages a virtbus host through the gateway, under Xvfb.

virt-manager (4.1, in the system python3) connects to ``lxc+tcp://GW/HOST``; a driver
(tests/support/virt_manager_driver.py, dogtail over the AT-SPI tree in the system python3,
keyboard through xdotool) lists the host's domains, starts one from the manager window,
types into its text console, reads its Performance page and shuts it down from its window.
Each step is checked on the bus too: the events the agent published and the state it
reports. A screenshot of the root window is saved (and copied to ``VIRTBUS_SCREENSHOTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.client import Connection
from agent.gateway.server import Gateway
from schemas.events import Event, LifecycleEvent
from tests.environment import unavailable
from tests.support.fleet import Host, spec
from tests.support.services import AMQP_URL

pytestmark = [pytest.mark.integration, pytest.mark.gui]

SYSTEM_PYTHON = "/usr/bin/python3"
DRIVER = Path(__file__).resolve().parent.parent / "support" / "virt_manager_driver.py"
TOOLS = ("virt-manager", "Xvfb", "xdotool", "dbus-daemon", "import")
STEP_S = 30.0
START_S = 20.0
SCREENSHOT = "virt-manager.png"
DOMAIN = "vmgr"
FILL_MIB = 16
# the domain's init reads lines from its console and runs them; SIGTERM (libvirt's
# shutdown) ends it, as an init that handles it does
REPL = 'trap "exit 0" TERM; while read -r line; do eval "$line"; done'
SETTINGS = """\
[org/virt-manager/virt-manager/stats]
update-interval=1
enable-memory-poll=true
enable-disk-poll=true
enable-net-poll=true

[org/virt-manager/virt-manager/confirm]
poweroff=false
"""
"""virt-manager's preferences (GSettings, in a keyfile of the private HOME): every
statistic polled each second, no confirmation before a shutdown."""


@pytest.fixture(scope="session")
def tools() -> None:
    for tool in TOOLS:
        if shutil.which(tool) is None:
            unavailable(f"{tool} (scripts/setup.sh installs the virt-manager test's tools)")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import dogtail, libvirt"], check=False, timeout=30
    )
    if probe.returncode != 0:
        unavailable("python3-dogtail and python3-libvirt in the system python3")


@pytest.fixture
async def gateway(services: None) -> AsyncIterator[Gateway]:
    async with Gateway(Connection(AMQP_URL), "127.0.0.1", 0) as running:
        yield running


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


@dataclass
class Desktop:
    """Xvfb and a private D-Bus session (with its AT-SPI bus) for one test."""

    env: dict[str, str]
    processes: list[asyncio.subprocess.Process]


@pytest.fixture
async def desktop(tools: None, tmp_path: Path) -> AsyncIterator[Desktop]:
    home = tmp_path / "home"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DISPLAY", "DBUS_", "XDG_", "WAYLAND", "GTK_", "NO_AT_BRIDGE"))
    }
    env |= {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "GSETTINGS_BACKEND": "keyfile",
        "LC_ALL": "C.UTF-8",
    }
    (home / "run").mkdir(parents=True, mode=0o700)
    keyfile = home / ".config/glib-2.0/settings/keyfile"
    keyfile.parent.mkdir(parents=True)
    keyfile.write_text(SETTINGS)
    processes: list[asyncio.subprocess.Process] = []
    try:
        xvfb = await asyncio.create_subprocess_exec(
            "Xvfb", "-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        processes.append(xvfb)
        assert xvfb.stdout is not None
        display = (await asyncio.wait_for(xvfb.stdout.readline(), START_S)).decode().strip()
        assert display.isdigit(), "Xvfb did not report its display"
        env["DISPLAY"] = f":{display}"
        bus = await asyncio.create_subprocess_exec(
            "dbus-daemon", "--session", "--nofork", "--print-address=1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        processes.append(bus)
        assert bus.stdout is not None
        address = (await asyncio.wait_for(bus.stdout.readline(), START_S)).decode().strip()
        assert address, "dbus-daemon did not report its address"
        env["DBUS_SESSION_BUS_ADDRESS"] = address
        yield Desktop(env, processes)
    finally:
        for process in reversed(processes):
            await stop(process)


class Driver:
    """The dogtail driver, one step at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def __call__(self, step: str, **request: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        timeout_s = float(request.setdefault("timeout_s", STEP_S))
        self.process.stdin.write(json.dumps({"do": step, **request}).encode() + b"\n")
        await self.process.stdin.drain()
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s + 15)
            assert line, f"the driver exited during {step}"
            if line.startswith(b"REPLY "):
                break
        reply: dict[str, Any] = json.loads(line.removeprefix(b"REPLY "))
        assert "error" not in reply, f"{step}: {reply['error']}"
        return reply["ok"]


async def screenshot(env: dict[str, str], path: Path) -> None:
    grab = await asyncio.create_subprocess_exec("import", "-window", "root", str(path), env=env)
    assert await asyncio.wait_for(grab.wait(), STEP_S) == 0
    assert (await asyncio.to_thread(path.read_bytes))[:8] == b"\x89PNG\r\n\x1a\n"
    if shots := os.environ.get("VIRTBUS_SCREENSHOTS"):
        await asyncio.to_thread(shutil.copyfile, path, Path(shots) / path.name)


def lifecycle(name: str, event: str, detail: str) -> Any:
    def match(seen: Event) -> bool:
        return (
            isinstance(seen, LifecycleEvent)
            and seen.domain.name == name
            and (seen.event, seen.detail) == (event, detail)
        )

    return match


async def test_virt_manager_manages_a_virtbus_host(
    desktop: Desktop, gateway: Gateway, host: Host, tmp_path: Path
) -> None:
    await host.ok(
        "domain.define",
        args={"spec": spec(DOMAIN, "sh", "-c", REPL, console=True, memory_kib=64 * 1024)},
    )
    log = tmp_path / "virt-manager.log"
    uri = f"lxc+tcp://127.0.0.1:{gateway.port}/{host.name}"
    with log.open("wb") as out:
        manager = await asyncio.create_subprocess_exec(
            "virt-manager", "--connect", uri, "--no-fork", "--debug",
            stdout=out, stderr=subprocess.STDOUT, env=desktop.env,
        )  # fmt: skip
    driver_process = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, str(DRIVER),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=desktop.env,
    )  # fmt: skip
    drive = Driver(driver_process)
    try:
        listed = await drive("listed", names=[DOMAIN])
        assert listed[DOMAIN] == "Shutoff"

        assert await drive("start", name=DOMAIN) == "Running"
        await host.events.wait_for(lifecycle(DOMAIN, "started", "booted"))
        state = await host.ok("domain.get_state", DOMAIN)
        assert state["state"] == 1  # running, as the agent says

        title = await drive("open", name=DOMAIN)
        assert title.startswith(f"{DOMAIN} on ")
        # the domain computes the answer, and holds 16 MiB for its memory graph to show
        line = f"dd if=/dev/zero of=/dev/shm/fill bs=1M count={FILL_MIB} 2>&- && echo vmgr-$((6*7))"
        text = await drive("console", name=DOMAIN, line=line, expect="vmgr-42")
        assert "vmgr-42" in text.splitlines()
        output = await host.ok("domain.get_console_output", DOMAIN)
        assert "vmgr-42" in output["output"]

        samples = await drive("performance", name=DOMAIN, samples=2, interval_s=1.5)
        for cpu, memory in samples:
            assert re.fullmatch(r"\d+ ?%", cpu)
            # the memory polled through the gateway, against the domain's limit
            used, limit = memory.split(" of ")
            assert limit == "64 MiB"
            assert re.fullmatch(r"\d+ MiB", used) and int(used.split()[0]) >= FILL_MIB
        await screenshot(desktop.env, tmp_path / SCREENSHOT)

        assert await drive("shutdown", name=DOMAIN) == "Shutoff"
        await host.events.wait_for(lifecycle(DOMAIN, "stopped", "shutdown"))
        state = await host.ok("domain.get_state", DOMAIN)
        assert state["state"] == 5  # shut off
    except BaseException:
        print(log.read_text(errors="replace")[-20_000:])
        raise
    finally:
        assert driver_process.stdin is not None
        driver_process.stdin.close()
        await stop(driver_process)
        await stop(manager)
