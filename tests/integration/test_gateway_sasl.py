"""SASL logins to the gateway with the real virsh and libvirt-python (Cyrus SASL's SCRAM
plugin on their side), over ``virtbus+tls://`` to a real agent.

Credentials reach virsh through libvirt's auth.conf (``LIBVIRT_AUTH_FILE``); libvirt's
client needs no SASL configuration of its own: it takes the mechanism from the server's
list.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from agent.client import Connection
from agent.gateway.protocol import (
    REMOTE_PROGRAM,
    RPC_ERROR,
    ErrorDomain,
    Header,
    MessageType,
    Proc,
    Status,
    packet_length,
)
from agent.gateway.sasl import MIN_ITERATIONS, set_user
from agent.gateway.server import TLS_ACCEPTED, Gateway, tls_context
from agent.gateway.settings import GatewaySettings
from agent.gateway.xdr import Packer, Unpacker
from schemas.commands import Command
from tests.integration.test_gateway import (
    TIMEOUT_S,
    Virsh,
    client_pki,
    libvirt_python,
    virsh_path,
)
from tests.support.fleet import CLI, VIRTBUS, Host, spec
from tests.support.services import AMQP_URL

pytestmark = pytest.mark.integration
__all__ = ["libvirt_python", "virsh_path"]  # fixtures

PASSWORD = "correct horse"
AUTH_FAILED = "authentication failed: authentication failed"


class Recording(Connection):
    """The real broker connection, noting every command it publishes."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.published: list[str] = []

    async def _publish(
        self, command: Command, exchange: str, routing_key: str, unroutable: str
    ) -> None:
        self.published.append(command.op)
        await super()._publish(command, exchange, routing_key, unroutable)


@dataclass
class Tls:
    cert: Path
    key: Path
    pki: Path
    """A libvirt ``pkipath``: the CA, the client's certificate and key."""

    def context(self) -> ssl.SSLContext:
        return tls_context(str(self.cert), str(self.key))


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "servercert.pem", tmp_path / "serverkey.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    return Tls(cert, key, client_pki(tmp_path / "pki", ca, ca))


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    set_user(path, "alice", PASSWORD, MIN_ITERATIONS)
    return path


@pytest.fixture
async def gateway(
    services: None, tls: Tls, users: Path
) -> AsyncIterator[tuple[Gateway, Recording]]:
    conn = Recording(AMQP_URL)
    settings = GatewaySettings(sasl_users=users)
    async with Gateway(conn, "127.0.0.1", 0, tls.context(), settings) as running:
        yield running, conn


def auth_conf(directory: Path, user: str, password: str) -> Path:
    """libvirt's client credentials for the server 127.0.0.1."""
    path = directory / f"auth-{user}-{len(password)}.conf"
    path.write_text(
        f"[credentials-gateway]\nauthname={user}\npassword={password}\n\n"
        "[auth-libvirt-127.0.0.1]\ncredentials=gateway\n"
    )
    path.chmod(0o600)
    return path


def tls_uri(port: int, host: str, tls: Tls) -> str:
    return f"virtbus+tls://127.0.0.1:{port}/{host}?pkipath={tls.pki}"


async def virsh_as(virsh_path: str, uri: str, conf: Path, *argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        virsh_path,
        "-c",
        uri,
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LC_ALL": "C", "LIBVIRT_AUTH_FILE": str(conf)},
    )
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_virsh_logs_in_with_scram_and_manages_the_host(
    virsh_path: str,
    gateway: tuple[Gateway, Recording],
    host: Host,
    tls: Tls,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running, conn = gateway
    caplog.set_level(logging.INFO, "agent.gateway")
    await host.ok("domain.define", args={"spec": spec("web")})
    uri = tls_uri(running.port, host.name, tls)
    conf = auth_conf(tmp_path, "alice", PASSWORD)
    status, out, err = await virsh_as(virsh_path, uri, conf, "list", "--all")
    assert status == 0, err
    assert out.splitlines()[2].split() == ["-", "web", "shut", "off"]
    assert "authenticated as sasl:alice" in caplog.text
    assert "host.list_domains" in conn.published
    status, _, err = await virsh_as(virsh_path, uri, conf, "start", "web")
    assert status == 0, err
    assert PASSWORD not in caplog.text


async def test_an_authorization_rule_names_a_sasl_user(
    virsh_path: str, services: None, host: Host, tls: Tls, users: Path, tmp_path: Path
) -> None:
    """alice may only look at the host; bob, logged in just as well, is named by no rule."""
    set_user(users, "bob", "bobs password", MIN_ITERATIONS)
    rules = tmp_path / "authz.toml"
    rules.write_text(
        f'[[allow]]\nidentity = "sasl:alice"\nhosts = ["{host.name}"]\naccess = "read-only"\n'
    )
    await host.ok("domain.define", args={"spec": spec("web")})
    conn = Recording(AMQP_URL)
    settings = GatewaySettings(sasl_users=users, authz=rules)
    async with Gateway(conn, "127.0.0.1", 0, tls.context(), settings) as running:
        uri = tls_uri(running.port, host.name, tls)
        alice = auth_conf(tmp_path, "alice", PASSWORD)
        status, out, err = await virsh_as(virsh_path, uri, alice, "list", "--all")
        assert status == 0, err
        assert "web" in out
        status, _, err = await virsh_as(virsh_path, uri, alice, "start", "web")
        assert status == 1
        assert "access denied: 'virtbus' denied access" in err
        bob = auth_conf(tmp_path, "bob", "bobs password")
        status, _, err = await virsh_as(virsh_path, uri, bob, "list", "--all")
        assert status == 1
        assert "access denied: 'virtbus' denied access" in err
    assert "domain.start" not in conn.published


@pytest.mark.parametrize(("user", "reason"), [("alice", "wrong password"), ("eve", "unknown user")])
async def test_a_wrong_password_or_unknown_user_gets_libvirts_error_and_reaches_no_host(
    virsh_path: str,
    gateway: tuple[Gateway, Recording],
    host: Host,
    tls: Tls,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    user: str,
    reason: str,
) -> None:
    running, conn = gateway
    conf = auth_conf(tmp_path, user, "not the password")
    status, out, err = await virsh_as(
        virsh_path, tls_uri(running.port, host.name, tls), conf, "list", "--all"
    )
    assert status == 1
    assert f"error: {AUTH_FAILED}" in err
    assert out == ""
    assert conn.published == []
    assert f"failed SASL authentication as {user}: {reason}" in caplog.text
    assert "not the password" not in caplog.text


LIBVIRT_SCRIPT = """
import json, sys
import libvirt

uri, user, password = sys.argv[1:4]

def credentials(creds, opaque):
    for cred in creds:
        if cred[0] == libvirt.VIR_CRED_AUTHNAME:
            cred[4] = user
        elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
            cred[4] = password
        else:
            return -1
    return 0

auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], credentials, None]
try:
    conn = libvirt.openAuth(uri, auth, 0)
except libvirt.libvirtError as error:
    print(json.dumps({"error": [error.get_error_code(), error.get_error_domain(),
                                error.get_error_message()]}))
    sys.exit(0)
found = {"hostname": conn.getHostname(), "listed": [d.name() for d in conn.listAllDomains()]}
conn.close()
print(json.dumps(found))
"""


async def test_libvirt_python_logs_in_through_its_auth_callback(
    libvirt_python: str,
    gateway: tuple[Gateway, Recording],
    host: Host,
    tls: Tls,
    tmp_path: Path,
) -> None:
    running, conn = gateway
    await host.ok("domain.define", args={"spec": spec("web")})
    script = tmp_path / "login.py"
    script.write_text(LIBVIRT_SCRIPT)

    async def open_as(user: str, password: str) -> dict[str, Any]:
        process = await asyncio.create_subprocess_exec(
            libvirt_python,
            str(script),
            tls_uri(running.port, host.name, tls),
            user,
            password,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
        assert process.returncode == 0, err.decode()
        found: dict[str, Any] = json.loads(out)
        return found

    refused = await open_as("alice", "guess")
    assert refused == {"error": [45, ErrorDomain.RPC, AUTH_FAILED]}
    assert conn.published == []
    assert await open_as("alice", PASSWORD) == {"hostname": host.name, "listed": ["web"]}


async def test_a_call_before_the_login_is_refused_and_not_forwarded(
    gateway: tuple[Gateway, Recording], tls: Tls
) -> None:
    """A client that skips SASL and opens straight away, as a raw client could."""
    running, conn = gateway
    context = ssl.create_default_context(cafile=str(tls.pki / "cacert.pem"))
    context.load_cert_chain(str(tls.pki / "clientcert.pem"), str(tls.pki / "clientkey.pem"))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", running.port, ssl=context, server_hostname="127.0.0.1"
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            assert await reader.readexactly(len(TLS_ACCEPTED)) == TLS_ACCEPTED
            packer = Packer()
            packer.optional("virtbus:///h1", packer.string)
            packer.uint32(0)
            call = Header(REMOTE_PROGRAM, 1, Proc.CONNECT_OPEN, MessageType.CALL, 1, Status.OK)
            writer.write(call.pack(packer.data()))
            header, payload = Header.unpack(
                await reader.readexactly(packet_length(await reader.readexactly(4)))
            )
    finally:
        writer.close()
    assert (header.serial, header.status) == (1, Status.ERROR)
    body = Unpacker(payload)
    assert (body.int32(), body.int32()) == (RPC_ERROR, ErrorDomain.RPC)
    assert body.optional(lambda: body.string(1000)) == "authentication required"
    assert conn.published == []


async def test_the_gateway_command_requires_the_login_from_its_users_file(
    virsh_path: str, host: Host, cli: CLI, tls: Tls, tmp_path: Path
) -> None:
    users = tmp_path / "cli-users"
    process = await asyncio.create_subprocess_exec(
        str(VIRTBUS),
        "gateway-user",
        "--users",
        str(users),
        "add",
        "bob",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.wait_for(process.communicate(b"bobs password\n"), TIMEOUT_S)
    assert process.returncode == 0
    assert "bobs password" not in users.read_text()
    plain = await cli("gateway", "--listen", "127.0.0.1:0", "--sasl-users", str(users))
    assert plain.status == 1
    assert "--sasl-users need --tls-cert" in plain.err

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = await cli.start(
        "gateway",
        "--listen",
        f"127.0.0.1:{port}",
        "--tls-cert",
        str(tls.cert),
        "--tls-key",
        str(tls.key),
        "--sasl-users",
        str(users),
    )
    try:
        assert gateway.stderr is not None
        line = await asyncio.wait_for(gateway.stderr.readline(), TIMEOUT_S)
        assert f"gateway listening on 127.0.0.1:{port}" in line.decode()
        await host.ok("domain.define", args={"spec": spec("web")})
        uri = tls_uri(port, host.name, tls)
        status, out, err = await virsh_as(
            virsh_path, uri, auth_conf(tmp_path, "bob", "bobs password"), "list", "--all"
        )
        assert status == 0, err
        assert "web" in out
        status, _, err = await virsh_as(
            virsh_path, uri, auth_conf(tmp_path, "bob", "guess"), "list", "--all"
        )
        assert (status, AUTH_FAILED in err) == (1, True)
    finally:
        if gateway.returncode is None:
            gateway.send_signal(signal.SIGTERM)
        _, logged = await asyncio.wait_for(gateway.communicate(), TIMEOUT_S)
    assert gateway.returncode == 0
    assert "authenticated as sasl:bob" in logged.decode()
    assert "failed SASL authentication as bob: wrong password" in logged.decode()


async def test_the_virsh_client_itself_refuses_scram_over_plain_tcp(virsh_path: str) -> None:
    """Why the gateway asks for TLS: libvirt's client demands a security layer (SSF 56)
    from SASL on an unencrypted connection, and SCRAM has none. A stand-in server that
    offers SCRAM on plain TCP sees the client give up before sending any credentials."""
    seen: list[int] = []

    async def offer_scram(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header, _ = Header.unpack(
                    await reader.readexactly(packet_length(await reader.readexactly(4)))
                )
                seen.append(header.procedure)
                packer = Packer()
                if header.procedure == Proc.AUTH_LIST:
                    packer.array([1], packer.int32)  # REMOTE_AUTH_SASL
                else:
                    packer.string("SCRAM-SHA-256")
                writer.write(header.reply(Status.OK).pack(packer.data()))
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(offer_scram, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        ran = await Virsh(virsh_path, f"virtbus+tcp://127.0.0.1:{port}/h1")("list")
    finally:
        server.close()
        await server.wait_closed()
    assert ran.status == 1
    assert "No worthy mechs found" in ran.err
    assert seen == [Proc.AUTH_LIST, Proc.AUTH_SASL_INIT]
