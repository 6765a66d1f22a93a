"""The driver's reading of the kernel's freezer, over a made-up /proc and cgroup tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.host.driver import CgroupLayout, _frozen, _HostConfig, _Info, _limits
from schemas.domain import TUNABLES, DomainSpec

HANDLE = "3f2a9c"


def tree(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text(membership)
    for name, text in files.items():
        (cgroups / name).parent.mkdir(parents=True, exist_ok=True)
        (cgroups / name).write_text(text)
    return proc, cgroups


@pytest.mark.parametrize(("state", "frozen"), [("FROZEN\n", True), ("THAWED\n", False)])
def test_cgroup_v1_freezer(tmp_path: Path, state: str, frozen: bool) -> None:
    proc, cgroups = tree(
        tmp_path,
        f"12:memory:/docker/{HANDLE}\n9:freezer:/docker/{HANDLE}\n",
        {f"freezer/docker/{HANDLE}/freezer.state": state},
    )
    assert _frozen(HANDLE, 42, proc, cgroups) is frozen


@pytest.mark.parametrize(
    ("events", "frozen"), [("populated 1\nfrozen 1\n", True), ("frozen 0", False)]
)
def test_cgroup_v2_events(tmp_path: Path, events: str, frozen: bool) -> None:
    path = f"system.slice/docker-{HANDLE}.scope"
    proc, cgroups = tree(tmp_path, f"0::/{path}\n", {f"{path}/cgroup.events": events})
    assert _frozen(HANDLE, 42, proc, cgroups) is frozen


def test_a_process_of_another_cgroup_tells_nothing(tmp_path: Path) -> None:
    proc, cgroups = tree(
        tmp_path, "9:freezer:/user.slice\n", {"freezer/user.slice/freezer.state": "THAWED"}
    )
    assert _frozen(HANDLE, 42, proc, cgroups) is None


def test_an_unreadable_tree_tells_nothing(tmp_path: Path) -> None:
    assert _frozen(HANDLE, 42, tmp_path / "proc", tmp_path / "cgroup") is None


def layout_tree(tmp_path: Path, membership: str) -> tuple[Path, Path]:
    """A container whose init is host PID 42 (PID 1 inside), with a child, PID 43."""
    proc, cgroups = tree(tmp_path, membership, {})
    (proc / "42" / "status").write_text("Name:\tdocker-init\nNSpid:\t42\t1\n")
    (proc / "43").mkdir()
    (proc / "43" / "status").write_text("Name:\tsleep\nNSpid:\t43\t7\n")
    return proc, cgroups


def test_the_layout_names_a_new_containers_init_from_its_v1_freezer_cgroup(
    tmp_path: Path,
) -> None:
    proc, cgroups = layout_tree(
        tmp_path, f"12:memory:/docker/{HANDLE}\n9:freezer:/docker/{HANDLE}\n0::/\n"
    )
    layout = CgroupLayout(proc, cgroups)
    assert layout.init_pid("b0c1d2") == 0  # nothing learned yet: Docker is asked
    layout.learn(HANDLE, 42)
    other = cgroups / "freezer" / "docker" / "b0c1d2"
    other.mkdir(parents=True)
    (other / "cgroup.procs").write_text("43\n42\n")
    (other / "freezer.state").write_text("FROZEN\n")
    assert layout.init_pid("b0c1d2") == 42
    assert layout.frozen("b0c1d2") is True
    assert layout.init_pid("e3f4a5") == 0  # no such cgroup
    assert layout.frozen("e3f4a5") is None


def test_the_layout_of_the_v2_hierarchy(tmp_path: Path) -> None:
    path = f"system.slice/docker-{HANDLE}.scope"
    proc, cgroups = layout_tree(tmp_path, f"0::/{path}\n")
    (cgroups / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (cgroups / "cgroup.controllers").write_text("cpu memory pids\n")
    layout = CgroupLayout(proc, cgroups)
    layout.learn(HANDLE, 42)
    other = cgroups / "system.slice" / "docker-b0c1d2.scope"
    other.mkdir(parents=True)
    (other / "cgroup.procs").write_text("42\n43\n")
    (other / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert layout.init_pid("b0c1d2") == 42
    assert layout.frozen("b0c1d2") is False


def test_a_cgroup_without_its_init_names_none(tmp_path: Path) -> None:
    proc, cgroups = layout_tree(tmp_path, f"9:freezer:/docker/{HANDLE}\n")
    layout = CgroupLayout(proc, cgroups)
    layout.learn(HANDLE, 42)
    other = cgroups / "freezer" / "docker" / "b0c1d2"
    other.mkdir(parents=True)
    (other / "cgroup.procs").write_text("43\n")
    assert layout.init_pid("b0c1d2") == 0


BASE = {"name": "web", "image": "virtbus-test:latest"}


@pytest.mark.parametrize(
    ("controls", "host_config"),
    [
        ({}, {}),
        ({"memory_kib": 65536}, {"Memory": 64 << 20, "MemorySwap": 64 << 20}),
        (
            {"memory_kib": 65536, "swap_hard_limit_kib": 131072, "soft_limit_kib": 32768},
            {"Memory": 64 << 20, "MemorySwap": 128 << 20, "MemoryReservation": 32 << 20},
        ),
        ({"soft_limit_kib": 32768}, {"MemoryReservation": 32 << 20}),
        ({"vcpus": 2, "cpu_shares": 512}, {"NanoCpus": 2_000_000_000, "CpuShares": 512}),
    ],
    ids=["none", "memory", "memory-limits", "soft-alone", "cpu"],
)
def test_a_specs_controls_are_docker_fields_and_read_back_the_same(
    controls: dict[str, int], host_config: dict[str, int]
) -> None:
    spec = DomainSpec.model_validate({**BASE, **controls})
    assert _limits(spec) == host_config
    assert _HostConfig.model_validate(host_config).tunables() == spec.tunables() == controls


def test_unlimited_swap_set_behind_the_agent_is_no_control() -> None:
    set_by_hand = {"Memory": 64 << 20, "MemorySwap": -1}
    assert _HostConfig.model_validate(set_by_hand).tunables() == {"memory_kib": 65536}


@pytest.mark.parametrize(
    ("info", "lacking"),
    [
        ({}, set()),
        ({"SwapLimit": False}, {"swap_hard_limit_kib"}),
        ({"CPUShares": False, "CpuCfsQuota": False}, {"cpu_shares", "vcpus"}),
        ({"MemoryLimit": False}, {"memory_kib", "soft_limit_kib"}),
    ],
    ids=["all", "no-swap-accounting", "no-cpu-controller", "no-memory-controller"],
)
def test_the_controls_a_host_has_are_those_dockers_info_found(
    info: dict[str, bool], lacking: set[str]
) -> None:
    facts = _Info.model_validate({"NCPU": 2, "MemTotal": 1 << 30, "ServerVersion": "x", **info})
    assert set(TUNABLES) - facts.controls() == lacking
