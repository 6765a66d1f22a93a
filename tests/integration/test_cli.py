"""The ``virtbus`` CLI as an operator uses it: a subprocess against real agents."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.fleet import CLI, Host, spec
from tests.support.services import IMAGE

pytestmark = pytest.mark.integration


async def test_every_verb(host: Host, cli: CLI) -> None:
    on = ("--host", host.name)
    web = cli.spec_file("web", memory_kib=65536)
    ran = await cli("define", web, *on)
    assert (ran.status, ran.out.strip()) == (0, f"Domain 'web' defined from {web}")
    assert (await cli("start", "web", *on)).out.strip() == "Domain 'web' started"
    listed = await cli("list", *on)
    lines = listed.out.splitlines()
    assert lines[0].split() == ["Id", "Name", "State"]
    assert set(lines[1]) == {"-"}
    pid = int(lines[2].split()[0])
    assert lines[2].split()[1:] == ["web", "running"]
    assert (await cli("domid", "web", *on)).out.strip() == str(pid)
    uuid = (await cli("domuuid", "web", *on)).out.strip()
    assert (await cli("domname", uuid, *on)).out.strip() == "web"
    assert (await cli("domname", str(pid), *on)).out.strip() == "web"
    info = dict(line.split(":", 1) for line in (await cli("dominfo", "web", *on)).out.splitlines())
    assert {k: v.strip() for k, v in info.items()} | {"CPU time": "", "Used memory": ""} == {
        "Id": str(pid),
        "Name": "web",
        "UUID": uuid,
        "OS Type": "exe",
        "State": "running",
        "CPU(s)": "2",
        "CPU time": "",
        "Max memory": "65536 KiB",
        "Used memory": "",
        "Persistent": "yes",
        "Autostart": "disable",
    }
    assert (await cli("suspend", "web", *on)).out.strip() == "Domain 'web' suspended"
    assert (await cli("domstate", "web", "--reason", *on)).out.strip() == "paused (user)"
    assert (await cli("resume", "web", *on)).out.strip() == "Domain 'web' resumed"
    assert (await cli("reboot", "web", *on)).out.strip() == "Domain 'web' is being rebooted"
    assert (await cli("setmem", "web", "32M", *on)).status == 0
    assert (await cli("setvcpus", "web", "1", *on)).status == 0
    info_json = (await cli("dominfo", "web", "--json", *on)).json()
    assert (info_json["info"]["max_mem_kib"], info_json["info"]["nr_virt_cpu"]) == (32768, 1)
    memtune = (await cli("memtune", "web", *on)).out.splitlines()
    assert memtune == [
        "hard_limit     : 32768",
        "soft_limit     : unlimited",
        "swap_hard_limit: 32768",
    ]
    scheduler = (await cli("schedinfo", "web", *on)).out.splitlines()
    assert scheduler[:2] == ["Scheduler  : posix", "cpu_shares : 1024"]
    assert scheduler[3] == "vcpu_quota : 100000"
    assert (await cli("schedinfo", "web", "--set", "cpu_shares=512", *on)).status == 0
    assert (await cli("memtune", "web", "--soft-limit", "16M", "--config", *on)).status == 0
    assert (await cli("schedinfo", "web", *on)).out.splitlines()[1] == "cpu_shares : 512"
    assert (await cli("memtune", "web", "--config", *on)).out.splitlines()[1] == (
        "soft_limit     : 16384"
    )
    shutdown = await cli("shutdown", "web", *on)
    assert shutdown.out.strip() == "Domain 'web' is being shutdown"
    assert (await cli("domstate", "web", *on)).out.strip() == "shut off"
    assert (await cli("list", *on)).out.splitlines()[2:] == []
    assert "shut off" in (await cli("list", "--all", *on)).out
    marked = await cli("autostart", "web", *on)
    assert marked.out.strip() == "Domain 'web' marked as autostarted"
    listed_json = (await cli("list", "--all", "--autostart", "--json", *on)).json()
    assert [d["name"] for d in listed_json["domains"]] == ["web"]
    unmarked = await cli("autostart", "web", "--disable", *on)
    assert unmarked.out.strip() == "Domain 'web' unmarked as autostarted"
    renamed = await cli("domrename", "web", "www", *on)
    assert renamed.out.strip() == "Domain successfully renamed"
    assert (await cli("undefine", "www", *on)).out.strip() == "Domain 'www' has been undefined"
    temp = cli.spec_file("temp")
    created = await cli("create", temp, "--paused", *on)
    assert created.out.strip() == f"Domain 'temp' created from {temp}"
    assert (await cli("list", "--state-paused", "--transient", "--json", *on)).json()["domains"][0][
        "name"
    ] == "temp"
    assert (await cli("destroy", "temp", *on)).out.strip() == "Domain 'temp' destroyed"
    assert (await cli("list", "--all", "--json", *on)).json() == {"domains": []}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["suspend", "ghost"], "error: Domain not found: no domain with matching name 'ghost'"),
        (["destroy", "web"], "error: Requested operation is not valid: domain is not running"),
        (
            ["start", "web", "--host", "no-such-host"],
            "error: no connection driver available: host 'no-such-host' has no queue on the "
            "broker: no agent of that name has started\n",
        ),
    ],
    ids=["no-domain", "not-running", "unknown-host"],
)
async def test_errors_go_to_stderr_with_status(
    host: Host, cli: CLI, argv: list[str], message: str
) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})
    ran = await cli(*argv[:2], "--host", host.name, *argv[2:])
    assert ran.status == 1
    assert ran.out == ""
    assert ran.err.startswith(message)


async def test_bad_spec_file_is_refused_before_sending(cli: CLI, host: Host) -> None:
    path = cli.tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "image": IMAGE, "privileged": True}))
    ran = await cli("define", str(path), "--host", host.name)
    assert ran.status == 1
    assert ran.err == "error: invalid argument: spec.privileged: is not a known field\n"
    assert (await host.call("domain.lookup", "x"))["error"]["code"] == "NO_DOMAIN"


async def test_no_host_is_an_error(cli: CLI) -> None:
    env_host = cli.env.pop("VIRTBUS_HOST", None)
    ran = await cli("list")
    assert ran.status == 1
    assert "no host" in ran.err
    if env_host is not None:
        cli.env["VIRTBUS_HOST"] = env_host


async def test_event_verb_prints_events_as_virsh(host: Host, cli: CLI) -> None:
    await host.ok("domain.define", args={"spec": spec("web")})
    watcher = await cli.start(
        "event", "web", "--event", "stopped", "--host", host.name, "--ready", "--timeout", "30"
    )
    assert watcher.stderr is not None and watcher.stdout is not None
    assert (await asyncio.wait_for(watcher.stderr.readline(), 30)).strip() == b"ready"
    await host.ok("domain.create", "web")
    await host.ok("domain.destroy", "web")
    out, err = await asyncio.wait_for(watcher.communicate(), 30)
    assert watcher.returncode == 0
    assert out.decode().strip() == (
        f"event 'lifecycle' for domain 'web' on host '{host.name}': Stopped Destroyed"
    )
    assert "events received: 1" in err.decode()


async def test_event_verb_loops_until_timeout_with_json(host: Host, cli: CLI) -> None:
    watcher = await cli.start(
        "event", "--all", "--loop", "--json", "--host", host.name, "--ready", "--timeout", "5"
    )
    assert watcher.stderr is not None
    await asyncio.wait_for(watcher.stderr.readline(), 30)
    await host.ok("domain.define", args={"spec": spec("web")})
    await host.ok("domain.create", "web")
    out, _ = await asyncio.wait_for(watcher.communicate(), 30)
    decoder = json.JSONDecoder()
    text, events = out.decode().strip(), []
    while text:
        event, end = decoder.raw_decode(text)
        events.append((event["event"], event["detail"]))
        text = text[end:].strip()
    assert events == [("defined", "added"), ("started", "booted")]


async def test_schema_verbs(cli: CLI) -> None:
    schemas = (await cli("schema")).json()
    assert "Command" in schemas
    document = (await cli("schema", "--asyncapi")).json()
    assert document["asyncapi"].startswith("3.")


async def test_an_unknown_host_is_reported_at_once(cli: CLI) -> None:
    """The broker returns a command nobody's queue takes: no waiting for the timeout."""
    started = asyncio.get_running_loop().time()
    ran = await cli("list", "--host", "uxnc1", "--timeout", "30")
    assert asyncio.get_running_loop().time() - started < 15
    assert ran.status == 1
    assert ran.err.startswith(
        "error: no connection driver available: host 'uxnc1' has no queue on the broker"
    )


async def test_a_host_name_that_cannot_be_is_refused_before_sending(cli: CLI) -> None:
    ran = await cli("list", "--host", "UXNC1")
    assert ran.status == 2
    assert "argument --host: 'UXNC1' is not a host or group name" in ran.err


async def test_a_broadcast_to_an_empty_group_says_so(cli: CLI) -> None:
    ran = await cli("list", "--group", "nobody-here", "--timeout", "30")
    assert ran.status == 1
    assert ran.err == ("error: no connection driver available: no host is in group 'nobody-here'\n")
