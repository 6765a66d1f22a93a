"""domain.set_tuning on the agent: libvirt's live/config rules, the container's controls
changed in one Docker update, one tunable event per live change, and every definition
checked before anything changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.errors import VirtError
from agent.host.domains import DomainObj
from agent.host.store import Store
from schemas.codes import ErrorCode
from schemas.commands import Create, CreateXml, Define, Destroy, SetMemory, SetTuning
from schemas.events import EVENT_ADAPTER, TunableEvent
from tests.fakes import fake_host
from tests.unit.test_operations import SPEC, Rig, command

LIMITED = {**SPEC, "memory_kib": 65536}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with Store(tmp_path / "h1") as store:
        async with fake_host(store, tmp_path) as host:
            yield Rig(host, host.operations())


def tunable_events(rig: Rig) -> list[dict[str, int]]:
    events = (EVENT_ADAPTER.validate_json(p.body) for p in rig.host.store.pending(1000))
    return [e.params for e in events if isinstance(e, TunableEvent)]


def web(rig: Rig) -> DomainObj:
    domain = rig.host.domains.by_name("web")
    assert domain is not None
    return domain


def container(rig: Rig) -> dict[str, int]:
    """The controls Docker holds for the domain's container now."""
    handle = web(rig).handle
    assert handle is not None
    return rig.host.driver.containers[handle].tunables


async def tune(rig: Rig, **args: Any) -> None:
    await rig.run(command(SetTuning, "web", **args))


async def running(rig: Rig, spec: dict[str, Any] = LIMITED) -> None:
    await rig.run(command(Define, spec=spec))
    await rig.run(command(Create, "web"))


async def restart(rig: Rig) -> None:
    await rig.run(command(Destroy, "web"))
    await rig.run(command(Create, "web"))


async def test_a_live_change_lasts_until_the_next_start_which_keeps_the_container(
    rig: Rig,
) -> None:
    await running(rig, {**LIMITED, "cpu_shares": 300, "soft_limit_kib": 16384})
    handle = web(rig).handle
    await tune(rig, cpu_shares=512, soft_limit_kib=32768)  # current: live
    assert container(rig) == {"memory_kib": 65536, "soft_limit_kib": 32768, "cpu_shares": 512}
    assert (web(rig).spec.cpu_shares, web(rig).next_definition.cpu_shares) == (512, 300)
    assert tunable_events(rig) == [{"cpu_shares": 512, "soft_limit_kib": 32768}]
    await restart(rig)
    assert container(rig) == {"memory_kib": 65536, "soft_limit_kib": 16384, "cpu_shares": 300}
    assert (web(rig).handle, web(rig).spec.cpu_shares, web(rig).pending) == (handle, 300, None)
    assert len(tunable_events(rig)) == 1


async def test_a_live_control_the_definition_lacks_reaches_it(rig: Rig) -> None:
    await running(rig, {**LIMITED, "swap_hard_limit_kib": 131072})
    handle = web(rig).handle
    await tune(rig, cpu_shares=512, swap_hard_limit_kib=262144)  # Docker cannot unset shares
    assert web(rig).next_definition.tunables() == {
        "memory_kib": 65536,
        "swap_hard_limit_kib": 131072,
        "cpu_shares": 512,
    }
    await restart(rig)
    assert container(rig) == {
        "memory_kib": 65536,
        "swap_hard_limit_kib": 131072,
        "cpu_shares": 512,
    }
    assert web(rig).handle == handle


async def test_a_redefinition_of_controls_alone_keeps_the_container(rig: Rig) -> None:
    await running(rig, {**LIMITED, "swap_hard_limit_kib": 131072})
    handle = web(rig).handle
    redefined = {**LIMITED, "memory_kib": 98304, "uuid": str(web(rig).uuid)}
    await rig.run(command(Define, spec=redefined))
    await restart(rig)
    assert (container(rig), web(rig).handle) == ({"memory_kib": 98304}, handle)
    redefined = {**redefined, "command": ["sleep", "61"]}
    await rig.run(command(Define, spec=redefined))
    await restart(rig)
    assert web(rig).handle != handle


async def test_a_config_change_waits_for_the_next_start(rig: Rig) -> None:
    await running(rig)
    updates = rig.host.driver.calls.count("update")
    await tune(rig, cpu_shares=2048, config=True)
    assert rig.host.driver.calls.count("update") == updates
    assert tunable_events(rig) == []
    assert container(rig) == {"memory_kib": 65536}
    assert web(rig).next_definition.cpu_shares == 2048
    await restart(rig)
    assert container(rig) == {"memory_kib": 65536, "cpu_shares": 2048}


async def test_live_and_config_change_both(rig: Rig) -> None:
    await running(rig)
    await tune(rig, swap_hard_limit_kib=131072, live=True, config=True)
    assert container(rig) == {"memory_kib": 65536, "swap_hard_limit_kib": 131072}
    assert web(rig).pending is None
    await restart(rig)
    assert container(rig) == {"memory_kib": 65536, "swap_hard_limit_kib": 131072}


async def test_both_reach_a_definition_pending_while_it_runs(rig: Rig) -> None:
    await running(rig)
    redefined = {**LIMITED, "memory_kib": 98304, "uuid": str(web(rig).uuid)}
    await rig.run(command(Define, spec=redefined))
    await tune(rig, cpu_shares=512, live=True, config=True)
    assert container(rig) == {"memory_kib": 65536, "cpu_shares": 512}
    await restart(rig)
    assert container(rig) == {"memory_kib": 98304, "cpu_shares": 512}


async def test_a_change_to_a_shut_off_domain_is_its_containers(rig: Rig) -> None:
    await rig.run(command(Define, spec=LIMITED))
    await tune(rig, cpu_shares=100)  # current: config
    assert container(rig) == {"memory_kib": 65536, "cpu_shares": 100}
    assert tunable_events(rig) == [{"cpu_shares": 100}]
    await rig.run(command(Create, "web"))
    assert container(rig) == {"memory_kib": 65536, "cpu_shares": 100}


async def test_memory_and_swap_move_together_in_one_update(rig: Rig) -> None:
    await running(rig, {**LIMITED, "swap_hard_limit_kib": 131072})
    updates = rig.host.driver.calls.count("update")
    await tune(rig, memory_kib=262144, swap_hard_limit_kib=524288)
    assert rig.host.driver.calls.count("update") == updates + 1
    assert container(rig) == {"memory_kib": 262144, "swap_hard_limit_kib": 524288}


@pytest.mark.parametrize(
    ("spec", "args", "code", "message"),
    [
        (LIMITED, {"cpu_shares": 512, "live": True}, ErrorCode.OPERATION_INVALID, "not running"),
        (
            {**LIMITED, "swap_hard_limit_kib": 131072},
            {"memory_kib": 262144},
            ErrorCode.INVALID_ARG,
            "memory hard_limit tunable value must be lower than or equal to swap_hard_limit",
        ),
        (
            SPEC,
            {"swap_hard_limit_kib": 131072},
            ErrorCode.INVALID_ARG,
            "a swap_hard_limit needs a memory hard_limit",
        ),
        (
            LIMITED,
            {"soft_limit_kib": 131072},
            ErrorCode.INVALID_ARG,
            "a memory soft_limit above the hard_limit",
        ),
    ],
    ids=["live-of-shut-off", "memory-above-swap", "swap-without-memory", "soft-above-hard"],
)
async def test_refused_before_anything_changes(
    rig: Rig, spec: dict[str, Any], args: dict[str, Any], code: ErrorCode, message: str
) -> None:
    await rig.run(command(Define, spec=spec))
    before, updates = web(rig).spec, rig.host.driver.calls.count("update")
    with pytest.raises(VirtError) as refused:
        await tune(rig, **args)
    assert (refused.value.code, message in str(refused.value)) == (code, True)
    assert (web(rig).spec, web(rig).pending) == (before, None)
    assert rig.host.driver.calls.count("update") == updates


async def test_a_vcpu_count_set_live_lasts_until_the_next_start(rig: Rig) -> None:
    await running(rig, {**LIMITED, "vcpus": 1})
    with pytest.raises(VirtError) as above:
        await tune(rig, vcpus=3)
    assert above.value.code is ErrorCode.INVALID_ARG
    await tune(rig, vcpus=2)
    assert (container(rig)["vcpus"], web(rig).next_definition.vcpus) == (2, 1)
    await restart(rig)
    assert container(rig)["vcpus"] == 1


async def test_swap_goes_back_to_none_as_docker_allows(rig: Rig) -> None:
    await running(rig, {**LIMITED, "swap_hard_limit_kib": 131072})
    handle = web(rig).handle
    await tune(rig, swap_hard_limit_kib=65536, config=True)
    await restart(rig)
    assert (container(rig), web(rig).handle) == ({"memory_kib": 65536}, handle)


async def test_a_transient_domain_has_no_config_to_change(rig: Rig) -> None:
    await rig.run(command(CreateXml, spec=LIMITED))
    with pytest.raises(VirtError) as refused:
        await tune(rig, cpu_shares=512, config=True)
    assert str(refused.value) == (
        "Requested operation is not valid: transient domains do not have any persistent config"
    )
    await tune(rig, cpu_shares=512)
    assert container(rig)["cpu_shares"] == 512


async def test_setmem_keeps_the_swap_limit_above_memory(rig: Rig) -> None:
    await running(rig, {**LIMITED, "swap_hard_limit_kib": 131072})
    with pytest.raises(VirtError) as refused:
        await rig.run(command(SetMemory, "web", memory_kib=262144))
    assert refused.value.code is ErrorCode.INVALID_ARG
    await rig.run(command(SetMemory, "web", memory_kib=98304))
    assert container(rig) == {"memory_kib": 98304, "swap_hard_limit_kib": 131072}


async def test_a_control_the_hosts_kernel_lacks_is_refused_not_dropped(rig: Rig) -> None:
    rig.host.engine = replace(rig.host.engine, controls=frozenset({"memory_kib", "vcpus"}))
    without_swap = Rig(rig.host, rig.host.operations())
    await running(without_swap)
    updates = rig.host.driver.calls.count("update")
    with pytest.raises(VirtError) as refused:
        await tune(without_swap, swap_hard_limit_kib=131072, cpu_shares=512)
    assert (refused.value.code, refused.value.detail) == (
        ErrorCode.CONFIG_UNSUPPORTED,
        "the host's kernel has no control for cpu_shares, swap_hard_limit_kib "
        "(Docker's info reports it unsupported)",
    )
    with pytest.raises(VirtError) as defining:
        await without_swap.run(command(Define, spec={**LIMITED, "name": "db", "cpu_shares": 8}))
    assert defining.value.code is ErrorCode.CONFIG_UNSUPPORTED
    assert rig.host.driver.calls.count("update") == updates


async def test_redefining_a_shut_off_domains_controls_keeps_its_container(rig: Rig) -> None:
    await rig.run(command(Define, spec=LIMITED))
    handle, uuid = web(rig).handle, str(web(rig).uuid)
    await rig.run(command(Define, spec={**LIMITED, "uuid": uuid, "memory_kib": 98304}))
    await rig.run(command(Define, spec={**LIMITED, "uuid": uuid, "description": "db"}))
    assert (web(rig).handle, container(rig)) == (handle, {"memory_kib": 65536})
    assert [(e.event, e.detail) for e in rig.events()] == [
        ("defined", "added"),
        ("defined", "updated"),
        ("defined", "updated"),
    ]
    assert tunable_events(rig) == []
    await rig.run(command(Define, spec={**LIMITED, "uuid": uuid, "command": ["sleep", "61"]}))
    assert web(rig).handle != handle


async def test_a_soft_limit_above_the_definitions_memory_takes_the_running_limits(
    rig: Rig,
) -> None:
    await running(rig)
    await tune(rig, memory_kib=131072, soft_limit_kib=98304)  # live
    assert web(rig).next_definition.tunables() == {"memory_kib": 131072, "soft_limit_kib": 98304}


async def test_a_swap_limit_equal_to_memory_changes_no_container(rig: Rig) -> None:
    await running(rig)
    handle, calls = web(rig).handle, len(rig.host.driver.calls)
    await tune(rig, swap_hard_limit_kib=65536, config=True)  # the same as no swap
    await restart(rig)
    assert web(rig).handle == handle
    assert [c for c in rig.host.driver.calls[calls:] if c in ("create", "update")] == []


async def test_a_live_change_stays_out_of_a_definition_that_makes_a_new_container(
    rig: Rig,
) -> None:
    await running(rig)
    redefined = {**LIMITED, "command": ["sleep", "61"], "uuid": str(web(rig).uuid)}
    await rig.run(command(Define, spec=redefined))
    await tune(rig, cpu_shares=512)  # live
    assert web(rig).next_definition.cpu_shares is None
    await restart(rig)
    assert container(rig) == {"memory_kib": 65536}


async def test_a_retried_redefinition_is_announced_once(rig: Rig) -> None:
    await rig.run(command(Define, spec=LIMITED))
    redefine = command(Define, spec={**LIMITED, "uuid": str(web(rig).uuid), "title": "db"})
    await rig.run(redefine)
    await rig.run(redefine, retry=True)
    assert [(e.event, e.detail) for e in rig.events()] == [
        ("defined", "added"),
        ("defined", "updated"),
    ]
