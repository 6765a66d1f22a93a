"""Statistics and capability documents from fake kernel trees: libvirt's key names,
types and units, cgroup v1 and v2, and the gateway's typed parameters."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from lxml import etree

from agent.errors import VirtError
from agent.gateway.stats import (
    ParamType,
    _stats_groups,
    cpu_map,
    pack_params,
    param_type,
    typed,
)
from agent.gateway.xdr import Unpacker
from agent.host.cgroups import NS_PER_TICK, Cgroup, Tuning, cpu_list, tuning
from agent.host.domains import DomainObj
from agent.host.node import capabilities_xml, domain_capabilities_xml, node_facts, node_stats
from agent.host.stats import DEFAULT_GROUPS, Reader
from agent.host.store import Store
from schemas.codes import DomainState, ErrorCode
from schemas.commands import CreateXml, Define, GetTuning, Undefine
from schemas.domain import DomainSpec
from schemas.errors import VirtbusError
from schemas.replies import DomainTuning
from tests import fakes
from tests.unit.test_operations import SPEC, Rig, command

PID = 4242
CONTAINER = "/docker/abc123"
MIB = 1024 * 1024
NET_DEV = (
    "Inter-|   Receive |  Transmit\n"
    " face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop ...\n"
    "    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n"
    "  eth0: 5000 40 1 2 0 0 0 0 3000 30 3 4 0 0 0 0\n"
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def proc_tree(proc: Path, cgroup_lines: str) -> None:
    write(proc / str(PID) / "cgroup", cgroup_lines)
    write(proc / str(PID) / "net" / "dev", NET_DEV)
    write(proc / str(PID) / "stat", f"{PID} (sh) S " + " ".join(["0"] * 35) + " 1 0 0")
    for pid, wrote in ((PID, 3 * MIB), (PID + 1, 5 * MIB)):
        write(
            proc / str(pid) / "io",
            f"rchar: 1\nwchar: 2\nsyscr: 7\nsyscw: 11\nread_bytes: 4096\nwrite_bytes: {wrote}\n",
        )


@pytest.fixture
def v1(tmp_path: Path) -> tuple[Path, Path]:
    """A cgroup v1 host, cpu and cpuacct mounted together as on many distributions."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    proc_tree(
        proc,
        f"12:pids:{CONTAINER}\n4:memory:{CONTAINER}\n3:cpu,cpuacct:{CONTAINER}\n"
        f"2:cpuset:{CONTAINER}\n1:name=systemd:{CONTAINER}\n0::{CONTAINER}\n",
    )
    cpu = root / "cpu,cpuacct" / CONTAINER.lstrip("/")
    write(cpu / "cpuacct.usage", "3000000000\n")
    write(cpu / "cpuacct.stat", "user 200\nsystem 100\n")
    write(cpu / "cpuacct.usage_percpu", "1000000000 2000000000 \n")
    memory = root / "memory" / CONTAINER.lstrip("/")
    write(memory / "memory.usage_in_bytes", f"{10 * MIB}\n")
    write(
        memory / "memory.stat",
        f"cache {4 * MIB}\nrss {MIB}\ntotal_cache {6 * MIB}\ntotal_rss {2 * MIB}\n"
        "total_pgfault 100\ntotal_pgmajfault 3\n",
    )
    pids = root / "pids" / CONTAINER.lstrip("/")
    write(pids / "pids.current", "2\n")
    write(pids / "pids.max", "max\n")
    write(pids / "cgroup.procs", f"{PID}\n{PID + 1}\n{PID + 2}\n")  # the last one is gone
    write(root / "cpuset" / CONTAINER.lstrip("/") / "cpuset.cpus", "0-1\n")
    return proc, root


@pytest.fixture
def v2(tmp_path: Path) -> tuple[Path, Path]:
    """A cgroup v2 host: one hierarchy at the root."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    proc_tree(proc, f"0::{CONTAINER}\n")
    write(root / "cgroup.controllers", "cpu io memory pids\n")
    group = root / CONTAINER.lstrip("/")
    write(group / "cpu.stat", "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n")
    write(group / "memory.current", f"{10 * MIB}\n")
    write(group / "memory.stat", f"anon {2 * MIB}\nfile {6 * MIB}\npgfault 100\npgmajfault 3\n")
    write(group / "pids.current", "2\n")
    write(group / "pids.max", "64\n")
    write(group / "cpuset.cpus.effective", "0-1\n")
    write(
        group / "io.stat",
        "8:0 rbytes=4096 wbytes=3145728 rios=7 wios=11 dbytes=0 dios=0\n"
        "8:16 rbytes=0 wbytes=5242880 rios=0 wios=4 dbytes=0 dios=0\n",
    )
    return proc, root


def running(pid: int = PID, state: DomainState = DomainState.RUNNING) -> DomainObj:
    spec = DomainSpec(name="web", image="virtbus-test:latest")
    return DomainObj(
        uuid=uuid.uuid4(),
        name="web",
        spec=spec,
        persistent=True,
        autostart=False,
        state=state,
        reason=1,
        pid=pid,
    )


def read(trees: tuple[Path, Path], domain: DomainObj | None = None) -> dict[str, int | str]:
    proc, root = trees
    reader = Reader(domain or running(), 65536, 2, proc, root)
    return reader.read([*DEFAULT_GROUPS, "percpu", "affinity"]).stats


def test_cgroup_v1_gives_libvirts_keys_in_libvirts_units(v1: tuple[Path, Path]) -> None:
    stats = read(v1)
    assert stats["state.state"] == 1 and stats["state.reason"] == 1
    assert stats["cpu.time"] == 3_000_000_000  # ns
    assert stats["cpu.user"] == 200 * NS_PER_TICK
    assert stats["cpu.system"] == 100 * NS_PER_TICK
    assert stats["balloon.current"] == stats["balloon.maximum"] == 65536  # KiB: the limit
    assert stats["balloon.rss"] == 2048  # KiB, hierarchical
    assert stats["balloon.disk_caches"] == 6144
    assert stats["balloon.unused"] == 65536 - 10240
    assert stats["balloon.major_fault"] == 3 and stats["balloon.minor_fault"] == 97
    assert stats["vcpu.current"] == stats["vcpu.maximum"] == 2
    assert stats["vcpu.0.state"] == 1 and stats["vcpu.1.time"] == 1_500_000_000
    assert stats["net.count"] == 1  # the loopback is not an interface of the domain's
    assert stats["net.0.name"] == "eth0"
    assert (stats["net.0.rx.bytes"], stats["net.0.rx.pkts"]) == (5000, 40)
    assert (stats["net.0.rx.errs"], stats["net.0.rx.drop"]) == (1, 2)
    assert (stats["net.0.tx.bytes"], stats["net.0.tx.pkts"]) == (3000, 30)
    assert (stats["net.0.tx.errs"], stats["net.0.tx.drop"]) == (3, 4)
    # v1: the tasks' own I/O accounting, summed over the cgroup's live processes
    assert stats["block.count"] == 1 and stats["block.0.name"] == "rootfs"
    assert stats["block.0.wr.bytes"] == 8 * MIB
    assert stats["block.0.rd.bytes"] == 8192
    assert (stats["block.0.rd.reqs"], stats["block.0.wr.reqs"]) == (14, 22)
    assert stats["pids.current"] == 2 and "pids.limit" not in stats  # unlimited
    assert stats["percpu.count"] == 2 and stats["percpu.1.time"] == 2_000_000_000
    assert stats["affinity.cpuset"] == "0-1" and stats["affinity.cpu"] == 1


def test_cgroup_v2_gives_the_same_keys(v2: tuple[Path, Path]) -> None:
    stats = read(v2)
    assert stats["cpu.time"] == 3_000_000_000
    assert stats["cpu.user"] == 2_000_000_000 and stats["cpu.system"] == 1_000_000_000
    assert stats["balloon.rss"] == 2048 and stats["balloon.disk_caches"] == 6144
    assert stats["block.0.wr.bytes"] == 8 * MIB  # io.stat, every device summed
    assert (stats["block.0.rd.reqs"], stats["block.0.wr.reqs"]) == (7, 15)
    assert stats["pids.limit"] == 64
    assert "percpu.count" not in stats  # v2 keeps no per-CPU time: the group is left out


def test_a_hybrid_hosts_v2_directory_is_the_unified_mount(tmp_path: Path) -> None:
    write(tmp_path / "proc" / "7" / "cgroup", f"4:memory:{CONTAINER}\n0::{CONTAINER}\n")
    (tmp_path / "cgroup" / "memory" / CONTAINER.lstrip("/")).mkdir(parents=True)
    found = Cgroup.of(7, tmp_path / "proc", tmp_path / "cgroup")
    assert found.v2 == str(tmp_path / "cgroup" / "unified" / CONTAINER.lstrip("/"))
    assert found.v1 == {"memory": str(tmp_path / "cgroup" / "memory" / CONTAINER.lstrip("/"))}


def test_an_inactive_domain_has_its_state_and_definition_only(v1: tuple[Path, Path]) -> None:
    stats = read(v1, running(pid=0, state=DomainState.SHUTOFF))
    assert stats == {
        "state.state": 5,
        "state.reason": 1,
        "balloon.current": 65536,
        "balloon.maximum": 65536,
        "vcpu.current": 2,
        "vcpu.maximum": 2,
    }


def test_unreadable_files_leave_their_group_out(tmp_path: Path) -> None:
    write(tmp_path / "proc" / str(PID) / "cgroup", f"0::{CONTAINER}\n")
    stats = read((tmp_path / "proc", tmp_path / "cgroup"))
    assert {key.split(".")[0] for key in stats} == {"state", "balloon", "vcpu"}


def test_a_paused_domains_vcpus_are_offline(v1: tuple[Path, Path]) -> None:
    stats = read(v1, running(state=DomainState.PAUSED))
    assert stats["vcpu.0.state"] == 0 and "cpu.time" in stats


def fake_host(tmp_path: Path) -> tuple[Path, Path, Path]:
    proc, sys, etc = tmp_path / "proc", tmp_path / "sys", tmp_path / "etc"
    processor = (
        "processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\ncpu MHz\t\t: 2100.5\n"
        "physical id\t: {socket}\nsiblings\t: 4\ncore id\t\t: {core}\ncpu cores\t: 2\n"
    )
    write(
        proc / "cpuinfo",
        "\n".join(processor.format(n=n, socket=n // 4, core=n % 2) for n in range(8)),
    )
    write(
        proc / "meminfo",
        "MemTotal:  8000 kB\nMemFree:  3000 kB\nBuffers:  100 kB\nCached:  900 kB\n",
    )
    write(
        proc / "stat",
        "cpu  10 1 20 300 4 5 6 0 0 0\ncpu0 5 1 10 150 2 2 3 0 0 0\ncpu1 5 0 10 150 2 3 3 0 0 0\n"
        "intr 1 2 3\n",
    )
    write(sys / "devices" / "system" / "node" / "node0" / "cpulist", "0-3\n")
    write(sys / "devices" / "system" / "node" / "node1" / "cpulist", "4-7\n")
    write(etc / "machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    return proc, sys, etc


def test_node_facts_read_the_hosts_topology(tmp_path: Path) -> None:
    facts = node_facts(*fake_host(tmp_path))
    assert (facts.cpus, facts.mhz, facts.cpu_model, facts.cpu_vendor) == (
        8,
        2100,
        "Xeon",
        "GenuineIntel",
    )
    assert (facts.topology.sockets, facts.topology.cores, facts.topology.threads) == (2, 2, 2)
    assert facts.cells == {0: [0, 1, 2, 3], 1: [4, 5, 6, 7]}
    assert facts.memory_kib == 8000
    assert str(facts.host_uuid) == "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4"


def test_node_stats_are_libvirts_fields_in_kib_and_ns(tmp_path: Path) -> None:
    proc, _, _ = fake_host(tmp_path)
    stats = node_stats(proc)
    assert stats.memory == {"total": 8000, "free": 3000, "buffers": 100, "cached": 900}
    assert stats.cpu == {
        "kernel": (20 + 5 + 6) * NS_PER_TICK,  # system + irq + softirq
        "user": (10 + 1) * NS_PER_TICK,  # user + nice
        "idle": 300 * NS_PER_TICK,
        "iowait": 4 * NS_PER_TICK,
    }
    assert len(stats.cpus) == 2 and stats.cpus[1]["kernel"] == 16 * NS_PER_TICK


def test_capabilities_describe_the_host_and_a_guest_per_domain_type(tmp_path: Path) -> None:
    facts = node_facts(*fake_host(tmp_path))
    caps = etree.fromstring(capabilities_xml(facts, "20.10.24").encode())
    assert caps.findtext("host/uuid") == str(facts.host_uuid)
    assert caps.findtext("host/cpu/arch") == facts.arch
    topology = caps.find("host/cpu/topology")
    assert topology is not None
    assert (topology.get("sockets"), topology.get("cores"), topology.get("threads")) == (
        "2",
        "2",
        "2",
    )
    cells = caps.findall("host/topology/cells/cell")
    assert [cell.get("id") for cell in cells] == ["0", "1"]
    assert [len(cell.findall("cpus/cpu")) for cell in cells] == [4, 4]
    assert caps.findtext("host/secmodel/model") == "none"
    assert caps.findtext("guest/os_type") == "exe"
    types = [d.get("type") for d in caps.findall(f"guest/arch[@name='{facts.arch}']/domain")]
    assert types == ["docker", "lxc"]
    assert "20.10.24" in (caps.findtext("guest/arch/emulator") or "")
    domcaps = etree.fromstring(domain_capabilities_xml(facts, "lxc", 8).encode())
    assert domcaps.findtext("domain") == "lxc" and domcaps.findtext("arch") == facts.arch
    vcpu = domcaps.find("vcpu")
    assert vcpu is not None and vcpu.get("max") == "8"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("state.state", 1, ParamType.INT),
        ("state.reason", 1, ParamType.INT),
        ("cpu.time", 1, ParamType.ULLONG),
        ("balloon.current", 1, ParamType.ULLONG),
        ("balloon.last-update", 1, ParamType.ULLONG),
        ("vcpu.current", 1, ParamType.UINT),
        ("vcpu.maximum", 1, ParamType.UINT),
        ("vcpu.3.state", 1, ParamType.INT),
        ("vcpu.3.time", 1, ParamType.ULLONG),
        ("net.count", 1, ParamType.UINT),
        ("net.0.name", "eth0", ParamType.STRING),
        ("net.0.rx.bytes", 1, ParamType.ULLONG),
        ("block.count", 1, ParamType.UINT),
        ("block.0.name", "rootfs", ParamType.STRING),
        ("block.0.wr.bytes", 1, ParamType.ULLONG),
        ("pids.current", 1, ParamType.ULLONG),
    ],
)
def test_each_key_has_libvirts_type(key: str, value: int | str, expected: ParamType) -> None:
    assert param_type(key, value) is expected


def test_typed_params_pack_as_remote_typed_param() -> None:
    from agent.gateway.xdr import Packer

    packer = Packer()
    pack_params(packer, typed({"state.state": 1, "net.0.name": "eth0", "cpu.time": 2**40}))
    body = Unpacker(packer.data())
    assert body.uint32() == 3
    assert (body.string(100), body.int32(), body.int32()) == ("state.state", ParamType.INT, 1)
    assert (body.string(100), body.int32(), body.string(100)) == ("net.0.name", 7, "eth0")
    assert (body.string(100), body.int32(), body.uint64()) == ("cpu.time", 4, 2**40)
    body.done()


def test_stat_bits_map_to_groups_and_enforce_refuses_the_rest() -> None:
    assert _stats_groups(0, 0) == []  # every group
    assert _stats_groups(1 | 2 | 32, 0) == ["state", "cpu-total", "block"]
    assert _stats_groups(64 | 1, 0) == ["state"]  # perf: left out
    with pytest.raises(VirtbusError) as refused:
        _stats_groups(64 | 1, 1 << 31)
    assert refused.value.code is ErrorCode.ARGUMENT_UNSUPPORTED
    assert "bits 0x40 are not supported" in str(refused.value)


def test_cpu_maps_set_one_bit_per_cpu() -> None:
    assert cpu_map(cpu_list("0-2,9"), 2) == bytes([0b111, 0b10])
    assert cpu_map([0, 17], 2) == bytes([1, 0])  # beyond the map: left out


# -- tuning (schedinfo, memtune) ----------------------------------------------------------------


def test_tuning_reads_cgroup_v1s_controls(v1: tuple[Path, Path]) -> None:
    proc, root = v1
    cpu = root / "cpu,cpuacct" / CONTAINER.lstrip("/")
    write(cpu / "cpu.shares", "512\n")
    write(cpu / "cpu.cfs_period_us", "100000\n")
    write(cpu / "cpu.cfs_quota_us", "-1\n")
    memory = root / "memory" / CONTAINER.lstrip("/")
    write(memory / "memory.limit_in_bytes", f"{64 * MIB}\n")
    write(memory / "memory.soft_limit_in_bytes", "9223372036854771712\n")
    # no memory.memsw.*: swap not accounted on this kernel
    assert tuning(Cgroup.of(PID, proc, root)) == Tuning(512, 100000, -1, 64 * MIB, None, None)


def test_tuning_reads_cgroup_v2s_controls(v2: tuple[Path, Path]) -> None:
    proc, root = v2
    group = root / CONTAINER.lstrip("/")
    write(group / "cpu.weight", "100\n")
    write(group / "cpu.max", "200000 100000\n")
    write(group / "memory.max", f"{64 * MIB}\n")
    write(group / "memory.high", "max\n")
    write(group / "memory.swap.max", "0\n")
    found = tuning(Cgroup.of(PID, proc, root))
    assert found == Tuning(100, 100000, 200000, 64 * MIB, None, 64 * MIB)


def test_tuning_leaves_out_what_the_kernel_has_no_file_for(v2: tuple[Path, Path]) -> None:
    """No CPU bandwidth control (no cpu.max), no swap accounting (no memory.swap.max)."""
    proc, root = v2
    group = root / CONTAINER.lstrip("/")
    write(group / "cpu.weight", "100\n")
    write(group / "memory.max", "max\n")
    write(group / "memory.high", "max\n")
    assert tuning(Cgroup.of(PID, proc, root)) == Tuning(100, None, None, None, None, None)


async def test_tuning_of_a_definition_is_what_it_asks_docker_for(tmp_path: Path) -> None:
    with Store(tmp_path / "h1") as store:
        async with fakes.fake_host(store, tmp_path) as host:
            rig = Rig(host, host.operations())
            await rig.run(command(Define, spec={**SPEC, "memory_kib": 65536, "vcpus": 2}))
            config = await rig.run(command(GetTuning, "web"))
            assert config == DomainTuning(
                cpu_shares=0,
                vcpu_period=100000,
                vcpu_quota=200000,
                hard_limit_kib=65536,
                soft_limit_kib=None,
                swap_hard_limit_kib=65536,
            )
            with pytest.raises(VirtError) as not_running:
                await rig.run(command(GetTuning, "web", live=True))
            assert not_running.value.code is ErrorCode.OPERATION_INVALID
            await rig.run(command(Undefine, "web"))
            await rig.run(command(CreateXml, spec=SPEC))
            with pytest.raises(VirtError) as transient:
                await rig.run(command(GetTuning, "web", config=True))
            assert transient.value.code is ErrorCode.OPERATION_INVALID
