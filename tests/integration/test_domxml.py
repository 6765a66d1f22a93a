"""Domain XML on a live agent: define and create from XML through the CLI, the client and
the bare wire; dumpxml; redefined from its own dump, a domain stays the same."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiodocker
import pytest

from agent.client import connect
from schemas.domain import DomainSpec
from schemas.domxml import parse_domain_xml
from tests.support import BusPeer, DeadLetters, EventRecorder, lifecycle
from tests.support.fleet import CLI, Fleet, Host
from tests.support.services import AMQP_URL, IMAGE

pytestmark = pytest.mark.integration


@pytest.fixture
async def host(fleet: Fleet, peer: BusPeer, tmp_path: Path) -> Host:
    """An agent whose host policy lets domains mount this test's directory read-only."""
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[[mounts]]\nprefix = "{tmp_path}"\n')
    agent = await fleet.start(policy_file=policy)
    recorder = await EventRecorder(peer.channel, f"{agent.host}.#").start()
    return Host(agent.host, peer, recorder, agent)


def web_xml(mount_source: Path, command: str = "3600") -> str:
    return f"""\
<domain type='lxc'>
  <name>web</name>
  <metadata>
    <app:owner xmlns:app="http://example.com/app/1.0">team-a</app:owner>
  </metadata>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os>
    <type>exe</type>
    <init>sleep</init>
    <initarg>{command}</initarg>
    <initenv name='GREETING'>hello &amp; welcome</initenv>
    <initdir>/tmp</initdir>
    <inituser>1000</inituser>
    <initgroup>1000</initgroup>
  </os>
  <on_crash>restart</on_crash>
  <devices>
    <filesystem type='template'>
      <source name='{IMAGE}'/>
      <target dir='/'/>
    </filesystem>
    <filesystem type='mount'>
      <source dir='{mount_source}'/>
      <target dir='/data'/>
      <readonly/>
    </filesystem>
  </devices>
  <virtbus:config xmlns:virtbus='urn:virtbus:domain'>
    <virtbus:init>no</virtbus:init>
  </virtbus:config>
</domain>
"""


async def test_define_dumpxml_redefine_through_the_cli(
    host: Host, cli: CLI, tmp_path: Path, docker: aiodocker.Docker
) -> None:
    on = ("--host", host.name)
    source = web_xml(tmp_path)
    path = tmp_path / "web.xml"
    path.write_text(source)
    ran = await cli("define", str(path), *on)
    assert (ran.status, ran.out.strip(), ran.err) == (0, f"Domain 'web' defined from {path}", "")

    dumped = await cli("dumpxml", "web", *on)
    assert dumped.status == 0, dumped.err
    uuid = (await host.ok("domain.lookup", "web"))["uuid"]
    spec = parse_domain_xml(dumped.out)
    assert spec == parse_domain_xml(source).model_copy(update={"uuid": spec.uuid})
    assert str(spec.uuid) == uuid
    assert dumped.out.startswith("<domain type='docker'>\n  <name>web</name>\n")

    container = await docker.containers.get(host.container_name("web"))
    config, limits = container["Config"], container["HostConfig"]
    assert config["Cmd"] == ["sleep", "3600"]
    assert "GREETING=hello & welcome" in config["Env"]
    assert (config["WorkingDir"], config["User"]) == ("/tmp", "1000:1000")
    assert limits["Memory"] == 64 * 2**20
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in limits["Mounts"]] == [
        (str(tmp_path), "/data", True)
    ]
    assert limits["RestartPolicy"]["Name"] == "no"  # the agent restarts it, after its checks
    assert not limits["Init"]

    again = tmp_path / "again"
    again.write_text(dumped.out)
    redefined = await cli("define", str(again), *on)
    assert redefined.status == 0, redefined.err
    assert (await cli("dumpxml", "web", *on)).out == dumped.out
    assert lifecycle(await host.fence(), "web") == [("defined", "added"), ("defined", "updated")]


async def test_running_domain_shows_its_id_and_its_next_definition(
    host: Host, cli: CLI, tmp_path: Path
) -> None:
    on = ("--host", host.name)
    record = await host.ok("domain.define", args={"xml": web_xml(tmp_path)})
    started = await host.ok("domain.create", "web")
    running = (await host.ok("domain.get_xml_desc", "web"))["xml"]
    assert running.startswith(f"<domain type='docker' id='{started['id']}'>\n")

    changed = web_xml(tmp_path, command="60").replace(
        "<name>web</name>", f"<name>web</name><uuid>{record['uuid']}</uuid>"
    )
    await host.ok("domain.define", args={"xml": changed})
    assert (await host.ok("domain.get_xml_desc", "web"))["xml"] == running
    inactive = await cli("dumpxml", "web", "--inactive", *on)
    assert inactive.out.startswith("<domain type='docker'>\n")
    assert parse_domain_xml(inactive.out).command == ["sleep", "60"]


async def test_client_create_from_xml_and_xml_desc(host: Host) -> None:
    xml = (
        "<domain type='docker'><name>job</name><os><init>sleep</init><initarg>600</initarg>"
        f"</os><devices><filesystem type='template'><source name='{IMAGE}'/>"
        "<target dir='/'/></filesystem></devices></domain>"
    )
    async with connect(AMQP_URL) as conn:
        created = await conn.call(host.name, "domain.create_xml", {"xml": xml})
        job = await conn.lookup_by_name(host.name, "job")
        assert job.record == created
        described = await job.xml_desc()
        assert f"id='{job.id}'" in described
        spec = parse_domain_xml(described)
        assert spec == DomainSpec(name="job", uuid=job.uuid, image=IMAGE, command=["sleep", "600"])
        await job.destroy()


@pytest.mark.parametrize(
    ("xml", "code", "vir_error", "message"),
    [
        ("<domain type='docker'><name>", "XML_ERROR", 27, "XML error: "),
        (
            f"<domain type='kvm'><name>vm</name><devices><disk/><filesystem type='template'>"
            f"<source name='{IMAGE}'/><target dir='/'/></filesystem></devices></domain>",
            "CONFIG_UNSUPPORTED",
            67,
            "unsupported configuration: not supported by virtbus: <domain type='kvm'>, "
            "<devices><disk>",
        ),
        (
            "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
            "<domain type='docker'><name>&x;</name></domain>",
            "XML_ERROR",
            27,
            "XML error: a document type declaration (DTD) is not accepted",
        ),
    ],
)
async def test_refused_xml_over_the_wire(
    host: Host, xml: str, code: str, vir_error: int, message: str
) -> None:
    dead = await DeadLetters(host.peer.channel).start()
    command_id = f"xml-{uuid.uuid4().hex}"
    body = json.dumps({"v": 1, "id": command_id, "op": "domain.define", "args": {"xml": xml}})
    pending = await host.peer.send(host.name, body.encode(), message_id=command_id)
    reply = await asyncio.wait_for(pending, 30)
    assert not reply["ok"]
    error = reply["error"]
    assert (error["code"], error["vir_error"]) == (code, vir_error)
    assert error["message"].startswith(message)
    while (await dead.next()).message_id != command_id:
        pass
    assert (await host.ok("host.list_domains"))["domains"] == []


async def test_cli_reports_refused_xml_before_sending(cli: CLI, host: Host, tmp_path: Path) -> None:
    path = tmp_path / "vm"
    path.write_text("<domain type='qemu'><name>vm</name></domain>")
    ran = await cli("define", str(path), "--host", host.name)
    assert ran.status == 1
    assert ran.err.strip() == (
        "error: unsupported configuration: not supported by virtbus: <domain type='qemu'>"
    )
    missing = await cli("dumpxml", "nothing", "--host", host.name)
    assert missing.status == 1
    assert "Domain not found" in missing.err
