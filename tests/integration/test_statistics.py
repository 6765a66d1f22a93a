"""Capabilities and statistics through the gateway, with the real virsh, a real agent
and real domains: what ``virsh capabilities``, ``nodeinfo``, ``version``, ``domstats``,
``dommemstat``, ``domblkstat``, ``cpu-stats``, ``vcpuinfo`` print."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiodocker
import pytest
from lxml import etree

from agent.client import connect
from agent.gateway.server import Gateway
from schemas.events import TunableEvent
from tests.integration import test_gateway
from tests.integration.test_gateway import Virsh
from tests.support import BusPeer
from tests.support.fleet import CLI, Fleet, Host, spec
from tests.support.services import AMQP_URL

pytestmark = pytest.mark.integration
gateway = test_gateway.gateway
virsh = test_gateway.virsh
virsh_path = test_gateway.virsh_path
libvirt_python = test_gateway.libvirt_python

MIB = 1024 * 1024
WRITTEN_MIB = 8
POLL_S = 0.2
DEADLINE_S = 30.0

# writes WRITTEN_MIB MiB with fsync, then burns CPU for a bounded while
WRITE_AND_BURN = (
    f"dd if=/dev/zero of=/tmp/blob bs=1M count={WRITTEN_MIB} conv=fsync 2>/dev/null; "
    "timeout 25 sh -c 'while :; do :; done'; exec sleep 3600"
)


def domstats(text: str) -> dict[str, str]:
    """``virsh domstats`` output of one domain: its ``key=value`` lines."""
    pairs = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            pairs[key] = value
    return pairs


async def until(
    probe: Callable[[], Awaitable[dict[str, str]]], test: Callable[[dict[str, str]], bool]
) -> dict[str, str]:
    """Poll ``probe`` until ``test`` holds: the kernel's counters have no event."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        seen = await probe()
        if test(seen):
            return seen
        assert time.monotonic() < deadline, f"never held within {DEADLINE_S:g} s: {seen}"
        await asyncio.sleep(POLL_S)


async def test_virsh_domstats_shows_written_bytes_and_rising_cpu_time(
    virsh: Virsh, host: Host
) -> None:
    await host.ok("domain.create_xml", args={"spec": spec("burner", "sh", "-c", WRITE_AND_BURN)})

    async def read() -> dict[str, str]:
        return domstats(await virsh.ok("domstats", "burner"))

    written = await until(read, lambda s: int(s.get("block.0.wr.bytes", 0)) >= WRITTEN_MIB * MIB)
    assert written["state.state"] == "1"
    assert written["block.count"] == "1"
    assert written["block.0.name"] == "rootfs"
    before = int(written["cpu.time"])
    after = await until(read, lambda s: int(s["cpu.time"]) > before)
    assert int(after["cpu.user"]) + int(after["cpu.system"]) > 0
    assert int(after["balloon.rss"]) > 0
    assert after["vcpu.current"] == after["vcpu.maximum"]
    assert after["net.count"] == "0"  # network none: only the loopback, never listed
    assert int(after["pids.current"]) >= 1

    listed = await virsh.ok("domstats", "--list-active", "--cpu-total", "--state")
    assert "Domain: 'burner'" in listed
    assert "cpu.time=" in listed and "balloon." not in listed
    assert "Domain: 'burner'" not in await virsh.ok("domstats", "--list-shutoff")

    blk = await virsh.ok("domblkstat", "burner")
    wr_bytes = int(re.search(r"wr_bytes (\d+)", blk).group(1))  # type: ignore[union-attr]
    assert wr_bytes >= WRITTEN_MIB * MIB

    mem = dict(
        line.split()
        for line in (await virsh.ok("dommemstat", "burner")).splitlines()
        if line.strip()
    )
    assert {"actual", "rss", "unused", "available"} <= mem.keys()

    cpu = await virsh.ok("cpu-stats", "burner", "--total")
    assert re.search(r"cpu_time\s+\d+\.\d{9} seconds", cpu)
    per_cpu = await virsh.ok("cpu-stats", "burner")
    assert "CPU0:" in per_cpu

    vcpus = await virsh.ok("vcpuinfo", "burner")
    assert re.search(r"VCPU:\s+0", vcpus) and re.search(r"State:\s+running", vcpus)

    missing = await virsh("domifstat", "burner", "eth0")
    assert missing.status == 1 and "'eth0' is not a known interface" in missing.err


def files_open_under(*parts: str) -> list[str]:
    """This process's descriptors (the agent runs in it) whose path holds every part."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed since the listing
        if all(part in target for part in parts):
            found.append(target)
    return found


async def test_a_domains_kernel_files_stay_open_while_it_runs_and_close_after(
    host: Host,
) -> None:
    record = await host.ok("domain.create_xml", args={"spec": spec("kept")})
    pid = record["id"]
    async with aiodocker.Docker() as docker:
        container = (await docker.containers.get(host.container_name("kept"))).id
    before = await host.ok("host.get_all_domain_stats")
    again = await host.ok("host.get_all_domain_stats")
    [first], [second] = before["records"], again["records"]
    assert second["stats"]["cpu.time"] >= first["stats"]["cpu.time"] > 0
    assert files_open_under(container), "the cgroup's files are not held open"
    assert files_open_under(f"/proc/{pid}/net/dev")

    # a process that joins after the files were opened is counted, read every 0.2 s
    # (cgroup v1 hands a kept process list out again as it was)
    write = f"dd if=/dev/zero of=/tmp/blob bs=1M count={WRITTEN_MIB} conv=fsync; exec sleep 600"
    joined = await asyncio.create_subprocess_exec(
        "docker", "exec", "-d", host.container_name("kept"), "sh", "-c", write
    )  # fmt: skip
    assert await asyncio.wait_for(joined.wait(), DEADLINE_S) == 0
    deadline = time.monotonic() + DEADLINE_S
    while True:
        [record] = (await host.ok("host.get_all_domain_stats"))["records"]
        if record["stats"]["block.0.wr.bytes"] >= WRITTEN_MIB * MIB:
            break
        assert time.monotonic() < deadline, f"the joined process is not counted: {record}"
        await asyncio.sleep(POLL_S)

    await host.ok("domain.destroy", "kept")  # transient: gone with its run
    assert (await host.ok("host.get_all_domain_stats"))["records"] == []
    assert files_open_under(container) == []
    assert files_open_under(f"/proc/{pid}/") == []


async def test_virsh_domstats_of_a_shut_off_domain_has_its_state(virsh: Virsh, host: Host) -> None:
    await host.ok("domain.define", args={"spec": spec("idle", memory_kib=65536, vcpus=1)})
    stats = domstats(await virsh.ok("domstats", "idle"))
    assert stats["state.state"] == "5"
    assert stats["balloon.maximum"] == "65536"
    assert "cpu.time" not in stats
    refused = await virsh("dommemstat", "idle")
    assert refused.status == 1 and "domain is not running" in refused.err


async def test_virsh_capabilities_name_the_agent_hosts_architecture(virsh: Virsh) -> None:
    caps = etree.fromstring((await virsh.ok("capabilities")).encode())
    arch = os.uname().machine
    assert caps.findtext("host/cpu/arch") == arch
    assert caps.findtext("guest/os_type") == "exe"
    assert caps.find(f"guest/arch[@name='{arch}']/domain[@type='docker']") is not None
    cells = caps.findall("host/topology/cells/cell")
    assert len(cells) >= 1 and cells[0].find("cpus") is not None

    domcaps = etree.fromstring((await virsh.ok("domcapabilities", "--virttype", "docker")).encode())
    assert domcaps.findtext("domain") == "docker" and domcaps.findtext("arch") == arch

    nodeinfo = await virsh.ok("nodeinfo")
    assert re.search(rf"CPU model:\s+{arch}", nodeinfo)
    assert re.search(rf"CPU\(s\):\s+{os.cpu_count()}", nodeinfo)

    version = await virsh.ok("version", "--daemon")
    assert "Running against daemon: 9.0.0" in version
    assert re.search(r"Running hypervisor: virtbus \d+\.\d+\.\d+", version)

    memory = await virsh.ok("nodememstats")
    assert re.search(r"total\s*:\s+\d+ KiB", memory)
    cpu = await virsh.ok("nodecpustats")
    assert re.search(r"idle:\s+\d+", cpu)
    sysinfo = etree.fromstring((await virsh.ok("sysinfo")).encode())
    assert sysinfo.get("type") == "smbios"
    free = await virsh.ok("freecell")
    assert re.search(r"\d+ KiB", free)


async def test_cli_domstats_reads_one_host_a_group_or_all(
    fleet: Fleet, peer: BusPeer, cli: CLI
) -> None:
    group = f"g{uuid.uuid4().hex[:12]}"
    first = (await fleet.start(groups=(group,))).host
    second = (await fleet.start(groups=(group,))).host
    await peer.ok(first, "domain.create_xml", None, {"spec": spec("web")})
    one = await cli("domstats", "web", "--host", first, "--state", "--pids")
    assert one.status == 0, one.err
    assert one.out.splitlines()[:3] == ["Domain: 'web'", "  state.state=1", "  state.reason=1"]
    assert int(domstats(one.out)["pids.current"]) >= 1

    expect = ("--expect", f"{first},{second}", "--json", "--cpu-total")
    ran = await cli("domstats", "--group", group, *expect)
    assert ran.status == 0, ran.err
    replies = ran.json()["replies"]
    assert replies.keys() == {first, second}
    records = replies[first]["result"]["records"]
    assert [r["domain"]["name"] for r in records] == ["web"]
    assert set(records[0]["stats"]) == {"cpu.time", "cpu.user", "cpu.system"}
    assert replies[second]["result"]["records"] == []
    # every agent on the broker answers: others' (another test's, an older agent) may fail
    everyone = (await cli("domstats", "--all-hosts", *expect)).json()["replies"]
    assert everyone[first]["ok"] is True
    assert everyone[first]["result"]["records"][0]["domain"]["name"] == "web"
    assert everyone[second]["ok"] is True


LIBVIRT_STATS_SCRIPT = """
import json, sys
import libvirt

conn = libvirt.open(sys.argv[1])
dom = conn.lookupByName("web")
found = {}
found["all"] = {d.name(): s for d, s in conn.getAllDomainStats(0, 0)}
balloon = libvirt.VIR_DOMAIN_STATS_BALLOON
found["listed"] = {d.name(): s for d, s in conn.domainListGetStats([dom], balloon)}
found["memory"] = dom.memoryStats()
found["block"] = list(dom.blockStats(""))
found["total"] = dom.getCPUStats(True)
found["per_cpu"] = dom.getCPUStats(False)
found["vcpus"] = dom.vcpus()[0]
found["node"] = conn.getInfo()
found["node_memory"] = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
found["lib_version"] = conn.getLibVersion()
found["caps"] = conn.getCapabilities()
conn.close()
print(json.dumps(found))
"""


async def test_libvirt_python_reads_statistics(
    libvirt_python: str, gateway: Gateway, host: Host, tmp_path: Path
) -> None:
    await host.ok("domain.create_xml", args={"spec": spec("web", vcpus=1)})
    script = tmp_path / "stats.py"
    script.write_text(LIBVIRT_STATS_SCRIPT)
    process = await asyncio.create_subprocess_exec(
        libvirt_python,
        str(script),
        test_gateway.uri(gateway, host.name),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), test_gateway.TIMEOUT_S)
    assert process.returncode == 0, err.decode()
    found = json.loads(out)
    web = found["all"]["web"]
    assert web["state.state"] == 1 and web["cpu.time"] > 0 and web["block.count"] == 1
    assert set(found["listed"]["web"]) == {key for key in web if key.startswith("balloon.")}
    assert found["memory"]["actual"] == web["balloon.current"]
    assert len(found["block"]) == 5 and found["block"][4] == -1
    assert {"cpu_time", "user_time", "system_time"} == set(found["total"][0])
    assert len(found["per_cpu"]) == os.cpu_count()
    assert found["vcpus"][0][:2] == [0, 1]  # vCPU 0, running
    assert found["node"][0] == os.uname().machine
    assert set(found["node_memory"]) == {"total", "free", "buffers", "cached"}
    assert found["lib_version"] == 9_000_000
    assert f"<arch>{os.uname().machine}</arch>" in found["caps"]


async def test_the_client_sets_tuning_in_the_cgroup_and_the_definition(host: Host) -> None:
    await host.ok("domain.define", args={"spec": spec("tuned", memory_kib=65536)})
    async with connect(AMQP_URL) as conn:
        tuned = await conn.lookup_by_name(host.name, "tuned")
        await tuned.create()
        await tuned.set_tuning(cpu_shares=512, soft_limit_kib=32768, swap_hard_limit_kib=131072)
        live = await tuned.tuning()
        swap = 131072 if test_gateway.SWAP_ACCOUNTED else None
        assert (live.cpu_shares, live.soft_limit_kib, live.swap_hard_limit_kib) == (
            test_gateway.cgroup_weight(512),
            32768,
            swap,
        )
        config = await tuned.tuning(config=True)
        # what Docker cannot take away reaches the persistent definition; swap can go back
        assert (config.cpu_shares, config.soft_limit_kib, config.swap_hard_limit_kib) == (
            512,
            32768,
            65536,
        )
        tunable = await host.events.wait_for(lambda e: isinstance(e, TunableEvent))
        assert isinstance(tunable, TunableEvent)
        assert tunable.params == {
            "cpu_shares": 512,
            "soft_limit_kib": 32768,
            "swap_hard_limit_kib": 131072,
        }
        await tuned.set_tuning(cpu_shares=300, config=True)
        assert (await tuned.tuning()).cpu_shares == test_gateway.cgroup_weight(512)
        await tuned.destroy()
        await tuned.create()
        restarted = await tuned.tuning()
        assert (restarted.cpu_shares, restarted.soft_limit_kib) == (
            test_gateway.cgroup_weight(300),
            32768,
        )
        swap = 65536 if test_gateway.SWAP_ACCOUNTED else None
        assert restarted.swap_hard_limit_kib == swap


async def test_the_client_reads_a_domains_tuning_from_its_cgroup(host: Host) -> None:
    await host.ok("domain.define", args={"spec": spec("tuned", memory_kib=65536, vcpus=1)})
    async with connect(AMQP_URL) as conn:
        tuned = await conn.lookup_by_name(host.name, "tuned")
        await tuned.create()
        live = await tuned.tuning()
        # Docker's defaults beside the limits virtbus sets: its weight, no soft limit
        expected = (test_gateway.DEFAULT_CPU_SHARES, 100000, 100000)
        assert (live.cpu_shares, live.vcpu_period, live.vcpu_quota) == expected
        swap = 65536 if test_gateway.SWAP_ACCOUNTED else None
        assert (live.hard_limit_kib, live.soft_limit_kib, live.swap_hard_limit_kib) == (
            65536,
            None,
            swap,
        )
        config = await tuned.tuning(config=True)
        assert (config.cpu_shares, config.hard_limit_kib) == (0, 65536)
