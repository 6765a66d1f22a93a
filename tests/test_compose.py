"""Checks that docker-compose.yml is valid for the installed docker-compose."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.environment import unavailable

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
TIMEOUT_S = 60.0


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        message = "docker-compose is not installed"
        unavailable(message)
    return exe


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_docker_compose(), "-f", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_compose_config_is_valid() -> None:
    result = _compose("config")
    assert result.returncode == 0, result.stderr
    assert "/var/run/docker.sock:/var/run/docker.sock" in result.stdout
    assert "VIRTBUS_AMQP_URL" in result.stdout


def test_compose_services() -> None:
    result = _compose("config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"rabbitmq", "agent"}


def test_compose_gives_the_agent_the_socket_group() -> None:
    result = subprocess.run(
        [_docker_compose(), "-f", str(COMPOSE_FILE), "config"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        env={**os.environ, "DOCKER_GID": "4242"},
    )
    assert result.returncode == 0, result.stderr
    assert "- '4242'" in result.stdout, result.stdout


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_image_runs_unprivileged_with_a_healthcheck_on_its_health_port() -> None:
    instructions = _instructions()
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users, "the image must not run as root"
    assert users[-1] not in {"root", "0"}
    env = " ".join(arg for op, arg in final if op == "ENV")
    port = re.search(r"VIRTBUS_METRICS_PORT=(\d+)", env)
    assert port is not None, "the agent must serve /health for the HEALTHCHECK"
    checks = [arg for op, arg in final if op == "HEALTHCHECK"]
    assert len(checks) == 1
    assert f"127.0.0.1:{port.group(1)}/health" in checks[0]
    built = [arg for op, arg in instructions if op == "RUN" and "pip wheel" in arg]
    assert built, "the image installs the wheel that the source tree builds"
