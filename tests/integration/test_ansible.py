"""Ansible's libvirt modules (community.libvirt's ``virt``, ``virt_net`` and ``virt_pool``,
as Debian's ``ansible`` ships them) manage a virtbus host through the gateway, unchanged:
each task's result as a playbook sees it, a second run of a task changing nothing, and
the domain's lifecycle on the bus."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.gateway.server import Gateway
from schemas.events import LifecycleEvent
from tests.environment import unavailable
from tests.integration.test_gateway import (  # noqa: F401  (fixtures)
    SYSTEM_PYTHON,
    gateway,
    libvirt_python,
    uri,
)
from tests.support import BusPeer, EventRecorder, lifecycle
from tests.support.fleet import A_WHOLE_LIFE, Fleet, Host, spec_xml

pytestmark = pytest.mark.integration

PLAYBOOK_S = 100.0
POLICY = """
images = ["virtbus-test:*"]
network_define = ["vt-*"]
network_subnets = ["10.251.0.0/16"]
"""
DOMAIN_XML = spec_xml("web")
NETWORK_XML = """<network>
  <name>vt-lan</name>
  <ip address='10.251.9.1' netmask='255.255.255.0'/>
</network>
"""
TASKS: list[tuple[str, str, dict[str, Any]]] = [
    ("define", "virt", {"command": "define", "xml": DOMAIN_XML}),
    ("define again", "virt", {"command": "define", "xml": DOMAIN_XML}),
    ("start", "virt", {"name": "web", "state": "running"}),
    ("start again", "virt", {"name": "web", "state": "running"}),
    ("pause", "virt", {"name": "web", "state": "paused"}),
    ("paused ones", "virt", {"command": "list_vms", "state": "paused"}),
    ("info", "virt", {"command": "info"}),
    ("resume", "virt", {"name": "web", "state": "running"}),
    ("status", "virt", {"name": "web", "command": "status"}),
    ("destroy", "virt", {"name": "web", "state": "destroyed"}),
    ("destroy again", "virt", {"name": "web", "state": "destroyed"}),
    ("undefine", "virt", {"name": "web", "command": "undefine"}),
    ("net define", "virt_net", {"command": "define", "name": "vt-lan", "xml": NETWORK_XML}),
    ("net define again", "virt_net", {"command": "define", "name": "vt-lan", "xml": NETWORK_XML}),
    ("net start", "virt_net", {"name": "vt-lan", "state": "active"}),
    ("net start again", "virt_net", {"name": "vt-lan", "state": "active"}),
    ("net info", "virt_net", {"command": "info"}),
    ("net stop", "virt_net", {"name": "vt-lan", "state": "inactive"}),
    ("net absent", "virt_net", {"name": "vt-lan", "state": "absent"}),
    ("net absent again", "virt_net", {"name": "vt-lan", "state": "absent"}),
    ("pools", "virt_pool", {"command": "list_pools", "state": "active"}),
    ("pool facts", "virt_pool", {"command": "facts"}),
    ("pool autostart", "virt_pool", {"name": "default", "autostart": True}),
]


@pytest.fixture(scope="session")
def ansible_playbook(libvirt_python: str) -> str:  # noqa: F811
    """Debian's ansible-playbook, whose modules run in the system python3 (libvirt-python,
    and lxml for ``virt_net``)."""
    path = shutil.which("ansible-playbook")
    if path is None:
        unavailable("ansible-playbook (Debian's ansible)")
    assert path is not None
    for module in ("lxml", "ansible_collections.community.libvirt"):
        probe = subprocess.run([SYSTEM_PYTHON, "-c", f"import {module}"], check=False, timeout=60)
        if probe.returncode != 0:
            unavailable(f"{module} in {SYSTEM_PYTHON}")
    return path


async def ansible(path: str, workdir: Path, *argv: str) -> bytes:
    """What one Ansible command prints, once it succeeded; its files stay in ``workdir``."""
    environment = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_HOME": str(workdir / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": SYSTEM_PYTHON,
        "ANSIBLE_INVENTORY_ENABLED": "community.libvirt.libvirt,host_list",
        "LC_ALL": "C.UTF-8",
    }
    process = await asyncio.create_subprocess_exec(
        path,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        cwd=workdir,
    )
    out, err = await asyncio.wait_for(process.communicate(), PLAYBOOK_S)
    assert process.returncode == 0, (out.decode()[-4000:], err.decode()[-2000:])
    return out


async def run_playbook(path: str, target: str, workdir: Path) -> dict[str, dict[str, Any]]:
    """Every task of one play against ``target`` (a libvirt URI); its result by name."""
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "tasks": [
            {"name": name, f"community.libvirt.{module}": {**params, "uri": target}}
            for name, module, params in TASKS
        ],
    }
    playbook = workdir / "play.yml"
    playbook.write_text(json.dumps([play], indent=1))  # YAML reads JSON
    out = await ansible(path, workdir, "-i", "localhost,", str(playbook))
    report = json.loads(out)
    tasks = report["plays"][0]["tasks"]
    return {task["task"]["name"]: task["hosts"]["localhost"] for task in tasks}


async def test_ansible_manages_domains_networks_and_the_pool(
    fleet: Fleet,
    peer: BusPeer,
    gateway: Gateway,  # noqa: F811
    ansible_playbook: str,
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    agent = await fleet.start(policy_file=policy)
    host = Host(
        agent.host, peer, await EventRecorder(peer.channel, f"{agent.host}.#").start(), agent
    )

    results = await run_playbook(ansible_playbook, uri(gateway, host.name), tmp_path)

    changed = {name: result["changed"] for name, result in results.items()}
    assert changed == {
        "define": True,
        "define again": False,  # libvirt's "already exists" (9) tells Ansible nothing changed
        "start": True,
        "start again": False,
        "pause": True,
        "paused ones": False,
        "info": False,
        "resume": True,
        "status": False,
        "destroy": True,
        "destroy again": False,
        "undefine": False,  # the module's own report for a command
        "net define": True,
        "net define again": False,
        "net start": True,
        "net start again": False,
        "net info": False,
        "net stop": True,
        "net absent": True,
        "net absent again": False,
        "pools": False,
        "pool facts": False,
        "pool autostart": False,
    }
    assert results["define"]["created"] == "web"
    assert results["paused ones"]["list_vms"] == ["web"]
    info = results["info"]["web"]
    assert (info["state"], info["maxMem"], info["nrVirtCpu"]) == ("paused", "65536", 1)
    assert results["status"]["status"] == "running"
    network = results["net info"]["networks"]["vt-lan"]
    assert (network["state"], network["persistent"], network["autostart"]) == (
        "active",
        "yes",
        "no",
    )
    assert results["pools"]["list_pools"] == ["default"]
    pool = results["pool facts"]["ansible_facts"]["ansible_libvirt_pools"]["default"]
    assert (pool["state"], pool["type"], pool["autostart"]) == ("active", "dir", "yes")

    fenced = await host.fence()
    assert lifecycle(fenced, "web") == A_WHOLE_LIFE
    assert all(e.origin == "agent" for e in fenced if isinstance(e, LifecycleEvent))
    listed = await host.ok("host.list_domains")
    assert [d["name"] for d in listed["domains"] if d["name"] == "web"] == []


async def test_ansibles_libvirt_inventory_lists_the_hosts_domains(
    host: Host,
    gateway: Gateway,  # noqa: F811
    ansible_playbook: str,
    tmp_path: Path,
) -> None:
    await host.ok("domain.define", args={"xml": spec_xml("inv-up")})
    await host.ok("domain.create", "inv-up")
    await host.ok("domain.define", args={"xml": spec_xml("inv-down")})
    source = tmp_path / "virtbus.libvirt.yml"
    source.write_text(
        json.dumps({"plugin": "community.libvirt.libvirt", "uri": uri(gateway, host.name)})
    )
    inventory = str(Path(ansible_playbook).with_name("ansible-inventory"))
    listed = json.loads(await ansible(inventory, tmp_path, "-i", str(source), "--list"))
    found = listed["_meta"]["hostvars"]
    assert sorted(found) == ["inv-down", "inv-up"]
    up, down = found["inv-up"]["info"], found["inv-down"]["info"]
    assert (up["state"], up["maxMem_kb"], up["nrVirtCpu"]) == ("running", 65536, 1)
    assert down["state"] == "shutoff"
    assert "<name>inv-up</name>" in found["inv-up"]["xml_desc"]
    assert "ansible_connection" not in found["inv-up"]  # no libvirt_lxc: not a local host
