"""The real virsh against the gateway and a real agent: pools, volumes and snapshots as
a virsh user sees them, and a revert's events as ``virsh event`` prints them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agent.gateway.server import Gateway
from tests.integration.test_gateway import (  # noqa: F401  (fixtures)
    TIMEOUT_S,
    Virsh,
    gateway,
    libvirt_python,
    lifecycle,
    uri,
    virsh,
    virsh_path,
    watch,
)
from tests.support.fleet import Host, spec

pytestmark = pytest.mark.integration


async def test_virsh_manages_volumes_of_the_default_pool(
    virsh: Virsh,  # noqa: F811
    host: Host,
) -> None:
    pools = (await virsh.ok("pool-list", "--all")).splitlines()
    assert pools[2].split() == ["default", "active", "yes"]
    assert "State:          running" in await virsh.ok("pool-info", "default")
    assert "<path>/var/lib/docker/volumes</path>" in await virsh.ok("pool-dumpxml", "default")

    created = await virsh.ok("vol-create-as", "default", "data", "10M")
    assert "Vol data created" in created
    again = await virsh("vol-create-as", "default", "data", "10M")
    assert again.status == 1 and "already in use" in again.err
    listed = (await virsh.ok("vol-list", "default")).splitlines()
    assert listed[2].split()[0] == "data"
    info = await virsh.ok("vol-info", "--pool", "default", "data")
    assert "Type:           dir" in info and "Capacity:       10.00 MiB" in info
    assert "<name>data</name>" in await virsh.ok("vol-dumpxml", "--pool", "default", "data")
    path = (await virsh.ok("vol-path", "--pool", "default", "data")).strip()
    assert path.endswith(f"/{host.name}.data/_data")
    assert (await virsh.ok("vol-key", "--pool", "default", "data")).strip() == path
    assert "Vol data2 created" in await virsh.ok("vol-create-as", "default", "data2", "1024")
    assert "Capacity:       1.00 KiB" in await virsh.ok("vol-info", "--pool", "default", "data2")
    await virsh.ok("vol-delete", "--pool", "default", "data2")
    # registered, and deregistered when virsh gives up waiting: the pool never changes
    waited = await virsh("pool-event", "--event", "lifecycle", "--loop", "--timeout", "1")
    assert waited.err == "" and "event loop timed out\nevents received: 0" in waited.out

    missing = await virsh("vol-info", "--pool", "default", "nope")
    assert missing.status == 1 and "Storage volume not found" in missing.err
    nopool = await virsh("vol-list", "other")
    assert nopool.status == 1 and "Storage pool not found" in nopool.err

    assert "Vol data deleted" in await virsh.ok("vol-delete", "--pool", "default", "data")
    assert len((await virsh.ok("vol-list", "default")).strip().splitlines()) == 2


async def test_virsh_snapshots_and_reverts_a_domain(
    virsh: Virsh,  # noqa: F811
    gateway: Gateway,  # noqa: F811
    host: Host,
) -> None:
    await host.ok("domain.define", args={"spec": spec("snap")})
    await virsh.ok("start", "snap")
    assert (await virsh.ok("list", "--with-snapshot", "--name")).strip() == ""
    created = await virsh.ok("snapshot-create-as", "snap", "s1", "first", "--disk-only")
    assert "Domain snapshot s1 created" in created
    assert (await virsh.ok("list", "--with-snapshot", "--name")).strip() == "snap"
    assert (await virsh.ok("list", "--without-snapshot", "--name")).strip() == ""
    listed = (await virsh.ok("snapshot-list", "snap")).splitlines()
    assert listed[2].split()[0] == "s1" and listed[2].split()[-1] == "disk-snapshot"
    assert (await virsh.ok("snapshot-current", "--name", "snap")).strip() == "s1"
    dumped = await virsh.ok("snapshot-dumpxml", "snap", "s1")
    assert "<description>first</description>" in dumped and "<name>snap</name>" in dumped
    memory = await virsh("snapshot-create-as", "snap", "s2", "--memspec", "file=/tmp/m")
    assert memory.status == 1 and "unsupported configuration" in memory.err
    assert "Domain snapshot s2 created" in await virsh.ok("snapshot-create-as", "snap", "s2")
    assert (await virsh.ok("snapshot-parent", "snap", "s2")).strip() == "s1"
    assert (await virsh("snapshot-parent", "snap", "s1")).status == 1
    info = await virsh.ok("snapshot-info", "snap", "s2")
    assert "Current:        yes" in info and "Parent:         s1" in info
    tree = (await virsh.ok("snapshot-list", "snap", "--tree")).split()
    assert tree[0] == "s1" and tree[-1] == "s2"
    assert (await virsh.ok("snapshot-list", "snap", "--leaves", "--name")).split() == ["s2"]
    assert "Domain snapshot s2 deleted" in await virsh.ok("snapshot-delete", "snap", "s2")

    events = await watch(virsh, gateway)
    try:
        await virsh.ok("snapshot-revert", "snap", "s1")
        assert await events.lines(3) == [
            lifecycle("snap", "Stopped Snapshot"),
            lifecycle("snap", "Defined Snapshot"),
            lifecycle("snap", "Started Snapshot"),
        ]
    finally:
        await events.stop()
    assert (await virsh.ok("domstate", "--reason", "snap")).strip() == "running (from snapshot)"

    refused = await virsh("undefine", "snap")
    assert refused.status == 1 and "snapshots" in refused.err
    await virsh.ok("destroy", "snap")
    assert "Domain 'snap' has been undefined" in await virsh.ok(
        "undefine", "--snapshots-metadata", "snap"
    )


STORAGE_SCRIPT = """
import json, sys
import libvirt

conn = libvirt.open(sys.argv[1])
found = {}
pool = conn.storagePoolLookupByName("default")
found["pool"] = [pool.name(), pool.isActive(), pool.isPersistent(), pool.autostart()]
found["pools"] = [p.name() for p in conn.listAllStoragePools()]
# the older calls (Ansible's virt_pool lists with them)
found["old"] = [
    conn.numOfStoragePools(),
    conn.listStoragePools(),
    conn.numOfDefinedStoragePools(),
    conn.listDefinedStoragePools(),
]
pool.setAutostart(1)
try:
    pool.setAutostart(0)
except libvirt.libvirtError as error:
    found["no_autostart"] = [error.get_error_code(), error.get_error_message()]
# virt-manager defines "default" when it finds none: it is there, and answered as such
defined = conn.storagePoolDefineXML(
    "<pool type='dir'><name>default</name><target><path>/x</path></target></pool>", 0
)
found["define"] = defined.name()
try:
    conn.storagePoolDefineXML("<pool type='dir'><name>other</name></pool>", 0)
except libvirt.libvirtError as error:
    found["other"] = error.get_error_code()
vol = pool.createXML(
    "<volume><name>data</name><capacity unit='MiB'>5</capacity></volume>", 0
)
found["vol"] = [vol.name(), vol.info(), vol.path() == vol.key()]
found["vols"] = [v.name() for v in pool.listAllVolumes()]
found["by_path"] = conn.storageVolLookupByPath(vol.path()).name()
dom = conn.lookupByName("lp")
dom.create()
snap = dom.snapshotCreateXML(
    "<domainsnapshot><name>s1</name><description>d</description></domainsnapshot>",
    libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY,
)
found["snap"] = [snap.getName(), snap.isCurrent(), dom.hasCurrentSnapshot()]
found["snaps"] = [s.getName() for s in dom.listAllSnapshots()]
found["num"] = dom.snapshotNum()
found["xml"] = "<state>disk-snapshot</state>" in snap.getXMLDesc()
dom.revertToSnapshot(snap)
found["state"] = dom.state()
snap.delete()
found["after"] = dom.snapshotNum()
try:
    dom.snapshotLookupByName("s1")
except libvirt.libvirtError as error:
    found["missing"] = error.get_error_code()
dom.destroy()
dom.undefine()
vol.delete()
found["left"] = pool.numOfVolumes()
conn.close()
print(json.dumps(found))
"""


async def test_libvirt_python_manages_volumes_and_snapshots(
    libvirt_python: str,  # noqa: F811
    gateway: Gateway,  # noqa: F811
    host: Host,
    tmp_path: Path,
) -> None:
    await host.ok("domain.define", args={"spec": spec("lp")})
    script = tmp_path / "storage.py"
    script.write_text(STORAGE_SCRIPT)
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
    assert found["pool"] == ["default", 1, 1, 1]
    assert found["pools"] == ["default"]
    assert found["old"] == [1, ["default"], 0, []]
    assert found["no_autostart"] == [
        3,
        "this function is not supported by the connection driver: storage pool 'default' not "
        "started with its host: a virtbus host's pool always is",
    ]
    assert found["define"] == "default" and found["other"] == 3
    assert found["vol"] == ["data", [2, 5 << 20, 0], True]
    assert found["vols"] == ["data"] and found["by_path"] == "data"
    assert found["snap"] == ["s1", 1, 1]
    assert found["snaps"] == ["s1"] and found["num"] == 1 and found["xml"]
    assert found["state"] == [1, 4]
    assert found["after"] == 0 and found["missing"] == 72
    assert found["left"] == 0
