"""Registry credentials against a real registry: Debian's ``docker-registry`` with basic
auth (htpasswd, bcrypt) behind TLS from a throwaway CA, on 127.0.0.1:5443.

A domain whose image is not on the host is pulled with the ``host.login`` credentials of
its registry: refused without a login, refused with a wrong password, pulled with the
right one, refused again after ``host.logout``. The password is never echoed in a reply
nor written to the agent's log, and is stored readable by its owner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import pytest
import trustme

from tests.environment import unavailable
from tests.support import BusPeer
from tests.support.fleet import Fleet, spec
from tests.support.services import IMAGE

pytestmark = pytest.mark.integration

REGISTRY = "127.0.0.1:5443"
REPOSITORY = f"{REGISTRY}/virtbus/test"
REMOTE_IMAGE = f"{REPOSITORY}:1"
CERTS_DIR = Path("/etc/docker/certs.d") / REGISTRY
USERNAME = "virtbus"
START_WAIT_S = 30.0
CAUSES = {
    # with no credentials the engine falls back to plain HTTP for a loopback registry,
    # and reports that attempt's error
    "without a host.login": "the engine could not pull it, without a host.login",
    "with the host.login": "the registry refused the host.login's credentials (auth)",
}
"""The cause a refused pull names, by whether the host has a login for the registry."""
STOP_WAIT_S = 10.0


@dataclass(frozen=True)
class Registry:
    password: str
    log: list[str]


async def _listening(process: asyncio.subprocess.Process, log: list[str]) -> None:
    """Returns once the registry says it listens; raises if it exits first."""
    assert process.stderr is not None
    while line := (await process.stderr.readline()).decode():
        log.append(line)
        if f"listening on {REGISTRY}" in line:
            return
    raise RuntimeError("docker-registry exited:\n" + "".join(log[-20:]))


async def _keep_reading(process: asyncio.subprocess.Process, log: list[str]) -> None:
    assert process.stderr is not None
    while line := await process.stderr.readline():
        log.append(line.decode())


def _write_config(directory: Path, password: str) -> Path:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(directory / "key.pem"))
    server.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    htpasswd = subprocess.run(
        ["htpasswd", "-niB", USERNAME],
        input=password.encode(),
        capture_output=True,
        check=True,
        timeout=30,
    )
    (directory / "htpasswd").write_bytes(htpasswd.stdout)
    config = directory / "config.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {directory / "data"}
http:
  addr: {REGISTRY}
  tls:
    certificate: {directory / "cert.pem"}
    key: {directory / "key.pem"}
auth:
  htpasswd:
    realm: virtbus-test
    path: {directory / "htpasswd"}
"""
    )
    return config


async def _untag(docker: aiodocker.Docker) -> None:
    with contextlib.suppress(aiodocker.DockerError):
        await docker.images.delete(REMOTE_IMAGE, force=True)


async def _present(docker: aiodocker.Docker) -> bool:
    try:
        await docker.images.inspect(REMOTE_IMAGE)
    except aiodocker.DockerError as error:
        if error.status == 404:
            return False
        raise
    return True


@pytest.fixture
async def registry(
    services: None, tmp_path: Path, docker: aiodocker.Docker
) -> AsyncIterator[Registry]:
    """A registry holding ``virtbus-test:latest`` as REMOTE_IMAGE, which is then removed
    from the engine; the engine trusts the registry's CA (``certs.d``, read per pull)."""
    binary = shutil.which("docker-registry")
    if binary is None or shutil.which("htpasswd") is None:
        unavailable("docker-registry and htpasswd (Debian: docker-registry, apache2-utils)")
    assert binary is not None
    password = secrets.token_urlsafe(18)
    directory = tmp_path / "registry"
    directory.mkdir()
    config = _write_config(directory, password)
    process = await asyncio.create_subprocess_exec(
        binary,
        "serve",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    log: list[str] = []
    reader: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(_listening(process, log), START_WAIT_S)
        reader = asyncio.create_task(_keep_reading(process, log))
        CERTS_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(directory / "ca.crt", CERTS_DIR / "ca.crt")
        await docker.images.tag(IMAGE, REPOSITORY, tag="1")
        auth = {"username": USERNAME, "password": password, "serveraddress": REGISTRY}
        await docker.images.push(REPOSITORY, tag="1", auth=auth)
        await _untag(docker)
        yield Registry(password, log)
    finally:
        await _untag(docker)
        shutil.rmtree(CERTS_DIR, ignore_errors=True)
        with contextlib.suppress(OSError):
            CERTS_DIR.parent.rmdir()  # only if nothing else is trusted there
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_WAIT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        if reader is not None:
            await asyncio.wait_for(reader, STOP_WAIT_S)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_pulls_use_the_login_until_logout(
    registry: Registry,
    fleet: Fleet,
    peer: BusPeer,
    docker: aiodocker.Docker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    pushed = len(registry.log)
    agent = await fleet.start(queue_type="classic")
    host = agent.host
    stored = agent.config.host_dir / "registries.json"
    pulled = spec("pulled", image=REMOTE_IMAGE)

    async def refused(op: str, login: str) -> None:
        reply = await peer.call(host, op, args={"spec": pulled})
        assert reply["ok"] is False, reply
        assert (reply["error"]["code"], reply["error"]["vir_error"]) == ("OPERATION_FAILED", 9)
        assert reply["error"]["message"].startswith(
            f"operation failed: cannot pull image '{REMOTE_IMAGE}' from registry "
            f"'{REGISTRY}': {CAUSES[login]} (engine: "
        ), reply
        assert not await _present(docker)

    await refused("domain.define", "without a host.login")

    wrong = {"registry": REGISTRY, "username": USERNAME, "password": "not-the-password"}
    assert await peer.ok(host, "host.login", args=wrong) == {}
    await refused("domain.create_xml", "with the host.login")

    login = await peer.call(
        host,
        "host.login",
        args={"registry": REGISTRY, "username": USERNAME, "password": registry.password},
    )
    assert login == {"v": 1, "id": login["id"], "host": host, "ok": True, "result": {}}
    assert (_mode(stored.parent), _mode(stored)) == (0o700, 0o600)
    assert json.loads(stored.read_text())[REGISTRY]["username"] == USERNAME
    assert stored.stat().st_uid == os.getuid()

    defined = await peer.ok(host, "domain.define", args={"spec": pulled})
    assert await _present(docker)
    started = await peer.ok(host, "domain.create", {"uuid": defined["uuid"]})
    assert started["state"] == 1
    inspect = await (await docker.containers.get(f"{host}.pulled")).show()
    assert inspect["Config"]["Image"] == REMOTE_IMAGE
    await peer.ok(host, "domain.destroy", {"uuid": defined["uuid"]})
    await peer.ok(host, "domain.undefine", {"uuid": defined["uuid"]})
    await _untag(docker)

    assert await peer.ok(host, "host.logout", args={"registry": REGISTRY}) == {}
    assert REGISTRY not in json.loads(stored.read_text())
    again = await peer.call(host, "host.logout", args={"registry": REGISTRY})
    assert again["error"]["code"] == "INVALID_ARG"
    await refused("domain.create_xml", "without a host.login")
    await refused("domain.define", "without a host.login")

    assert (await peer.ok(host, "host.ping"))["host"] == host
    assert registry.password not in caplog.text
    assert "not-the-password" not in caplog.text
    seen = registry.log[pushed:]
    assert any('error authenticating user \\"virtbus\\"' in line for line in seen)
    assert any(
        'msg="authorized request"' in line and "/v2/virtbus/test/manifests/1" in line
        for line in seen
    )


async def test_a_failed_pull_names_its_cause(
    registry: Registry, fleet: Fleet, peer: BusPeer, docker: aiodocker.Docker
) -> None:
    """A name that does not resolve, an image the registry does not have: each says so,
    with the engine's words. (A certificate the engine does not trust cannot be shown
    here: the engine falls back to plain HTTP for loopback registries; the unit tests
    read the engine's TLS words.)"""
    agent = await fleet.start(queue_type="classic")
    host = agent.host
    login = {"registry": REGISTRY, "username": USERNAME, "password": registry.password}
    assert await peer.ok(host, "host.login", args=login) == {}
    cases = {
        # RFC 6761: .invalid never resolves
        "nowhere.invalid/virtbus/test:1": "the registry's name 'nowhere.invalid' does not "
        "resolve (DNS)",
        f"{REPOSITORY}:absent": "the registry has no such image (not found)",
    }
    for image, cause in cases.items():
        reply = await peer.call(host, "domain.define", args={"spec": spec("nopull", image=image)})
        assert reply["ok"] is False, reply
        registry_name = image.split("/", 1)[0]
        assert reply["error"]["message"].startswith(
            f"operation failed: cannot pull image '{image}' from registry '{registry_name}': "
            f"{cause} (engine: "
        ), reply
