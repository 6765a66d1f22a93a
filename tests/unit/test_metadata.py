"""virDomainSetMetadata/GetMetadata on the agent: libvirt's live/config rules, one
metadata_change event per change, no Docker call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import VirtError
from agent.host.store import Store
from schemas.codes import ErrorCode
from schemas.commands import Create, Define, Destroy, GetMetadata, GetXmlDesc, SetMetadata
from schemas.domxml import domain_xml
from schemas.events import EVENT_ADAPTER, MetadataChangeEvent
from tests.fakes import FakeHost, fake_host
from tests.unit.test_operations import SPEC, Rig, command

NS = "http://example.org/app"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with Store(tmp_path / "h1") as store:
        async with fake_host(store, tmp_path) as host:
            yield Rig(host, host.operations())


def changes(host: FakeHost) -> list[MetadataChangeEvent]:
    events = (EVENT_ADAPTER.validate_json(p.body) for p in host.store.pending(1000))
    return [e for e in events if isinstance(e, MetadataChangeEvent)]


async def get(rig: Rig, **args: Any) -> str:
    got = await rig.run(command(GetMetadata, "web", **args))
    return str(got.metadata)


async def test_each_change_is_one_event_and_no_docker_call(rig: Rig) -> None:
    await rig.run(command(Define, spec=SPEC))
    calls = len(rig.host.driver.calls)
    await rig.run(command(SetMetadata, "web", type="description", metadata="a web server"))
    await rig.run(command(SetMetadata, "web", type="title", metadata="Web"))
    element = "<owner team='a'>ops</owner>"
    await rig.run(command(SetMetadata, "web", type="element", metadata=element, key="app", uri=NS))
    assert rig.host.driver.calls[calls:] == []
    assert [(e.type, e.type_code, e.nsuri, e.cause is not None) for e in changes(rig.host)] == [
        ("description", 0, None, True),
        ("title", 1, None, True),
        ("element", 2, NS, True),
    ]
    assert await get(rig, type="description") == "a web server"
    assert await get(rig, type="title") == "Web"
    assert await get(rig, type="element", uri=NS) == '<owner team="a">ops</owner>'
    spec = rig.host.domains.by_name("web").spec  # type: ignore[union-attr]
    assert f'<app:owner xmlns:app="{NS}" team="a">ops</app:owner>' in domain_xml(spec)


async def test_an_element_replaces_its_namespace_and_null_removes_it(rig: Rig) -> None:
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(SetMetadata, "web", type="element", metadata="<a/>", key="x", uri=NS))
    other = "http://example.org/other"
    await rig.run(command(SetMetadata, "web", type="element", metadata="<b/>", key="y", uri=other))
    await rig.run(command(SetMetadata, "web", type="element", metadata="<c/>", key="x", uri=NS))
    assert await get(rig, type="element", uri=NS) == "<c/>"
    assert await get(rig, type="element", uri=other) == "<b/>"
    await rig.run(command(SetMetadata, "web", type="element", uri=NS))
    with pytest.raises(VirtError) as missing:
        await get(rig, type="element", uri=NS)
    assert missing.value.code is ErrorCode.NO_DOMAIN_METADATA
    assert str(missing.value) == "metadata not found: Requested metadata element is not present"


async def test_live_changes_leave_the_persistent_definition_alone(rig: Rig) -> None:
    await rig.run(command(Define, spec=SPEC))
    await rig.run(command(SetMetadata, "web", type="title", metadata="before"))
    await rig.run(command(Create, "web"))
    await rig.run(command(SetMetadata, "web", type="title", metadata="live only"))  # current
    assert await get(rig, type="title") == "live only"
    assert await get(rig, type="title", config=True) == "before"
    await rig.run(command(SetMetadata, "web", type="title", metadata="next", config=True))
    assert await get(rig, type="title", live=True) == "live only"
    assert await get(rig, type="title", config=True) == "next"
    with pytest.raises(VirtError) as both:
        await get(rig, type="title", live=True, config=True)
    assert both.value.code is ErrorCode.INVALID_ARG


async def test_a_shut_off_domain_pending_a_definition_keeps_both_changes(rig: Rig) -> None:
    """Redefined while running, then shut off: a title set now is the domain's at once
    and after its next start, with the redefinition's own change."""
    web = await rig.run(command(Define, spec=SPEC))
    await rig.run(command(Create, "web"))
    await rig.run(command(Define, spec={**SPEC, "uuid": str(web.uuid), "command": ["sleep", "5"]}))
    await rig.run(command(Destroy, "web"))
    await rig.run(command(SetMetadata, "web", type="title", metadata="after"))
    assert await get(rig, type="title") == "after"
    shown = await rig.run(command(GetXmlDesc, "web"))
    assert "<title>after</title>" in shown.xml and "<initarg>5</initarg>" in shown.xml
    await rig.run(command(Create, "web"))
    assert await get(rig, type="title") == "after"
    (container,) = rig.host.driver.containers.values()
    assert container.spec.command == ["sleep", "5"]


async def test_libvirts_refusals(rig: Rig) -> None:
    await rig.run(command(Define, spec=SPEC))
    refusals: list[tuple[dict[str, Any], ErrorCode]] = [
        ({"type": "title", "metadata": "two\nlines"}, ErrorCode.INVALID_ARG),
        ({"type": "title", "metadata": "t", "uri": NS}, ErrorCode.INVALID_ARG),
        ({"type": "element", "metadata": "<a/>", "key": "x"}, ErrorCode.INVALID_ARG),
        ({"type": "element", "metadata": "<a/>", "uri": NS}, ErrorCode.INVALID_ARG),
        ({"type": "element", "metadata": "<a", "key": "x", "uri": NS}, ErrorCode.XML_ERROR),
        ({"type": "title", "metadata": "t", "live": True}, ErrorCode.OPERATION_INVALID),
    ]
    for args, code in refusals:
        with pytest.raises(VirtError) as refused:
            await rig.run(command(SetMetadata, "web", **args))
        assert refused.value.code is code, args
    assert changes(rig.host) == []
