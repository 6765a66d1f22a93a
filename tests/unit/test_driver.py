"""The driver's reading of the kernel's freezer, over a made-up /proc and cgroup tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.host.driver import _frozen

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
