"""TLS to the broker and to Docker, with a throwaway CA.

The broker side runs on a RabbitMQ node of its own (``vbtls@localhost``: amqps on
127.0.0.1:5711, plain AMQP on 5712, distribution on 25711) that verifies its peers and
refuses a client without a certificate. The shared broker is never touched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import pytest
import trustme
from aiohttp import web

from agent.client import VirtbusError, connect
from agent.host.agent import Agent
from agent.host.bus import Bus
from agent.host.config import Config
from agent.host.driver import DockerDriver
from agent.tls import client_context
from schemas.codes import ErrorCode
from tests.environment import unavailable
from tests.faults.cluster import rabbitmqctl
from tests.support.fleet import VIRTBUS
from tests.support.services import new_host

NODE = "vbtls@localhost"
AMQPS_PORT = 5711
AMQP_PORT = 5712
DIST_PORT = 25711
TIMEOUT_S = 120
WAIT_S = 30.0


@dataclass(frozen=True)
class Pki:
    """A CA, the files a client presents, and a CA nobody trusts."""

    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    stranger_ca_file: Path

    def context(self, ca_file: Path | None = None, with_cert: bool = True) -> ssl.SSLContext:
        context = client_context(
            ca_file or self.ca_file,
            self.cert_file if with_cert else None,
            self.key_file if with_cert else None,
        )
        assert context is not None
        return context


def _pki(directory: Path) -> Pki:
    ca = trustme.CA()
    client = ca.issue_cert("virtbus-agent")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    trustme.CA().cert_pem.write_to_path(str(directory / "stranger-ca.pem"))
    return Pki(
        ca,
        directory / "ca.pem",
        directory / "client.pem",
        directory / "client.key",
        directory / "stranger-ca.pem",
    )


def _rabbitmqctl(*argv: str) -> str:
    return rabbitmqctl(NODE, *argv)


@dataclass(frozen=True)
class TlsBroker:
    pki: Pki
    user: str
    password: str

    @property
    def url(self) -> str:
        return f"amqps://{self.user}:{self.password}@localhost:{AMQPS_PORT}/"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[TlsBroker]:
    if shutil.which("rabbitmq-server") is None or shutil.which("runuser") is None:
        unavailable("rabbitmq-server (for a TLS node of the tests' own)")
    # the node runs as the rabbitmq user: its files live where that user can read them
    root = Path(tempfile.mkdtemp(prefix="virtbus-tls-"))
    server = root / "server"
    server.mkdir()
    ca_pem = pki.ca.cert_pem.bytes().decode()
    leaf = pki.ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(server / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(server / "key.pem"))
    (server / "ca.pem").write_text(ca_pem)
    (server / "enabled_plugins").write_text("[].\n")
    (server / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{AMQP_PORT}\n"
        f"listeners.ssl.default = 127.0.0.1:{AMQPS_PORT}\n"
        f"ssl_options.cacertfile = {server / 'ca.pem'}\n"
        f"ssl_options.certfile = {server / 'cert.pem'}\n"
        f"ssl_options.keyfile = {server / 'key.pem'}\n"
        "ssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = true\n"
    )
    for path in (root, server, *server.iterdir()):
        shutil.chown(path, "rabbitmq", "rabbitmq")
    # a node left running by an interrupted run of these tests
    subprocess.run(
        ["rabbitmqctl", "-q", "-n", NODE, "stop"], capture_output=True, timeout=60, check=False
    )
    environment = {
        "HOME": "/var/lib/rabbitmq",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "RABBITMQ_NODENAME": NODE,
        "RABBITMQ_DIST_PORT": str(DIST_PORT),
        "RABBITMQ_MNESIA_BASE": str(server / "mnesia"),
        "RABBITMQ_LOG_BASE": str(server / "log"),
        "RABBITMQ_PID_FILE": str(server / "pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(server / "enabled_plugins"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": str(server / "plugins-expand"),
        "RABBITMQ_CONFIG_FILE": str(server / "rabbitmq.conf"),
    }
    subprocess.run(
        [
            "runuser",
            "-u",
            "rabbitmq",
            "--",
            "env",
            *(f"{key}={value}" for key, value in environment.items()),
            "/usr/lib/rabbitmq/bin/rabbitmq-server",
            "-detached",
        ],
        check=True,
        timeout=TIMEOUT_S,
        cwd="/var/lib/rabbitmq",
    )
    try:
        _rabbitmqctl("wait", str(server / "pid"), "--timeout", str(TIMEOUT_S))
        _rabbitmqctl("await_startup")
        broker = TlsBroker(pki, "vbtls-agent", f"tls-{uuid.uuid4().hex}")
        _rabbitmqctl("add_user", broker.user, broker.password)
        _rabbitmqctl("set_permissions", "-p", "/", broker.user, ".*", ".*", ".*")
        yield broker
    finally:
        try:
            _rabbitmqctl("stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
async def test_agent_serves_over_amqps_without_showing_its_password(
    tls_broker: TlsBroker, services: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pki = tls_broker.pki
    config = Config(
        host=new_host(),
        amqp_url=tls_broker.url,
        amqp_ca_file=pki.ca_file,
        amqp_cert_file=pki.cert_file,
        amqp_key_file=pki.key_file,
        state_dir=tmp_path / "state",
        queue_type="classic",
        drain_s=5,
    )
    assert tls_broker.password not in repr(config) + str(config) + config.describe()
    serving = Agent(config)
    await asyncio.wait_for(serving.start(), WAIT_S)
    try:
        async with connect(tls_broker.url, timeout_s=WAIT_S, ssl_context=pki.context()) as conn:
            assert (await conn.ping(serving.host)).host == serving.host
            assert await conn.list_all_domains(serving.host) == []
            assert tls_broker.password not in repr(conn)
        listed = await asyncio.create_subprocess_exec(
            str(VIRTBUS),
            "list",
            "--host",
            serving.host,
            "-c",
            tls_broker.url,
            "--key-file",
            str(pki.key_file),
            env={
                **os.environ,
                "VIRTBUS_AMQP_CA_FILE": str(pki.ca_file),
                "VIRTBUS_AMQP_CERT_FILE": str(pki.cert_file),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(listed.communicate(), WAIT_S)
        assert listed.returncode == 0, err.decode()
        assert out.decode().split()[:3] == ["Id", "Name", "State"]
    finally:
        await serving.stop()
    assert f"connected to broker amqps://{tls_broker.user}:***@localhost" in caplog.text
    assert tls_broker.password not in caplog.text


@pytest.mark.integration
async def test_client_with_the_wrong_ca_fails_clearly(tls_broker: TlsBroker) -> None:
    pki = tls_broker.pki
    with pytest.raises(VirtbusError) as refused:
        async with connect(tls_broker.url, ssl_context=pki.context(pki.stranger_ca_file)):
            pass
    assert refused.value.code is ErrorCode.OPERATION_FAILED
    assert "cannot reach the broker" in refused.value.message
    assert "certificate verify failed" in refused.value.message
    assert tls_broker.password not in refused.value.message


@pytest.mark.integration
async def test_broker_refuses_a_client_without_a_certificate(tls_broker: TlsBroker) -> None:
    with pytest.raises(VirtbusError) as refused:
        async with connect(
            tls_broker.url, timeout_s=5, ssl_context=tls_broker.pki.context(with_cert=False)
        ):
            pass
    assert refused.value.code is ErrorCode.OPERATION_FAILED
    # TLS 1.3 sends the alert after the handshake: it may be read, or lost to the reset
    assert re.search("certificate required|connection reset", refused.value.message, re.I)
    assert tls_broker.password not in refused.value.message


@pytest.mark.integration
async def test_agent_with_the_wrong_ca_keeps_retrying_and_says_why(
    tls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pki = tls_broker.pki
    bus = Bus([tls_broker.url], new_host(), [], ssl_context=pki.context(pki.stranger_ca_file))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(bus.connect(), 2.0)
    await bus.close()
    assert "certificate verify failed" in caplog.text
    assert f"amqps://{tls_broker.user}:***@localhost:{AMQPS_PORT}/" in caplog.text
    assert tls_broker.password not in caplog.text


def test_tls_settings_come_from_the_environment(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTBUS_AMQP_CA_FILE", str(pki.ca_file))
    monkeypatch.setenv("VIRTBUS_AMQP_CERT_FILE", str(pki.cert_file))
    monkeypatch.setenv("VIRTBUS_AMQP_KEY_FILE", str(pki.key_file))
    context = Config(host="h1").amqp_ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    unset = Config(host="h1", amqp_ca_file=None, amqp_cert_file=None, amqp_key_file=None)
    assert unset.amqp_ssl_context is None


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"amqp_cert_file": "cert"}, "needs both its certificate and its key"),
        ({"amqp_ca_file": "key"}, "cannot use CA file"),
        ({"docker_cert_file": "ca", "docker_key_file": "ca"}, "cannot use client certificate"),
        ({"docker_ca_file": "missing"}, "does not point to a file"),
    ],
)
def test_unusable_tls_files_are_a_configuration_error(
    pki: Pki, files: dict[str, str], problem: str
) -> None:
    paths = {"cert": pki.cert_file, "key": pki.key_file, "ca": pki.ca_file}
    settings = {key: paths.get(name, Path("/nonexistent/file.pem")) for key, name in files.items()}
    with pytest.raises(ValueError, match=problem):
        Config(host="h1", **settings)  # type: ignore[arg-type]


async def test_docker_over_tcp_and_tls(pki: Pki, tmp_path: Path) -> None:
    """The engine URL and context the agent builds from its settings make a verified,
    client-authenticated TLS connection (to a stand-in engine that answers /version)."""
    server = pki.ca.issue_cert("localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(server_context)
    pki.ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    seen: list[object] = []

    async def version(request: web.Request) -> web.Response:
        seen.append(request.transport and request.transport.get_extra_info("peercert"))
        return web.json_response({"ApiVersion": "1.41", "Version": "20.10.24"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        config = Config(
            host="h1",
            docker_url=f"tcp://localhost:{port}",
            docker_ca_file=pki.ca_file,
            docker_cert_file=pki.cert_file,
            docker_key_file=pki.key_file,
        )
        assert config.docker_endpoint == f"https://localhost:{port}"
        driver = DockerDriver(
            "h1", config.docker_endpoint, config.docker_ssl_context, pids_limit=1024
        )
        try:
            assert (await driver.docker.version())["Version"] == "20.10.24"
        finally:
            await driver.close()
        assert seen
        assert seen[0]
        stranger = client_context(pki.stranger_ca_file)
        refused = aiodocker.Docker(url=f"https://localhost:{port}", ssl_context=stranger)
        try:
            with pytest.raises(Exception, match="certificate verify failed"):
                await refused.version()
        finally:
            await refused.close()
    finally:
        await runner.cleanup()
