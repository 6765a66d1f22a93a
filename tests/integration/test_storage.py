"""Storage volumes and disk-only snapshots over the bus, against a real agent, broker and
engine: data in a volume outlives the domains that mount it and is shared by the next;
a snapshot brings a domain's files back, with libvirt's "from snapshot" events; the
policy refuses before the engine is touched; nothing is left behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from agent.host.driver import HOST_LABEL, SNAPSHOT_REPOSITORY
from schemas.events import Event, LifecycleEvent
from tests.support import BusPeer, lifecycle
from tests.support.fleet import CLI, Fleet, Host, spec

pytestmark = pytest.mark.integration


async def volumes(docker: aiodocker.Docker, host: str) -> list[str]:
    raw = await docker._query_json(
        "volumes", params={"filters": json.dumps({"label": [f"{HOST_LABEL}={host}"]})}
    )
    return sorted(v["Name"] for v in raw["Volumes"] or [])


async def snapshot_images(docker: aiodocker.Docker, host: str) -> list[dict[str, Any]]:
    found = await docker.images.list(filters={"label": [f"{HOST_LABEL}={host}"]})
    return list(found)


def stopped(name: str) -> Callable[[Event], bool]:
    return lambda e: (
        isinstance(e, LifecycleEvent) and e.event == "stopped" and e.domain.name == name
    )


async def run_once(host: Host, name: str, script: str, **fields: Any) -> None:
    """Run a transient domain to its end: its stop is awaited as an event."""
    await host.ok("domain.create_xml", args={"spec": spec(name, "sh", "-c", script, **fields)})
    await host.events.wait_for(stopped(name))


async def test_a_volume_outlives_its_domains_and_is_shared(
    host: Host, docker: aiodocker.Docker
) -> None:
    created = await host.ok(
        "volume.create", args={"pool": "default", "name": "data", "capacity": 1 << 20}
    )
    assert created["name"] == "data" and created["capacity"] == 1 << 20
    assert await volumes(docker, host.name) == [f"{host.name}.data"]
    pool = await host.ok("pool.lookup", args={"pool": "default"})
    assert pool["volumes"] == 1 and pool["active"]
    listed = await host.ok("pool.list_volumes", args={"pool": "default"})
    assert [v["name"] for v in listed["volumes"]] == ["data"]
    mount = [{"volume": "data", "target": "/data"}]

    await host.ok(
        "domain.define",
        args={"spec": spec("writer", "sh", "-c", "echo kept > /data/f", volumes=mount)},
    )
    await host.ok("domain.create", "writer")
    await host.events.wait_for(stopped("writer"))
    xml = (await host.ok("domain.get_xml_desc", "writer"))["xml"]
    assert "<source pool='default' volume='data'/>" in xml
    await host.ok("domain.undefine", "writer")
    assert await volumes(docker, host.name) == [f"{host.name}.data"]

    await run_once(host, "reader", 'test "$(cat /data/f)" = kept', volumes=mount)
    reader = [e for e in host.events.domain_events() if e.domain.name == "reader"]
    assert lifecycle(reader)[-1] == ("stopped", "shutdown")

    refused = await host.call("volume.delete", args={"pool": "default", "volume": "nope"})
    assert refused["error"]["code"] == "NO_STORAGE_VOL"
    await host.ok("volume.delete", args={"pool": "default", "volume": "data"})
    assert await volumes(docker, host.name) == []


async def test_the_policy_refuses_before_the_engine_is_touched(
    fleet: Fleet, peer: BusPeer, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        """
volumes_max = 1
volume_bytes_max = 1048576

[[volume_mounts]]
volumes = "shared-*"
domains = "web-*"
writable = false
"""
    )
    agent = await fleet.start(policy_file=policy)
    host = agent.host

    async def call(
        op: str, target: str | None = None, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await peer.call(host, op, {"name": target} if target else None, args)

    big = await call("volume.create", args={"pool": "default", "name": "big", "capacity": 1 << 30})
    assert big["error"]["code"] == "OPERATION_DENIED"
    assert await volumes(docker, host) == []
    assert (await call("volume.create", args={"pool": "default", "name": "shared-1"}))["ok"]
    second = await call("volume.create", args={"pool": "default", "name": "shared-2"})
    assert second["error"]["code"] == "OPERATION_DENIED"
    assert await volumes(docker, host) == [f"{host}.shared-1"]

    writable = [{"volume": "shared-1", "target": "/data"}]
    for name, mounts in (("web-1", writable), ("db-1", [{**writable[0], "readonly": True}])):
        refused = await call("domain.define", args={"spec": spec(name, volumes=mounts)})
        assert refused["error"]["code"] == "OPERATION_DENIED", refused
    filters = json.dumps({"label": [f"{HOST_LABEL}={host}"]})
    assert await docker.containers.list(all=True, filters=filters) == []
    readonly = [{**writable[0], "readonly": True}]
    assert (await call("domain.define", args={"spec": spec("web-1", volumes=readonly)}))["ok"]
    in_use = await call("volume.delete", args={"pool": "default", "volume": "shared-1"})
    assert in_use["error"]["code"] == "OPERATION_INVALID"
    assert (await call("domain.undefine", "web-1", {"volumes": True}))["ok"]
    assert await volumes(docker, host) == []


async def test_revert_brings_files_back_with_libvirts_events(
    host: Host, docker: aiodocker.Docker
) -> None:
    script = "echo one > /state; while sleep 1; do :; done"
    await host.ok("domain.define", args={"spec": spec("snap", "sh", "-c", script)})
    await host.ok("domain.create", "snap")
    taken = await host.ok("domain.snapshot_create", "snap", {"name": "s1", "description": "first"})
    assert taken["name"] == "s1" and taken["active"] and taken["current"]
    listed = await host.ok("host.list_domains", args={"flags": ["has_snapshot"]})
    assert [d["name"] for d in listed["domains"]] == ["snap"]
    container = docker.containers.container(host.container_name("snap"))
    exec_ = await container.exec(["sh", "-c", "echo two > /state"])
    async with exec_.start(detach=False) as stream:
        while await stream.read_out() is not None:
            pass

    before = len(host.events.domain_events())
    reverted = await host.ok("domain.snapshot_revert", "snap", {"snapshot": "s1"})
    assert reverted["state"] == 1 and reverted["reason"] == 4
    # the reply goes out ahead of the event that answered it
    await host.events.wait_for(
        lambda e: (
            isinstance(e, LifecycleEvent) and (e.event, e.detail) == ("started", "from_snapshot")
        )
    )
    events = host.events.domain_events()[before:]
    assert lifecycle(events, "snap") == [
        ("stopped", "from_snapshot"),
        ("defined", "from_snapshot"),
        ("started", "from_snapshot"),
    ]
    assert {e.origin for e in events} == {"agent"}
    container = docker.containers.container(host.container_name("snap"))
    exec_ = await container.exec(["cat", "/state"])
    async with exec_.start(detach=False) as stream:
        message = await stream.read_out()
    assert message is not None and message.data == b"one\n"
    xml = (await host.ok("snapshot.get_xml_desc", "snap", {"snapshot": "s1"}))["xml"]
    assert "<name>s1</name>" in xml and "<state>disk-snapshot</state>" in xml
    current = await host.ok("domain.snapshot_current", "snap")
    assert current["name"] == "s1"

    refused = await host.call("domain.undefine", "snap")
    assert refused["error"]["code"] == "OPERATION_INVALID"
    await host.ok("snapshot.delete", "snap", {"snapshot": "s1"})
    missing = await host.call("snapshot.delete", "snap", {"snapshot": "s1"})
    assert missing["error"]["code"] == "NO_DOMAIN_SNAPSHOT"
    await host.ok("domain.destroy", "snap")
    await host.ok("domain.undefine", "snap")
    assert await snapshot_images(docker, host.name) == []
    assert not [
        i
        for i in await docker.images.list()
        if any(SNAPSHOT_REPOSITORY in t for t in i.get("RepoTags") or [])
        and (i.get("Labels") or {}).get(HOST_LABEL) == host.name
    ]


async def test_the_cli_verbs_are_virshs(host: Host, cli: CLI, docker: aiodocker.Docker) -> None:
    """Each verb is a process of its own: the fewest that show virsh's words."""
    on = ("--host", host.name)
    created = await cli("vol-create-as", "default", "data", "10M", *on)
    assert created.out.strip() == "Vol data created"
    assert "Capacity:       10.00 MiB" in (await cli("vol-info", "data", *on)).out
    mounts = [{"volume": "data", "target": "/data"}]
    assert (await cli("define", cli.spec_file("web", volumes=mounts), *on)).status == 0
    snapshot = await cli("snapshot-create-as", "web", "s1", "first", *on)
    assert snapshot.out.strip() == "Domain snapshot s1 created"
    rows = (await cli("snapshot-list", "web", *on)).out.splitlines()
    assert rows[2].split()[0] == "s1" and rows[2].split()[-1] == "disk-snapshot"
    reverted = await cli("snapshot-revert", "web", "s1", "--running", *on)
    assert reverted.out.strip() == "Domain 'web' reverted to snapshot s1"
    assert (await cli("destroy", "web", *on)).status == 0
    undefined = await cli("undefine", "web", "--snapshots-metadata", "--remove-all-storage", *on)
    assert undefined.status == 0, undefined.err
    assert await volumes(docker, host.name) == []
    assert await snapshot_images(docker, host.name) == []
