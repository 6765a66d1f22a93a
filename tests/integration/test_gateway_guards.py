"""The gateway's guards against a real agent, real Docker, and the real virsh: a raw
client that opens read-only or sends arguments with bytes left over changes nothing; an
allowed-DN list admits only the certificates it names; the authorization file decides
what virsh may do, with libvirt's error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.client import Connection
from agent.gateway.authz import subject_dn
from agent.gateway.protocol import Proc, WireDomain
from agent.gateway.server import Gateway, tls_context
from agent.gateway.settings import GatewaySettings
from agent.gateway.xdr import Packer
from schemas.codes import DomainState, ErrorCode
from tests.integration.test_gateway import Virsh, client_pki, gateway, uri, virsh_path
from tests.support.fleet import Host, spec
from tests.support.services import AMQP_URL
from tests.unit.test_gateway_server import Peer

pytestmark = pytest.mark.integration
__all__ = ["gateway", "virsh_path"]


def open_args(host: str, flags: int) -> bytes:
    packer = Packer()
    packer.optional(f"virtbus:///{host}", packer.string)
    packer.uint32(flags)
    return packer.data()


def domain_args(domain: WireDomain) -> bytes:
    packer = Packer()
    domain.pack(packer)
    return packer.data()


async def test_read_only_and_left_over_bytes_change_nothing(gateway: Gateway, host: Host) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})
    await host.ok("domain.create", "web")
    name = Packer()
    name.string("web")
    peers = []
    for flags in (1, 0):  # VIR_CONNECT_RO, then read-write
        peer = Peer(*await asyncio.open_connection("127.0.0.1", gateway.port))
        await peer.ok(Proc.CONNECT_OPEN, open_args(host.name, flags))
        peers.append(peer)
    read_only, read_write = peers
    found = await read_only.ok(Proc.DOMAIN_LOOKUP_BY_NAME, name.data())
    web = domain_args(WireDomain.unpack(found))
    for procedure, api in [
        (Proc.DOMAIN_SUSPEND, "virDomainSuspend"),
        (Proc.DOMAIN_DESTROY, "virDomainDestroy"),
        (Proc.DOMAIN_UNDEFINE, "virDomainUndefine"),
    ]:
        assert await read_only.error(procedure, web) == (
            ErrorCode.OPERATION_DENIED,
            f"operation forbidden: read only access prevents {api}",
        )
    for procedure in (Proc.DOMAIN_SUSPEND, Proc.DOMAIN_DESTROY):
        code, text = await read_write.error(procedure, web + b"\0\0\0\0")
        assert code == ErrorCode.INVALID_ARG, text
    assert await read_write.error(Proc.CONNECT_OPEN, open_args("other", 0)) == (
        ErrorCode.INTERNAL_ERROR,
        "internal error: connection already open",
    )
    state = await host.ok("domain.get_state", "web")
    assert state["state"] == DomainState.RUNNING
    await read_write.ok(Proc.DOMAIN_SUSPEND, web)
    assert (await host.ok("domain.get_state", "web"))["state"] == DomainState.PAUSED
    for peer in peers:
        peer.writer.close()


async def test_only_allowed_dns_are_admitted(virsh_path: str, host: Host, tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "servercert.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "serverkey.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    admitted = client_pki(tmp_path / "admitted", ca, ca)
    pem = (admitted / "clientcert.pem").read_bytes()
    dn = subject_dn(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))
    tls = tls_context(
        str(tmp_path / "servercert.pem"), str(tmp_path / "serverkey.pem"), str(tmp_path / "ca.pem")
    )
    await host.ok("domain.define", args={"spec": spec("web")})
    for allowed, works in [(dn[:-3] + "???", True), ("*," + dn, False)]:
        settings = GatewaySettings(tls_allowed_dn=(allowed,))
        async with Gateway(Connection(AMQP_URL), "127.0.0.1", 0, tls, settings) as served:
            base = f"virtbus+tls://127.0.0.1:{served.port}/{host.name}"
            ran = await Virsh(virsh_path, f"{base}?pkipath={admitted}")("list", "--all")
            assert (ran.status == 0) == works, ran.err
            assert ("web" in ran.out) == works


async def test_the_authorization_file_decides_what_virsh_may_do(
    virsh_path: str, host: Host, tmp_path: Path
) -> None:
    rules = tmp_path / "authz.toml"
    rules.write_text(
        f'[[allow]]\nidentity = "anonymous"\nhosts = ["{host.name}"]\naccess = "read-only"\n'
    )
    await host.ok("domain.define", args={"spec": spec("web")})
    settings = GatewaySettings(authz=rules)
    async with Gateway(Connection(AMQP_URL), "127.0.0.1", 0, None, settings) as served:
        virsh = Virsh(virsh_path, uri(served, host.name))
        assert "web" in await virsh.ok("list", "--all")
        refused = await virsh("start", "web")
        assert refused.status == 1
        assert "access denied: 'virtbus' denied access" in refused.err
        elsewhere = await Virsh(virsh_path, uri(served, "nosuchhost"))("list")
        assert elsewhere.status == 1
    assert (await host.ok("domain.get_state", "web"))["state"] == DomainState.SHUTOFF
