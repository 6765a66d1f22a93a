"""virt-manager's command-line tools (Debian's virtinst: virt-install, virt-xml,
virt-clone) against the gateway and a real agent, as an operator types them: a container
installed, its definition edited, then cloned; each step checked on the bus."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from agent.gateway.server import Gateway
from schemas.codes import DomainState
from tests.environment import unavailable
from tests.integration.test_gateway import (  # noqa: F401  (fixtures)
    TIMEOUT_S,
    gateway,
    uri,
)
from tests.support import lifecycle
from tests.support.fleet import Host, Ran
from tests.support.services import IMAGE

pytestmark = pytest.mark.integration

TOOLS = ("virt-install", "virt-xml", "virt-clone")


@pytest.fixture(scope="session")
def virtinst() -> dict[str, str]:
    paths = {tool: shutil.which(tool) for tool in TOOLS}
    for tool, path in paths.items():
        if path is None:
            unavailable(f"{tool} (Debian's virtinst)")
    return {tool: str(path) for tool, path in paths.items()}


async def run(path: str, *argv: str) -> Ran:
    process = await asyncio.create_subprocess_exec(
        path,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LC_ALL": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")},
    )
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def test_virt_install_edits_and_clones_a_container(
    virtinst: dict[str, str],
    gateway: Gateway,  # noqa: F811
    host: Host,
) -> None:
    connect = uri(gateway, host.name, scheme="lxc")
    installed = await run(
        virtinst["virt-install"],
        "--connect",
        connect,
        "--name",
        "vi",
        "--memory",
        "64",
        "--vcpus",
        "1",
        "--container",
        "--filesystem",
        f"type=template,source={IMAGE},target=/",
        "--boot",
        "init=/bin/sleep,initargs=3600",
        "--network",
        "none",
        "--noautoconsole",
    )
    assert installed.status == 0, installed.err
    assert "Domain creation completed" in installed.out
    running = await host.ok("domain.get_info", "vi")
    assert (running["state"], running["max_mem_kib"], running["nr_virt_cpu"]) == (
        DomainState.RUNNING,
        65536,
        1,
    )

    edited = await run(virtinst["virt-xml"], "-c", connect, "vi", "--edit", "--memory", "128")
    assert edited.status == 0, edited.err
    assert (await host.ok("domain.get_info", "vi"))["max_mem_kib"] == 65536
    await host.ok("domain.destroy", "vi")
    # shut off, the domain is its new definition
    assert (await host.ok("domain.get_info", "vi"))["max_mem_kib"] == 131072

    cloned = await run(
        virtinst["virt-clone"],
        "--connect",
        connect,
        "--original",
        "vi",
        "--name",
        "vi2",
        "--auto-clone",
    )
    assert cloned.status == 0, cloned.err
    original = await host.ok("domain.lookup", "vi")
    clone = await host.ok("domain.lookup", "vi2")
    assert clone["uuid"] != original["uuid"]
    assert clone["state"] == DomainState.SHUTOFF and clone["persistent"]
    clone_xml = (await host.ok("domain.get_xml_desc", "vi2"))["xml"]
    assert f"<source name='{IMAGE}'/>" in clone_xml
    assert "<memory unit='KiB'>131072</memory>" in clone_xml
    await host.ok("domain.create", "vi2")

    fenced = await host.fence()
    # virt-install starts the domain from its XML, then defines it to keep it
    assert lifecycle(fenced, "vi") == [
        ("started", "booted"),
        ("defined", "added"),
        ("defined", "updated"),
        ("stopped", "destroyed"),
    ]
    assert lifecycle(fenced, "vi2") == [("defined", "added"), ("started", "booted")]
