"""A running domain's kernel files held open for its statistics: read fresh from their
start, opened again when their descriptor fails, within one descriptor budget, and
closed when the run is over."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import resource
import uuid
from pathlib import Path

import pytest

from agent.host import cgroups, stats
from agent.host.cgroups import Budget, KeptFiles
from agent.host.domains import DomainObj
from agent.host.stats import CgroupCache
from schemas.codes import DomainState
from schemas.domain import DomainSpec


def rchar(text: str) -> int:
    return int(next(line for line in text.splitlines() if line.startswith("rchar:")).split()[1])


def test_a_kept_kernel_file_gives_fresh_counters_on_each_read() -> None:
    files = KeptFiles(Budget(4))
    first = rchar(files("/proc/self/io"))
    second = rchar(files("/proc/self/io"))
    assert second > first  # the first read counts in the second: the kernel made it anew
    assert len(files) == 1
    files.close()


@pytest.mark.parametrize(
    ("name", "before", "after"),
    [("memory.usage_in_bytes", "1048576\n", "4096\n"), ("io.stat", "", "8:0 rbytes=1\n")],
)
def test_a_file_changed_in_place_reads_its_new_text(
    tmp_path: Path, name: str, before: str, after: str
) -> None:
    path = tmp_path / name
    path.write_text(before)
    files = KeptFiles(Budget(4))
    assert files(str(path)) == before
    path.write_text(after)
    assert files(str(path)) == after
    files.close()


def test_a_text_longer_than_one_read_is_read_to_its_end(tmp_path: Path) -> None:
    path = tmp_path / "memory.stat"
    text = "".join(f"key{n} {n}\n" for n in range(cgroups.READ_BYTES // 4))
    path.write_text(text)
    files = KeptFiles(Budget(4))
    assert files(str(path)) == text
    assert files(str(path)) == text
    files.close()


@pytest.mark.parametrize("fault", ["its process gone", "empty for good"])
def test_a_kept_descriptor_that_misbehaves_gives_way_to_the_files_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """A descriptor that fails is replaced; one that reads empty (older kernels' seq
    files, once empty) is read around by path."""
    path = tmp_path / "io"
    path.write_text("" if fault == "empty for good" else "old\n")
    budget = Budget(4)
    files = KeptFiles(budget)
    files(str(path))
    real = os.pread
    misbehaving = {files._open[str(path)]}

    def pread(fd: int, length: int, offset: int) -> bytes:
        if fd not in misbehaving:
            return real(fd, length, offset)
        if fault == "empty for good":
            return b""
        misbehaving.remove(fd)  # its number may be reused by the file opened again
        raise OSError(errno.ESRCH, "No such process")

    monkeypatch.setattr(os, "pread", pread)
    path.write_text("new\n")
    assert files(str(path)) == "new\n"
    assert len(files) == 1 and budget.left == 3
    files.close()


def test_a_file_gone_raises_and_gives_its_descriptor_back(tmp_path: Path) -> None:
    budget = Budget(4)
    files = KeptFiles(budget)
    with pytest.raises(FileNotFoundError):
        files(str(tmp_path / "missing"))
    assert budget.left == 4 and len(files) == 0


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as error:
        return error.errno == errno.EBADF
    return False


def one_kept(tmp_path: Path, budget: Budget) -> tuple[KeptFiles, Path, int]:
    """A holder of one file read once, the file, and its descriptor."""
    path = tmp_path / "cpu.stat"
    path.write_text("usage_usec 1\n")
    files = KeptFiles(budget)
    files(str(path))
    [fd] = files._open.values()
    return files, path, fd


def test_close_closes_the_descriptors_once_and_reads_by_path_after(tmp_path: Path) -> None:
    budget = Budget(4)
    files, path, fd = one_kept(tmp_path, budget)
    files.close()
    files.close()
    assert closed(fd) and budget.left == 4
    path.write_text("usage_usec 2\n")
    assert files(str(path)) == "usage_usec 2\n"
    assert len(files) == 0 and budget.left == 4


def test_past_the_budget_a_file_is_opened_per_read(tmp_path: Path) -> None:
    paths = [tmp_path / name for name in ("a", "b")]
    for path in paths:
        path.write_text(path.name)
    budget = Budget(1)
    files = KeptFiles(budget)
    assert [files(str(path)) for path in paths] == ["a", "b"]
    assert len(files) == 1 and budget.left == 0
    files.close()
    assert budget.left == 1


def test_files_are_closed_when_their_holder_is_collected(tmp_path: Path) -> None:
    budget = Budget(2)
    files, _, fd = one_kept(tmp_path, budget)
    assert budget.left == 1
    del files
    gc.collect()
    assert budget.left == 2 and closed(fd)


def test_the_budget_is_a_share_of_the_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = Budget.share_of_limit(share=0.25, most=10**9)
    assert budget.left == (10**9 if soft == resource.RLIM_INFINITY else soft // 4)
    assert Budget.share_of_limit(share=0.25, most=3).left == min(3, budget.left)


def domain(pid: int, state: DomainState = DomainState.RUNNING) -> DomainObj:
    spec = DomainSpec(name="web", image="virtbus-test:latest")
    return DomainObj(
        uuid=uuid.uuid4(), name="web", spec=spec, persistent=True, autostart=False,
        state=state, pid=pid,
    )  # fmt: skip


def test_a_run_that_is_over_has_its_files_closed(tmp_path: Path) -> None:
    path = tmp_path / "cpuacct.usage"
    path.write_text("7\n")
    budget = Budget(8)
    cache = CgroupCache(budget)
    running, stopped = domain(os.getpid()), domain(os.getpid() + 1)
    for each in (running, stopped):
        cache.files(each)(str(path))
    kept, ended = cache.files(running), cache.files(stopped)
    [kept_fd], [ended_fd] = kept._open.values(), ended._open.values()
    stopped.state = DomainState.SHUTOFF  # its pid as it was: the state says it is over
    cache.keep([running, stopped])
    assert closed(ended_fd) and not closed(kept_fd)
    assert len(kept) == 1 and budget.left == 7 and cache.runs_held == 1
    cache.close()
    assert closed(kept_fd) and budget.left == 8 and cache.runs_held == 0


def test_without_a_budget_nothing_is_held(tmp_path: Path) -> None:
    path = tmp_path / "pids.current"
    path.write_text("3\n")
    cache = CgroupCache()
    assert cache.files(domain(os.getpid()))(str(path)) == "3\n"
    assert cache.runs_held == 0


async def test_a_run_that_ends_between_calls_is_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats, "SWEEP_S", 0.0)
    path = tmp_path / "pids.current"
    path.write_text("1\n")
    budget = Budget(8)
    cache = CgroupCache(budget)
    ending, lasting = domain(os.getpid()), domain(os.getpid() + 1)
    agent: list[DomainObj] | None = [ending, lasting]
    cache.sweep_with(lambda: agent)
    for each in (ending, lasting):
        cache.files(each)(str(path))
    ending.state = DomainState.SHUTOFF
    await asyncio.sleep(0)  # one turn of the loop: the sweep's timer is due at once
    await asyncio.sleep(0)
    assert cache.runs_held == 1 and budget.left == 7  # the ending run's, not the other's
    agent = None  # the agent is gone: the next sweep closes everything
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert cache.runs_held == 0 and budget.left == 8


def test_a_read_outside_an_event_loop_arms_no_sweep(tmp_path: Path) -> None:
    path = tmp_path / "pids.current"
    path.write_text("1\n")
    cache = CgroupCache(Budget(2))
    cache.sweep_with(lambda: [])
    assert cache.files(domain(os.getpid()))(str(path)) == "1\n"
    assert cache._sweep is None
    cache.close()


def test_a_closed_cache_holds_nothing_more(tmp_path: Path) -> None:
    path = tmp_path / "pids.current"
    path.write_text("1\n")
    budget = Budget(4)
    cache = CgroupCache(budget)
    cache.close()
    assert cache.files(domain(os.getpid()))(str(path)) == "1\n"
    assert cache.runs_held == 0 and budget.left == 4


class StoppedAgent:
    """What the statistics need of an agent's operations: its domains."""

    def __init__(self, domains: list[DomainObj]) -> None:
        self.domains = domains


def test_a_command_still_running_when_its_agent_stops_reads_by_path(tmp_path: Path) -> None:
    path = tmp_path / "pids.current"
    path.write_text("2\n")
    running = domain(os.getpid())
    agent = StoppedAgent([running])
    held = stats.cgroup_cache(agent)  # type: ignore[arg-type]
    held.files(running)(str(path))
    assert held.runs_held == 1
    stats.release(agent)  # type: ignore[arg-type]
    assert held.runs_held == 0
    later = stats.cgroup_cache(agent)  # type: ignore[arg-type]
    assert later.files(running)(str(path)) == "2\n"
    assert later.runs_held == 0
