"""Drives a running virt-manager through the AT-SPI accessibility tree (dogtail), as
virt-manager's own UI tests do, with keyboard input through xdotool.

Runs in the system python3 (Debian's python3-dogtail), steered by the test over standard
input: one JSON request a line, one reply a line prefixed with ``REPLY`` (dogtail prints
its own lines too). A request is ``{"do": STEP, ...}``; the reply is ``{"ok": RESULT}`` or
``{"error": MESSAGE}``. Every step gives up after ``timeout_s`` (default 30 s).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from dogtail import config  # type: ignore[import-not-found, unused-ignore]

config.config.checkForA11y = False  # the private session has no dconf to say so
config.config.searchShowingOnly = False
config.config.logDebugToFile = False
config.config.logDebugToStdOut = False
from dogtail import tree  # type: ignore[import-not-found, unused-ignore]  # noqa: E402

MANAGER = "Virtual Machine Manager"
POLL_S = 0.25
T = TypeVar("T")
Node = Any


def until(what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    """The first truthy answer of ``probe``; an error naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = probe()
        except Exception as error:  # the tree changes under us while windows open
            last = error
        else:
            if found:
                return found
        time.sleep(POLL_S)
    raise TimeoutError(f"{what} within {timeout_s:g} s (last error: {last!r})")


def app() -> Node:
    return tree.root.application("virt-manager")


def manager() -> Node:
    return app().child(roleName="frame", name=MANAGER, retry=False)


def rows() -> dict[str, str]:
    """The manager's domain rows: name → state, as virt-manager shows them."""
    vmlist = manager().child(roleName="tree table", name="vm-list", retry=False)
    shown: dict[str, str] = {}
    for cell in vmlist.findChildren(lambda n: n.roleName == "table cell" and "\n" in n.name):
        name, state = cell.name.split("\n", 1)
        shown[name] = state
    return shown


def row(name: str) -> Node:
    vmlist = manager().child(roleName="tree table", name="vm-list", retry=False)
    return vmlist.findChild(
        lambda n: n.roleName == "table cell" and n.name.startswith(f"{name}\n"), retry=False
    )


def window(name: str) -> Node:
    return next(f for f in app().children if f.name.startswith(f"{name} on "))


def showing_labels(frame: Node) -> list[str]:
    return [n.name for n in frame.findChildren(lambda n: n.roleName == "label" and n.showing)]


def listed(request: dict[str, Any], timeout_s: float) -> dict[str, str]:
    names: list[str] = request["names"]

    def every() -> dict[str, str] | None:
        shown = rows()
        return shown if all(n in shown for n in names) else None

    return until(f"rows for {names} in the manager", every, timeout_s)


def wait_state(name: str, state: str, timeout_s: float) -> str:
    return until(
        f"{name} shown as {state}", lambda: state if rows().get(name) == state else None, timeout_s
    )


def start(request: dict[str, Any], timeout_s: float) -> str:
    name = request["name"]
    row(name).click()
    run = manager().child(roleName="push button", name="Run", retry=False)
    until("the Run button enabled", lambda: run.sensitive, timeout_s)
    run.click()
    return wait_state(name, "Running", timeout_s)


def open_console(request: dict[str, Any], timeout_s: float) -> str:
    name = request["name"]
    row(name).doubleClick()
    frame = until(f"the window of {name}", lambda: window(name), timeout_s)
    until(
        "its text console",
        lambda: frame.findChild(lambda n: n.roleName == "terminal", retry=False),
        timeout_s,
    )
    return str(frame.name)


def console(request: dict[str, Any], timeout_s: float) -> str:
    """Types a line into the domain's text console; the console's text once a line of it
    is ``expect``."""
    frame = window(request["name"])
    terminal = frame.findChild(lambda n: n.roleName == "terminal", retry=False)
    terminal.click()
    subprocess.run(
        ["xdotool", "type", "--delay", "15", request["line"] + "\n"], check=True, timeout=30
    )
    expect = request["expect"]
    text: str = until(
        f"{expect!r} in the console",
        lambda: expect in terminal.text.splitlines() and terminal.text,
        timeout_s,
    )
    return text


def performance(request: dict[str, Any], timeout_s: float) -> list[list[str]]:
    """Opens the Performance page; the CPU and memory labels of ``samples`` successive
    statistics updates, once each shows a value (virt-manager says "Disabled" until its
    statistics polling answers)."""
    frame = window(request["name"])
    frame.child(roleName="radio button", name="Details", retry=False).click()
    hw = frame.child(roleName="table", name="hw-list", retry=False)
    hw.findChild(
        lambda n: n.roleName == "table cell" and n.name == "Performance", retry=False
    ).click()

    labels: list[str] = []

    def values() -> list[str] | None:
        labels[:] = [label.strip() for label in showing_labels(frame)]
        cpu = next((s for s in labels if re.fullmatch(r"\d+ ?%", s)), None)
        memory = next((s for s in labels if re.fullmatch(r"\S+ \w+ of \S+ \w+", s)), None)
        return [cpu, memory] if cpu and memory else None

    samples: list[list[str]] = []
    for _ in range(int(request.get("samples", 2))):
        try:
            seen = until("CPU and memory usage on the Performance page", values, timeout_s)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; its labels: {labels}") from None
        samples.append(seen)
        time.sleep(float(request.get("interval_s", 1.0)))
    return samples


def shutdown(request: dict[str, Any], timeout_s: float) -> str:
    name = request["name"]
    frame = window(name)
    frame.child(roleName="push button", name="Shut Down", retry=False).click()
    return wait_state(name, "Shutoff", timeout_s)


STEPS: dict[str, Callable[[dict[str, Any], float], Any]] = {
    "listed": listed,
    "start": start,
    "open": open_console,
    "console": console,
    "performance": performance,
    "shutdown": shutdown,
}


def main() -> int:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer: dict[str, Any] = {
                "ok": STEPS[request["do"]](request, float(request.get("timeout_s", 30)))
            }
        except Exception as error:
            answer = {"error": f"{error!r}\n{traceback.format_exc()}"}
        sys.stdout.write("REPLY " + json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
