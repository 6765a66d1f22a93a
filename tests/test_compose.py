"""Checks that docker-compose.yml is valid for the installed docker-compose."""

from __future__ import annotations

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
