"""The real virsh and the real libvirt-python against the gateway and a real agent.

virsh (Debian's libvirt-clients) runs as a subprocess; libvirt-python (python3-libvirt)
runs in the system python3, as a script whose findings come back as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import pytest
import trustme

from agent.client import Connection
from agent.gateway.server import Gateway, tls_context
from schemas.events import LifecycleEvent
from tests.environment import unavailable
from tests.support.fleet import CLI, Host, Ran, spec, spec_xml
from tests.support.services import AMQP_URL, IMAGE

pytestmark = pytest.mark.integration

SYSTEM_PYTHON = "/usr/bin/python3"
TIMEOUT_S = 60.0
EVENT_IDS = 27

XML = spec_xml("xmlweb")


@pytest.fixture(scope="session")
def virsh_path() -> str:
    path = shutil.which("virsh")
    if path is None:
        unavailable("virsh (libvirt-clients)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def libvirt_python() -> str:
    """The system python3, with libvirt-python."""
    if not Path(SYSTEM_PYTHON).exists():
        unavailable(SYSTEM_PYTHON)
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import libvirt"], check=False, timeout=30)
    if probe.returncode != 0:
        unavailable("libvirt-python (python3-libvirt)")
    return SYSTEM_PYTHON


@pytest.fixture
async def gateway(services: None) -> AsyncIterator[Gateway]:
    async with Gateway(Connection(AMQP_URL), "127.0.0.1", 0) as running:
        yield running


@dataclass
class Virsh:
    path: str
    uri: str

    async def start(self, *argv: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            self.path,
            "-c",
            self.uri,
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C"},
        )

    async def __call__(self, *argv: str) -> Ran:
        process = await self.start(*argv)
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
        assert process.returncode is not None
        return Ran(process.returncode, out.decode(), err.decode())

    async def ok(self, *argv: str) -> str:
        ran = await self(*argv)
        assert ran.status == 0, ran.err
        return ran.out


def uri(gateway: Gateway, host: str, scheme: str = "virtbus") -> str:
    return f"{scheme}+tcp://127.0.0.1:{gateway.port}/{host}"


@pytest.fixture
def virsh(virsh_path: str, gateway: Gateway, host: Host) -> Virsh:
    return Virsh(virsh_path, uri(gateway, host.name))


class EventLines:
    """``virsh event --loop --all``: its lines as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def next(self) -> str:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT_S)
        return line.decode().rstrip("\n")

    async def lines(self, count: int) -> list[str]:
        return [await self.next() for _ in range(count)]

    async def stop(self, how: signal.Signals = signal.SIGINT) -> None:
        """SIGINT: virsh deregisters and closes; SIGKILL: it just disappears."""
        if self.process.returncode is None:
            self.process.send_signal(how)
        await asyncio.wait_for(self.process.communicate(), TIMEOUT_S)


async def watch(virsh: Virsh, gateway: Gateway, callbacks_before: int = 0) -> EventLines:
    """Start ``virsh event --loop --all`` and return once its callbacks are registered
    (one for each of the 27 event IDs virsh 9.0 knows)."""
    process = await virsh.start("event", "--loop", "--all")
    await gateway.wait_callbacks(lambda n: n >= callbacks_before + EVENT_IDS, TIMEOUT_S)
    return EventLines(process)


def lifecycle(domain: str, what: str) -> str:
    return f"event 'lifecycle' for domain '{domain}': {what}"


async def test_virsh_lists_inspects_and_drives_a_domain(virsh: Virsh, host: Host) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})
    listed = await virsh.ok("list", "--all")
    assert listed.splitlines()[2].split() == ["-", "web", "shut", "off"]
    info = await virsh.ok("dominfo", "web")
    assert "OS Type:        exe" in info
    assert "State:          shut off" in info
    assert "Persistent:     yes" in info
    assert "Autostart:      disable" in info
    assert (await virsh.ok("domstate", "--reason", "web")).strip() == "shut off (unknown)"

    assert "Domain 'web' started" in await virsh.ok("start", "web")
    assert (await virsh.ok("domstate", "--reason", "web")).strip() == "running (booted)"
    running = (await virsh.ok("list")).splitlines()[2].split()
    assert running[1:] == ["web", "running"] and int(running[0]) > 0
    assert "Domain 'web' suspended" in await virsh.ok("suspend", "web")
    assert (await virsh.ok("domstate", "--reason", "web")).strip() == "paused (user)"
    assert "Domain 'web' resumed" in await virsh.ok("resume", "web")
    assert (await virsh.ok("domstate", "--reason", "web")).strip() == "running (unpaused)"
    assert "is being shutdown" in await virsh.ok("shutdown", "web")
    # libvirt's shutdown answers once delivered: the stop follows
    await host.events.wait_for(
        lambda e: isinstance(e, LifecycleEvent) and e.domain.name == "web" and e.event == "stopped"
    )
    assert (await virsh.ok("domstate", "--reason", "web")).strip() == "shut off (shutdown)"
    await virsh.ok("start", "web")
    assert "Domain 'web' destroyed" in await virsh.ok("destroy", "web")
    assert (await virsh.ok("domstate", "--reason", "web")).strip() == "shut off (destroyed)"

    again = await virsh("destroy", "web")
    assert again.status == 1
    assert "Requested operation is not valid: domain is not running" in again.err


async def test_virsh_schedinfo_and_memtune_show_the_cgroups_controls(
    virsh: Virsh, host: Host
) -> None:
    await host.ok("domain.define", args={"spec": spec("tuned", memory_kib=65536, vcpus=1)})
    configured = _fields(await virsh.ok("memtune", "tuned"))
    assert configured == {
        "hard_limit": "65536",
        "soft_limit": "unlimited",
        "swap_hard_limit": "65536",
    }
    await host.ok("domain.create", "tuned")
    scheduler = _fields(await virsh.ok("schedinfo", "tuned"))
    assert scheduler == {
        "Scheduler": "posix",
        "cpu_shares": str(DEFAULT_CPU_SHARES),
        "vcpu_period": "100000",
        "vcpu_quota": "100000",
    }
    live = _fields(await virsh.ok("memtune", "tuned"))
    assert live == configured | {"swap_hard_limit": "65536" if SWAP_ACCOUNTED else "unlimited"}
    assert _fields(await virsh.ok("schedinfo", "--config", "tuned"))["cpu_shares"] == "0"


async def test_virsh_schedinfo_and_memtune_set_by_libvirts_live_and_config_rules(
    virsh: Virsh, host: Host
) -> None:
    await host.ok("domain.define", args={"spec": spec("tuned", memory_kib=65536, vcpus=1)})
    await host.ok("domain.create", "tuned")
    await virsh.ok("memtune", "tuned", "--hard-limit", "98304")  # current: live
    assert _fields(await virsh.ok("memtune", "tuned"))["hard_limit"] == "98304"
    assert "98304 KiB" in await virsh.ok("dominfo", "tuned")
    assert _fields(await virsh.ok("memtune", "--config", "tuned"))["hard_limit"] == "65536"
    await virsh.ok(
        "memtune", "tuned", "--soft-limit", "32768", "--swap-hard-limit", "196608", "--live"
    )
    live = _fields(await virsh.ok("memtune", "tuned"))
    swap = "196608" if SWAP_ACCOUNTED else "unlimited"
    assert live == {"hard_limit": "98304", "soft_limit": "32768", "swap_hard_limit": swap}
    shares = _fields(await virsh.ok("schedinfo", "tuned", "--set", "cpu_shares=512", "--live"))
    assert shares["cpu_shares"] == str(cgroup_weight(512))
    await virsh.ok("schedinfo", "tuned", "--set", "cpu_shares=300", "--config")
    assert _fields(await virsh.ok("schedinfo", "--config", "tuned"))["cpu_shares"] == "300"
    assert _fields(await virsh.ok("schedinfo", "tuned"))["cpu_shares"] == str(cgroup_weight(512))
    assert "<shares>300</shares>" in await virsh.ok("dumpxml", "--inactive", "tuned")

    below = await virsh("memtune", "tuned", "--soft-limit", "1000")
    assert below.status == 1 and "soft_limit_kib" in below.err
    crossed = await virsh("memtune", "tuned", "--hard-limit", "262144")
    assert crossed.status == 1
    assert "hard_limit tunable value must be lower than or equal to swap_hard_limit" in crossed.err
    quota = await virsh("schedinfo", "tuned", "--set", "vcpu_quota=50000")
    assert quota.status == 1 and "its vCPU count (setvcpus)" in quota.err

    # the next start gives the same container the persistent definition's controls: the
    # soft limit set live stays, since Docker cannot take it away
    async with aiodocker.Docker() as docker:
        container = await docker.containers.get(host.container_name("tuned"))
        await host.ok("domain.destroy", "tuned")
        await host.ok("domain.create", "tuned")
        await container.show()  # still there: not made again
    assert _fields(await virsh.ok("schedinfo", "tuned"))["cpu_shares"] == str(cgroup_weight(300))
    restarted = _fields(await virsh.ok("memtune", "tuned"))
    assert restarted == {
        "hard_limit": "65536",
        "soft_limit": "32768",
        "swap_hard_limit": "65536" if SWAP_ACCOUNTED else "unlimited",
    }


async def test_virsh_setvcpus_and_setmem_follow_libvirts_live_and_config_rules(
    virsh: Virsh, host: Host
) -> None:
    await host.ok("domain.define", args={"spec": spec("tuned", memory_kib=65536, vcpus=1)})
    assert _counts(await virsh.ok("vcpucount", "tuned")) == {
        ("maximum", "config"): "1",
        ("current", "config"): "1",
    }
    await host.ok("domain.create", "tuned")
    await virsh.ok("setvcpus", "tuned", "2", "--config")
    await virsh.ok("setmem", "tuned", "98304", "--config")
    assert _counts(await virsh.ok("vcpucount", "tuned")) == {
        ("maximum", "config"): "2",
        ("maximum", "live"): "1",
        ("current", "config"): "2",
        ("current", "live"): "1",
    }
    assert "Max memory:     65536 KiB" in await virsh.ok("dominfo", "tuned")
    await virsh.ok("setmem", "tuned", "32768")  # current: live only
    assert "<memory unit='KiB'>98304</memory>" in await virsh.ok("dumpxml", "--inactive", "tuned")
    await host.ok("domain.destroy", "tuned")
    await host.ok("domain.create", "tuned")
    assert "Max memory:     98304 KiB" in await virsh.ok("dominfo", "tuned")
    assert (await virsh.ok("vcpucount", "tuned", "--live")).strip() == "2"


def _counts(printed: str) -> dict[tuple[str, str], str]:
    """virsh vcpucount's ``which  definition  count`` rows."""
    rows = (line.split() for line in printed.splitlines() if line.strip())
    return {(which, definition): count for which, definition, count in rows}


def cgroup_weight(shares: int) -> int:
    """What the kernel shows for ``shares``: v1's cpu.shares, or the cpu.weight runc
    converts them to on v2."""
    if DEFAULT_CPU_SHARES == 1024:
        return shares
    return 1 + ((shares - 2) * 9999) // 262142


DEFAULT_CPU_SHARES = 100 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else 1024
"""The weight Docker leaves a container's cgroup: v2's cpu.weight, or v1's cpu.shares."""
SWAP_ACCOUNTED = not Path("/sys/fs/cgroup/memory").is_dir() or (
    Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
)
"""Whether the kernel limits memory and swap together (v1 needs swap accounting on)."""


def _fields(printed: str) -> dict[str, str]:
    """virsh's ``name : value`` lines."""
    pairs = (line.split(":", 1) for line in printed.splitlines() if ":" in line)
    return {name.strip(): value.strip() for name, value in pairs}


async def test_virsh_event_prints_libvirts_lifecycle_lines(
    virsh: Virsh, gateway: Gateway, host: Host
) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})
    events = await watch(virsh, gateway)
    try:
        # shutdown and reboot answer once delivered (libvirt's): each step's event is
        # awaited before the next step
        for verb, line in (
            ("start", lifecycle("web", "Started Booted")),
            ("suspend", lifecycle("web", "Suspended Paused")),
            ("resume", lifecycle("web", "Resumed Unpaused")),
            ("shutdown", lifecycle("web", "Stopped Shutdown")),
            ("start", lifecycle("web", "Started Booted")),
            ("reboot", "event 'reboot' for domain 'web'"),
            ("destroy", lifecycle("web", "Stopped Destroyed")),
            ("undefine", lifecycle("web", "Undefined Removed")),
        ):
            await virsh.ok(verb, "web")
            assert await events.next() == line
    finally:
        await events.stop()
    await gateway.wait_callbacks(lambda n: n == 0, TIMEOUT_S)


async def test_virsh_defines_dumps_and_undefines_xml(
    virsh: Virsh, host: Host, tmp_path: Path
) -> None:
    source = tmp_path / "xmlweb.xml"
    source.write_text(XML)
    assert f"Domain 'xmlweb' defined from {source}" in await virsh.ok("define", str(source))
    dumped = await virsh.ok("dumpxml", "xmlweb")
    assert "<name>xmlweb</name>" in dumped
    assert f"<source name='{IMAGE}'/>" in dumped
    again = tmp_path / "again.xml"
    again.write_text(dumped)
    await virsh.ok("define", str(again))
    assert await virsh.ok("dumpxml", "xmlweb") == dumped
    assert "Domain 'xmlweb' has been undefined" in await virsh.ok("undefine", "xmlweb")
    assert "xmlweb" not in await virsh.ok("list", "--all")

    broken = tmp_path / "broken.xml"
    broken.write_text("<domain")
    refused = await virsh("define", str(broken))
    assert refused.status == 1
    assert "XML error" in refused.err


async def test_virsh_creates_transient_domains_and_tunes_them(
    virsh: Virsh, host: Host, tmp_path: Path
) -> None:
    source = tmp_path / "xmlweb.xml"
    source.write_text(XML)
    assert f"Domain 'xmlweb' created from {source}" in await virsh.ok("create", str(source))
    assert "xmlweb" in await virsh.ok("list", "--transient")
    await virsh.ok("setmem", "xmlweb", "32M")
    await virsh.ok("setvcpus", "xmlweb", "2")
    info = await virsh.ok("dominfo", "xmlweb")
    assert "Persistent:     no" in info
    assert "Max memory:     32768 KiB" in info
    assert "CPU(s):         2" in info
    await virsh.ok("destroy", "xmlweb")
    assert "xmlweb" not in await virsh.ok("list", "--all")

    await host.ok("domain.define", args={"spec": spec("web")})
    assert "marked as autostarted" in await virsh.ok("autostart", "web")
    assert "web" in await virsh.ok("list", "--all", "--autostart")
    assert "web" not in await virsh.ok("list", "--all", "--no-autostart")
    assert "successfully renamed" in await virsh.ok("domrename", "web", "www")
    await virsh.ok("start", "--paused", "www")
    assert (await virsh.ok("domstate", "--reason", "www")).strip() == "paused (user)"


async def test_errors_and_uris(virsh: Virsh, gateway: Gateway, host: Host) -> None:
    missing = await virsh("dominfo", "nosuch")
    assert missing.status == 1
    assert "failed to get domain 'nosuch'" in missing.err
    unsupported = await virsh("nwfilter-list")
    assert unsupported.status == 1
    assert "this function is not supported by the connection driver" in unsupported.err

    await host.ok("domain.define", args={"spec": spec("web")})
    lxc = Virsh(virsh.path, uri(gateway, host.name, "lxc"))
    assert "web" in await lxc.ok("list", "--all")
    assert (await virsh.ok("hostname")).strip() == host.name

    nameless = Virsh(virsh.path, f"virtbus+tcp://127.0.0.1:{gateway.port}/")
    refused = await nameless("list")
    assert refused.status == 1
    assert "must name a virtbus host" in refused.err


@pytest.fixture
def nobody_home() -> Iterator[Path]:
    """A config home another user can read (pytest's tmp_path is root's only)."""
    home = Path(tempfile.mkdtemp(prefix="virtbus-gateway-"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home)


async def test_an_alias_from_libvirt_conf_names_gateway_and_host(
    virsh_path: str, gateway: Gateway, host: Host, nobody_home: Path
) -> None:
    """libvirt reads ``uri_aliases`` from the user's libvirt.conf (root reads the
    system's, so the client runs as nobody here)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        unavailable("setpriv (util-linux)")
    assert setpriv is not None
    conf = nobody_home / "libvirt" / "libvirt.conf"
    conf.parent.mkdir(mode=0o755)
    conf.write_text(f'uri_aliases = [ "fleet-h1={uri(gateway, host.name)}" ]\n')
    conf.chmod(0o644)
    await host.ok("domain.define", args={"spec": spec("web")})
    process = await asyncio.create_subprocess_exec(
        setpriv,
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        virsh_path,
        "-c",
        "fleet-h1",
        "list",
        "--all",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            "PATH": os.environ.get("PATH", ""),
            "LC_ALL": "C",
            "HOME": str(nobody_home),
            "XDG_CONFIG_HOME": str(nobody_home),
            "XDG_CACHE_HOME": str(nobody_home / "cache"),
            "XDG_RUNTIME_DIR": str(nobody_home / "run"),
        },
    )
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines()[2].split() == ["-", "web", "shut", "off"]


async def test_each_client_has_its_own_callbacks(
    virsh: Virsh, gateway: Gateway, host: Host
) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})
    first = await watch(virsh, gateway)
    second = await watch(virsh, gateway, callbacks_before=EVENT_IDS)
    try:
        await virsh.ok("start", "web")
        assert await first.next() == lifecycle("web", "Started Booted")
        assert await second.next() == lifecycle("web", "Started Booted")
        await first.stop(signal.SIGKILL)
        await gateway.wait_callbacks(lambda n: n == EVENT_IDS, TIMEOUT_S)
        await virsh.ok("destroy", "web")
        assert await second.next() == lifecycle("web", "Stopped Destroyed")
    finally:
        await first.stop()
        await second.stop()
    await gateway.wait_callbacks(lambda n: n == 0, TIMEOUT_S)


def client_pki(directory: Path, trusted: trustme.CA, signer: trustme.CA) -> Path:
    """A libvirt ``pkipath``: the CAs the client trusts (the server's, and its own
    certificate's: libvirt checks both), and a client certificate."""
    directory.mkdir()
    (directory / "cacert.pem").write_bytes(trusted.cert_pem.bytes() + signer.cert_pem.bytes())
    client = signer.issue_cert("client.virtbus.test")
    client.cert_chain_pems[0].write_to_path(str(directory / "clientcert.pem"))
    client.private_key_pem.write_to_path(str(directory / "clientkey.pem"))
    return directory


async def test_tls_admits_only_clients_the_ca_signed(
    virsh_path: str, host: Host, tmp_path: Path
) -> None:
    ca, rogue_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "servercert.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "serverkey.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    admitted = client_pki(tmp_path / "admitted", ca, ca)
    rogue = client_pki(tmp_path / "rogue", ca, rogue_ca)
    tls = tls_context(
        str(tmp_path / "servercert.pem"), str(tmp_path / "serverkey.pem"), str(tmp_path / "ca.pem")
    )
    await host.ok("domain.define", args={"spec": spec("web")})
    async with Gateway(Connection(AMQP_URL), "127.0.0.1", 0, tls) as gateway:
        base = f"virtbus+tls://127.0.0.1:{gateway.port}/{host.name}"
        listed = await Virsh(virsh_path, f"{base}?pkipath={admitted}").ok("list", "--all")
        assert listed.splitlines()[2].split() == ["-", "web", "shut", "off"]
        refused = await Virsh(virsh_path, f"{base}?pkipath={rogue}")("list", "--all")
        # virsh fails reading the confirmation, or dies of SIGPIPE writing to the
        # connection the gateway closed
        assert refused.status in (1, -signal.SIGPIPE), refused.err
        assert "web" not in refused.out


async def test_the_gateway_command_serves_until_sigterm(
    virsh_path: str, host: Host, cli: CLI
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await cli.start("gateway", "--listen", f"127.0.0.1:{port}")
    try:
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), TIMEOUT_S)
        assert f"gateway listening on 127.0.0.1:{port}" in line.decode()
        await host.ok("domain.define", args={"spec": spec("web")})
        served = Virsh(virsh_path, f"virtbus+tcp://127.0.0.1:{port}/{host.name}")
        assert "web" in await served.ok("list", "--all")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    assert process.returncode == 0


LIBVIRT_SCRIPT = """
import json, sys, threading
import libvirt

libvirt.virEventRegisterDefaultImpl()
threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl() for _ in iter(int, 1)],
                 daemon=True).start()
found = {}
seen = []
arrived = threading.Condition()

def on_lifecycle(conn, dom, event, detail, opaque):
    with arrived:
        seen.append([dom.name(), event, detail])
        arrived.notify_all()

def on_reboot(conn, dom, opaque):
    with arrived:
        seen.append([dom.name(), "reboot"])
        arrived.notify_all()

def error_code(call):
    try:
        call()
    except libvirt.libvirtError as error:
        return [error.get_error_code(), error.get_error_message()]
    return None

conn = libvirt.open(sys.argv[1])
conn.setKeepAlive(5, 3)
lifecycle_id = conn.domainEventRegisterAny(
    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle, None)
conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, on_reboot, None)
found["hostname"] = conn.getHostname()
found["listed"] = [d.name() for d in conn.listAllDomains()]
dom = conn.lookupByName("web")
found["by_uuid"] = conn.lookupByUUIDString(dom.UUIDString()).name()
found["inactive"] = [dom.ID(), dom.isActive(), dom.isPersistent(), dom.OSType(), dom.state()]
dom.create()
found["by_id"] = conn.lookupByID(dom.ID()).name()
found["active"] = [d.name() for d in conn.listAllDomains(
    libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]
found["info"] = dom.info()
dom.suspend()
found["paused"] = dom.state()
dom.resume()
dom.reboot()
with arrived:  # libvirt's reboot answers once delivered
    arrived.wait_for(lambda: ["web", "reboot"] in seen, timeout=30)
dom.destroy()
found["destroy_again"] = error_code(dom.destroy)
found["missing"] = error_code(lambda: conn.lookupByName("nosuch"))
found["clash"] = error_code(lambda: conn.defineXML(
    dom.XMLDesc(0).replace(dom.UUIDString(), "6f1c2d3e-0000-4000-8000-000000000009")))
dom.setAutostart(1)
found["autostart"] = dom.autostart()
with arrived:
    arrived.wait_for(lambda: len(seen) >= 5, timeout=30)
found["events"] = seen
conn.domainEventDeregisterAny(lifecycle_id)
conn.close()
print(json.dumps(found))
"""


async def test_libvirt_python_manages_a_domain(
    libvirt_python: str, gateway: Gateway, host: Host, tmp_path: Path
) -> None:
    record = await host.ok("domain.define", args={"spec": spec("web")})
    script = tmp_path / "manage.py"
    script.write_text(LIBVIRT_SCRIPT)
    process = await asyncio.create_subprocess_exec(
        libvirt_python,
        str(script),
        uri(gateway, host.name),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    assert process.returncode == 0, err.decode()
    found: dict[str, Any] = json.loads(out)
    assert found["hostname"] == host.name
    assert found["listed"] == ["web"]
    assert found["by_uuid"] == "web"
    assert found["inactive"] == [-1, 0, 1, "exe", [5, 0]]
    assert found["by_id"] == "web"
    assert found["active"] == ["web"]
    assert found["info"][0] == 1
    assert found["paused"] == [3, 1]
    assert found["destroy_again"] == [
        55,
        "Requested operation is not valid: domain is not running",
    ]
    assert found["missing"][0] == 42
    assert found["clash"] == [
        9,
        f"operation failed: domain 'web' already exists with uuid {record['uuid']}",
    ]
    assert found["autostart"] == 1
    assert found["events"] == [
        ["web", 2, 0],
        ["web", 3, 0],
        ["web", 4, 0],
        ["web", "reboot"],
        ["web", 5, 1],
    ]
    after = await host.ok("domain.lookup", "web")
    assert after["uuid"] == record["uuid"]
    assert (after["state"], after["reason"], after["autostart"]) == (5, 2, True)
    await gateway.wait_callbacks(lambda n: n == 0, TIMEOUT_S)
