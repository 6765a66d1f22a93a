"""The container image as scripts/build-image.sh builds it (its Debian base made from
the apt mirror once and kept; the project's wheel installed offline): the agent runs
from it against the local broker and Docker engine (host network for loopback, the
Docker socket with its group), comes online, answers, reports healthy through the
image's HEALTHCHECK, and is not root."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.events import AgentEvent
from tests.environment import unavailable
from tests.support import BusPeer, EventRecorder
from tests.support.fleet import Fleet
from tests.support.services import AMQP_URL, new_host

pytestmark = [pytest.mark.integration, pytest.mark.image, pytest.mark.timeout(1200)]

REPO_ROOT = Path(__file__).resolve().parents[2]
SOCKET = Path("/var/run/docker.sock")
BUILD_TIMEOUT_S = 1100
"""The first build makes the base image from Debian's mirror too (about 5 minutes)."""
DOCKER_TIMEOUT_S = 60
HEALTHY_WAIT_S = 60.0
UNPRIVILEGED_UID = 10001


async def _docker(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), DOCKER_TIMEOUT_S)
    assert process.returncode == 0, f"docker {args}: {err.decode()}"
    return out.decode().strip()


async def _healthy(process: asyncio.subprocess.Process) -> None:
    """Returns at the first healthy verdict of ``docker events``; raises on unhealthy."""
    assert process.stdout is not None
    while line := (await process.stdout.readline()).decode():
        if "unhealthy" in line:
            raise AssertionError(f"the image's health check failed: {line}")
        if "healthy" in line:
            return
    raise AssertionError("docker events ended")


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if shutil.which("docker") is None or shutil.which("debootstrap") is None:
        unavailable("the docker CLI and debootstrap (Debian: docker.io, debootstrap)")
    tag = f"virtbus-agent:test-{secrets.token_hex(4)}"
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build-image.sh"), "--tag", tag],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == tag
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "--force", tag], capture_output=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_the_agent_runs_from_the_image_unprivileged_and_healthy(
    image: str, fleet: Fleet, peer: BusPeer
) -> None:
    host = new_host()
    fleet.hosts.add(host)  # its queue and domains are removed after
    online = await EventRecorder(peer.channel, f"{host}.agent.*").start()
    name = f"virtbus-image-{host}"
    group = (await asyncio.to_thread(SOCKET.stat)).st_gid
    verdicts = await asyncio.create_subprocess_exec(
        "docker",
        "events",
        "--filter",
        f"container={name}",
        "--filter",
        "event=health_status",
        "--format",
        "{{.Status}}",
        stdout=asyncio.subprocess.PIPE,
    )
    await _docker(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--group-add",
        str(group),
        "--volume",
        f"{SOCKET}:{SOCKET}",
        "--env",
        f"VIRTBUS_AMQP_URL={AMQP_URL}",
        "--env",
        f"VIRTBUS_HOST={host}",
        "--env",
        f"VIRTBUS_METRICS_PORT={_free_port()}",
        # the image's own check, run often enough for a test to see its verdict
        "--health-interval",
        "1s",
        "--health-start-period",
        "30s",
        image,
    )
    try:
        event = await online.wait_for(
            lambda e: isinstance(e, AgentEvent) and e.state == "online", timeout=HEALTHY_WAIT_S
        )
        assert event.host == host
        pong = await peer.ok(host, "host.ping")
        assert pong["host"] == host
        try:
            await asyncio.wait_for(_healthy(verdicts), HEALTHY_WAIT_S)
        except (TimeoutError, AssertionError):
            raise AssertionError(await _docker("logs", name)) from None
        uids = (await _docker("exec", name, "sh", "-c", "grep ^Uid: /proc/1/status")).split()[1:]
        assert uids and all(int(uid) == UNPRIVILEGED_UID for uid in uids)
    finally:
        verdicts.kill()
        await verdicts.wait()
        await _docker("rm", "--force", name)
