"""Volumes and snapshots over a fake engine: the policy refuses before the engine is
asked anything, data-bearing objects are kept unless asked, and a revert is libvirt's
"from snapshot" sequence credited to its command."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar, get_args

import pytest

from agent.errors import VirtError
from agent.host.policy import Policy, VolumeRule
from agent.host.store import Store
from schemas.codes import DomainState, ErrorCode, Lifecycle, RunningReason
from schemas.commands import (
    CommandBase,
    Create,
    Define,
    Destroy,
    ListDomains,
    ListSnapshots,
    SnapshotCreate,
    SnapshotCurrent,
    SnapshotDelete,
    SnapshotRevert,
    Undefine,
    VolumeCreate,
    VolumeDelete,
)
from schemas.events import EVENT_ADAPTER, LifecycleEvent
from tests.fakes import FakeHost, fake_host

SPEC = {"name": "web", "image": "virtbus-test:latest", "command": ["sleep", "60"]}
C = TypeVar("C", bound=CommandBase)
_ids = iter(range(1, 1_000_000))


def command(model: type[C], target: str | None = None, **args: Any) -> C:
    (op,) = get_args(model.model_fields["op"].annotation)
    document: dict[str, Any] = {"op": op, "id": f"cmd-{next(_ids)}", "args": args}
    if target is not None:
        document["target"] = {"name": target}
    return model.model_validate(document)


class Rig:
    def __init__(self, host: FakeHost, policy: Policy) -> None:
        self.host = host
        self.operations = host.operations(policy=policy)

    async def run(self, cmd: CommandBase) -> Any:
        return await asyncio.wait_for(self.operations.run(cmd), 5.0)  # type: ignore[arg-type]

    def lifecycle(self) -> list[tuple[Lifecycle, str | None]]:
        events = (EVENT_ADAPTER.validate_json(p.body) for p in self.host.store.pending(1000))
        return [(e.lifecycle, e.cause) for e in events if isinstance(e, LifecycleEvent)]


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    policy = getattr(request, "param", Policy())
    with Store(tmp_path / "h1") as store:
        async with fake_host(store, tmp_path) as host:
            yield Rig(host, policy)


STRICT = Policy(
    volumes_max=1,
    volume_bytes_max=1 << 20,
    volume_mounts=[VolumeRule(volumes="shared-*", domains="web*", writable=False)],
)


@pytest.mark.parametrize("rig", [STRICT], indirect=True)
async def test_a_capacity_above_the_ceiling_is_refused_before_the_engine_is_asked(
    rig: Rig,
) -> None:
    with pytest.raises(VirtError) as refused:
        await rig.run(command(VolumeCreate, pool="default", name="big", capacity=1 << 30))
    assert refused.value.code is ErrorCode.OPERATION_DENIED
    assert rig.host.driver.calls == []


@pytest.mark.parametrize("rig", [STRICT], indirect=True)
async def test_a_volume_beyond_the_count_is_not_created(rig: Rig) -> None:
    await rig.run(command(VolumeCreate, pool="default", name="shared-1"))
    with pytest.raises(VirtError) as refused:
        await rig.run(command(VolumeCreate, pool="default", name="shared-2"))
    assert refused.value.code is ErrorCode.OPERATION_DENIED
    assert rig.host.driver.calls.count("create_volume") == 1
    assert list(rig.host.driver.volumes_held) == ["shared-1"]


@pytest.mark.parametrize("rig", [STRICT], indirect=True)
@pytest.mark.parametrize(
    ("name", "readonly"), [("web", False), ("db", True)], ids=["writable", "not-covered"]
)
async def test_a_mount_the_rules_do_not_allow_makes_no_container(
    rig: Rig, name: str, readonly: bool
) -> None:
    await rig.run(command(VolumeCreate, pool="default", name="shared-1"))
    mounts = [{"volume": "shared-1", "target": "/data", "readonly": readonly}]
    with pytest.raises(VirtError) as refused:
        await rig.run(command(Define, spec={**SPEC, "name": name, "volumes": mounts}))
    assert refused.value.code is ErrorCode.OPERATION_DENIED
    assert "create" not in rig.host.driver.calls


async def test_a_volume_in_use_is_kept_and_undefine_keeps_volumes_unless_asked(
    rig: Rig,
) -> None:
    for name in ("data", "logs"):
        await rig.run(command(VolumeCreate, pool="default", name=name))
    mounts = [{"volume": "data", "target": "/data"}, {"volume": "logs", "target": "/logs"}]
    await rig.run(command(Define, spec={**SPEC, "volumes": mounts}))
    await rig.run(command(Define, spec={**SPEC, "name": "db", "volumes": mounts[1:]}))
    with pytest.raises(VirtError) as in_use:
        await rig.run(command(VolumeDelete, pool="default", volume="data"))
    assert in_use.value.code is ErrorCode.OPERATION_INVALID
    await rig.run(command(Undefine, "db"))
    assert sorted(rig.host.driver.volumes_held) == ["data", "logs"]
    await rig.run(command(Undefine, "web", volumes=True))
    assert sorted(rig.host.driver.volumes_held) == []


async def test_a_missing_volume_is_no_storage_vol(rig: Rig) -> None:
    spec = {**SPEC, "volumes": [{"volume": "nope", "target": "/data"}]}
    with pytest.raises(VirtError) as missing:
        await rig.run(command(Define, spec=spec))
    assert missing.value.code is ErrorCode.NO_STORAGE_VOL
    assert rig.host.domains.by_name("web") is None


async def test_revert_is_libvirts_from_snapshot_sequence(rig: Rig) -> None:
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    first = await rig.run(command(SnapshotCreate, "web", name="s1"))
    assert first.current and first.active and first.parent is None
    second = await rig.run(command(SnapshotCreate, "web", name="s2"))
    assert second.parent == "s1"
    before = len(rig.lifecycle())
    revert = command(SnapshotRevert, "web", snapshot="s1")
    record = await rig.run(revert)
    assert (record.state, record.reason) == (DomainState.RUNNING, RunningReason.FROM_SNAPSHOT)
    assert rig.lifecycle()[before:] == [
        (Lifecycle.STOPPED_FROM_SNAPSHOT, revert.id),
        (Lifecycle.DEFINED_FROM_SNAPSHOT, revert.id),
        (Lifecycle.STARTED_FROM_SNAPSHOT, revert.id),
    ]
    (container,) = rig.host.driver.containers.values()
    assert container.spec.image.startswith("virtbus-snapshot:") and container.name == "web"
    assert (await rig.run(command(SnapshotCurrent, "web"))).name == "s1"


async def test_delete_makes_the_parent_current_and_undefine_needs_asking(rig: Rig) -> None:
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(SnapshotCreate, "web", name="s1"))
    await rig.run(command(SnapshotCreate, "web", name="s2"))
    listed = await rig.run(command(ListDomains, flags=["has_snapshot"]))
    assert [d.name for d in listed.domains] == ["web"]
    await rig.run(command(SnapshotDelete, "web", snapshot="s2"))
    assert (await rig.run(command(SnapshotCurrent, "web"))).name == "s1"
    with pytest.raises(VirtError) as refused:
        await rig.run(command(Undefine, "web"))
    assert refused.value.code is ErrorCode.OPERATION_INVALID
    assert "1 snapshots" in refused.value.detail
    await rig.run(command(Undefine, "web", snapshots=True))
    assert rig.host.driver.snapshots == {}
    assert (await rig.run(command(ListDomains, flags=["has_snapshot"]))).domains == []


async def test_an_unknown_snapshot_is_no_domain_snapshot(rig: Rig) -> None:
    await rig.run(command(Define, spec=SPEC))
    assert (await rig.run(command(ListSnapshots, "web"))).snapshots == []
    for cmd in (
        command(SnapshotCurrent, "web"),
        command(SnapshotDelete, "web", snapshot="nope"),
        command(SnapshotRevert, "web", snapshot="nope"),
    ):
        with pytest.raises(VirtError) as missing:
            await rig.run(cmd)
        assert missing.value.code is ErrorCode.NO_DOMAIN_SNAPSHOT


async def test_undefine_counts_the_volumes_of_definitions_pending_a_start(rig: Rig) -> None:
    """A shut-off domain redefined while it ran is its pending definition: undefine
    --volumes removes that one's volumes, and keeps those another domain's next start
    needs."""
    for name in ("data", "logs"):
        await rig.run(command(VolumeCreate, pool="default", name=name))
    web = await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    both = [{"volume": "data", "target": "/d"}, {"volume": "logs", "target": "/l"}]
    moved = {**SPEC, "uuid": str(web.uuid), "volumes": both}
    await rig.run(command(Define, spec=moved))
    db = await rig.run(command(Define, spec={**SPEC, "name": "db"}))
    await rig.run(command(Create, "db"))
    needs_logs = {
        **SPEC,
        "name": "db",
        "uuid": str(db.uuid),
        "volumes": [{"volume": "logs", "target": "/l"}],
    }
    await rig.run(command(Define, spec=needs_logs))
    await rig.run(command(Destroy, "web"))
    await rig.run(command(Undefine, "web", volumes=True))
    assert sorted(rig.host.driver.volumes_held) == ["logs"]
