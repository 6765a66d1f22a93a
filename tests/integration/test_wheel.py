"""The package as a user gets it: ``python -m build`` makes the sdist and, from it, the
wheel; the wheel goes into a fresh virtual environment (no editable install, no source
tree on the path), where every entry point and every command's ``--help`` runs, the
agent serves a real broker and Docker engine until it is ready, a client verb gets its
answer, and the gateway listens."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent import __version__
from agent.cli import build_parser
from tests.support.services import AMQP_URL, drop_host_queue, new_host

# building and installing into a fresh environment takes minutes on a shared machine
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 300
RUN_TIMEOUT_S = 30
READY_TIMEOUT_S = 30.0
HELP_WORKERS = 4
"""Each ``--help`` is a process of its own; a hundred of them one by one took 49 s."""


def _run(args: list[str], cwd: Path, timeout: float = RUN_TIMEOUT_S) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO_ROOT)], out, BUILD_TIMEOUT_S
    )
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with the wheel and its dependencies, nothing else."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", str(root)], root, INSTALL_TIMEOUT_S)
    wheel = next(dist.glob("virtbus-*.whl"))
    _run([str(root / "bin" / "pip"), "install", "--quiet", str(wheel)], root, INSTALL_TIMEOUT_S)
    return root


def _sources() -> set[str]:
    return {
        str(path.relative_to(REPO_ROOT))
        for package in ("agent", "schemas")
        for path in (REPO_ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_wheel_and_sdist_hold_every_file(dist: Path) -> None:
    wheel = next(dist.glob("virtbus-*.whl"))
    assert wheel.name.startswith(f"virtbus-{__version__}-py3-none-any")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert _sources() <= names, sorted(_sources() - names)
    assert {"agent/py.typed", "schemas/py.typed"} <= names
    info = f"virtbus-{__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert f"Version: {__version__}" in metadata
    assert "License-Expression: Apache-2.0" in metadata
    assert "Project-URL: Changelog" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    sdist = next(dist.glob("virtbus-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert _sources() | {"LICENSE", "pyproject.toml", "README.md"} <= members


def _commands() -> Iterator[list[str]]:
    """Every command and sub-command of the parser, as argv."""

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[list[str]]:
        yield path
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])

    yield from walk(build_parser(), [])


def test_every_command_runs_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    virtbus = str(venv / "bin" / "virtbus")
    assert _run([virtbus, "--version"], tmp_path).strip() == f"virtbus {__version__}"
    commands = list(_commands())
    with ThreadPoolExecutor(HELP_WORKERS) as pool:
        texts = pool.map(lambda command: _run([virtbus, *command, "--help"], tmp_path), commands)
        for command, text in zip(commands, texts, strict=True):
            assert text.startswith(f"usage: virtbus {' '.join(command)}".rstrip()), command
    assert "complete -o" in _run([virtbus, "completion", "bash"], tmp_path)
    schema = json.loads(_run([virtbus, "schema"], tmp_path))
    assert schema
    module = _run([str(venv / "bin" / "python"), "-m", "agent.cli", "--version"], tmp_path)
    assert module.strip() == f"virtbus {__version__}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def _running(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _until(ready: object, what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited: {process.communicate()}"
        with contextlib.suppress(OSError):
            if callable(ready) and ready():
                return
        time.sleep(0.2)  # polling a port: there is no event to await across processes
    pytest.fail(f"{what} not ready within {READY_TIMEOUT_S:g} s")


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
        return bool(response.status == 200)


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


def test_agent_and_gateway_run_from_the_wheel(venv: Path, tmp_path: Path, services: None) -> None:
    virtbus = str(venv / "bin" / "virtbus")
    host = new_host()
    metrics = _free_port()
    agent = [
        virtbus, "agent", "--host", host, "--amqp-url", AMQP_URL, "--queue-type", "classic",
        "--state-dir", str(tmp_path / "state"), "--metrics-port", str(metrics),
    ]  # fmt: skip
    try:
        with _running(agent, tmp_path) as running:
            _until(lambda: _healthy(metrics), "the agent", running)
            listed = _run([virtbus, "list", "--all", "--host", host, "-c", AMQP_URL], tmp_path)
            assert listed.startswith(" Id   Name   State\n")
            running.send_signal(signal.SIGTERM)
            assert running.wait(RUN_TIMEOUT_S) == 0, running.communicate()
    finally:
        drop_host_queue(host)
    port = _free_port()
    gateway = [virtbus, "gateway", "--listen", f"127.0.0.1:{port}", "-c", AMQP_URL]
    with _running(gateway, tmp_path) as running:
        _until(lambda: _listening(port), "the gateway", running)
        running.send_signal(signal.SIGTERM)
        assert running.wait(RUN_TIMEOUT_S) == 0, running.communicate()
