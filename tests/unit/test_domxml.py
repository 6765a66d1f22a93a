"""libvirt domain XML ⇄ DomainSpec: the corpus, round trips, units, every refusal and its
code, safety against hostile XML, and the commands that carry XML."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.codes import ErrorCode
from schemas.commands import CreateXml, Define, GetXmlDesc, InvalidCommand, parse_command
from schemas.domain import DomainSpec
from schemas.domxml import domain_xml, parse_domain_xml, unit_scale
from schemas.replies import DomainXml, Reply
from schemas.xmldoc import MAX_XML_CHARS, XmlError

CORPUS = Path(__file__).parent.parent / "fixtures" / "domxml"
ACCEPTED = sorted(CORPUS.glob("ok/*.xml"))
REFUSED = sorted(CORPUS.glob("refused/*.xml"))
EXPECTATION = re.compile(r"<!-- ([A-Z_]+): (.*) -->")
UUID_TEXT = "90d31472-e84f-44ad-ac57-e60bed91a399"


def domain(*inner: str, kind: str = "docker", image: str = "busybox") -> str:
    """A domain document around ``inner``: a name and an image unless ``inner`` has them."""
    body = "\n".join(inner)
    name = "" if "<name>" in body else "<name>web</name>"
    devices = (
        ""
        if "<devices>" in body
        else "<devices><filesystem type='template'>"
        f"<source name='{image}'/><target dir='/'/></filesystem></devices>"
    )
    return f"<domain type='{kind}'>{name}{body}{devices}</domain>"


def refusal(xml: str) -> XmlError:
    with pytest.raises(XmlError) as caught:
        parse_domain_xml(xml)
    return caught.value


# -- the corpus ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ACCEPTED, ids=[p.stem for p in ACCEPTED])
def test_corpus_reads_as_its_spec(path: Path) -> None:
    expected = DomainSpec.model_validate(json.loads(path.with_suffix(".json").read_text()))
    assert parse_domain_xml(path.read_text()) == expected


@pytest.mark.parametrize("path", ACCEPTED, ids=[p.stem for p in ACCEPTED])
def test_corpus_round_trips(path: Path) -> None:
    spec = parse_domain_xml(path.read_text())
    written = domain_xml(spec)
    again = parse_domain_xml(written)
    assert again == spec
    assert domain_xml(again) == written


@pytest.mark.parametrize("path", REFUSED, ids=[p.stem for p in REFUSED])
def test_corpus_refusals_name_what_virtbus_cannot_do(path: Path) -> None:
    text = path.read_text()
    expected = EXPECTATION.match(text)
    assert expected is not None, f"{path.name} says on its first line what it expects"
    error = refusal(text)
    assert (error.code.name, error.detail) == expected.groups()


def test_corpus_has_real_libvirt_examples_both_ways() -> None:
    for group in (ACCEPTED, REFUSED):
        origins = [p for p in group if "lxcxml2xmldata" in p.read_text()]
        assert len(origins) >= 4


# -- what dumpxml writes ---------------------------------------------------------------------


def test_written_as_libvirt_writes_it() -> None:
    spec = DomainSpec(
        name="web",
        uuid=UUID_TEXT,  # type: ignore[arg-type]
        image="busybox:latest",
        command=["sleep", "3600"],
        memory_kib=65536,
        vcpus=1,
    )
    assert domain_xml(spec, domain_id=4242) == (
        "<domain type='docker' id='4242'>\n"
        "  <name>web</name>\n"
        f"  <uuid>{UUID_TEXT}</uuid>\n"
        "  <memory unit='KiB'>65536</memory>\n"
        "  <currentMemory unit='KiB'>65536</currentMemory>\n"
        "  <vcpu placement='static'>1</vcpu>\n"
        "  <os>\n"
        "    <type>exe</type>\n"
        "    <init>sleep</init>\n"
        "    <initarg>3600</initarg>\n"
        "  </os>\n"
        "  <features>\n"
        "    <privnet/>\n"
        "  </features>\n"
        "  <on_poweroff>destroy</on_poweroff>\n"
        "  <on_reboot>restart</on_reboot>\n"
        "  <on_crash>destroy</on_crash>\n"
        "  <devices>\n"
        "    <filesystem type='template' accessmode='passthrough'>\n"
        "      <source name='busybox:latest'/>\n"
        "      <target dir='/'/>\n"
        "    </filesystem>\n"
        "  </devices>\n"
        "</domain>\n"
    )


@pytest.mark.parametrize("domain_id", [None, -1, 0])
def test_no_id_unless_running(domain_id: int | None) -> None:
    spec = DomainSpec(name="web", image="busybox")
    assert domain_xml(spec, domain_id).startswith("<domain type='docker'>\n")


def test_id_is_ignored_when_read() -> None:
    assert parse_domain_xml(domain().replace("<domain ", "<domain id='77' ")).name == "web"


AWKWARD = [
    "a'b\"c",
    "<&>",
    "]]>",
    "tab\there",
    "line\nend",
    "carriage\rreturn",
    "crlf\r\n",
    "  padded  ",
    "",
    "ünïcødé ✓ 𝄞",
    "&amp; stays text",
]


@pytest.mark.parametrize("value", AWKWARD)
def test_awkward_strings_come_back_exactly(value: str) -> None:
    spec = DomainSpec(
        name="web",
        image="busybox",
        command=["sh", value],
        env={"V": value},
        # a host path with control characters is refused before it reaches XML
        mounts=[{"source": f"/src/{value}", "target": f"/dst/{value}"}]  # type: ignore[list-item]
        if value.isprintable()
        else [],
        metadata={"k": value},
    )
    assert parse_domain_xml(domain_xml(spec)) == spec


@pytest.mark.parametrize("value", ["bell\x07", "\ufffe", "esc\x1b[0m"])
def test_what_xml_cannot_carry_is_refused_by_name(value: str) -> None:
    spec = DomainSpec(name="web", image="busybox", env={"V": value})
    with pytest.raises(XmlError) as caught:
        domain_xml(spec)
    assert caught.value.code is ErrorCode.CONFIG_UNSUPPORTED
    assert caught.value.detail == "<initenv> holds characters that XML cannot carry"


def test_defaults_are_not_written_and_others_are() -> None:
    plain = domain_xml(DomainSpec(name="web", image="busybox"))
    assert "virtbus" not in plain
    assert "<interface" not in plain
    assert "<init>" not in plain
    assert "<memory" not in plain and "<vcpu" not in plain
    networked = domain_xml(DomainSpec(name="web", image="busybox", network="backend"))
    assert "<privnet/>" not in networked
    assert "<source network='backend'/>" in networked


# -- units -----------------------------------------------------------------------------------

UNITS = {
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "KB": 10**3,
    "k": 2**10,
    "KiB": 2**10,
    "MB": 10**6,
    "M": 2**20,
    "MiB": 2**20,
    "GB": 10**9,
    "G": 2**30,
    "GiB": 2**30,
    "TB": 10**12,
    "T": 2**40,
    "TiB": 2**40,
    "PB": 10**15,
    "P": 2**50,
    "PiB": 2**50,
    "EB": 10**18,
    "E": 2**60,
    "EiB": 2**60,
}


@pytest.mark.parametrize(("unit", "scale"), UNITS.items())
def test_every_libvirt_unit(unit: str, scale: int) -> None:
    assert unit_scale(unit) == scale
    assert unit_scale(unit.upper()) == scale
    assert unit_scale(unit.lower()) == scale


@pytest.mark.parametrize("unit", ["", "x", "KiBs", "Kb2", "iB", "bit", "ZiB"])
def test_unknown_units(unit: str) -> None:
    assert unit_scale(unit) is None


@pytest.mark.parametrize(
    ("memory", "kib"),
    [
        ("<memory>65536</memory>", 65536),
        ("<memory unit='KiB'>65536</memory>", 65536),
        ("<memory unit='k'>65536</memory>", 65536),
        ("<memory unit='KB'>65536</memory>", 64000),
        ("<memory unit='MiB'>64</memory>", 65536),
        ("<memory unit='M'>64</memory>", 65536),
        ("<memory unit='MB'>64</memory>", 62500),
        ("<memory unit='GiB'>2</memory>", 2 * 2**20),
        ("<memory unit='G'>2</memory>", 2 * 2**20),
        ("<memory unit='GB'>2</memory>", 1953125),
        ("<memory unit='TiB'>1</memory>", 2**30),
        ("<memory unit='TB'>1</memory>", 976562500),
        ("<memory unit='b'>67108864</memory>", 65536),
        ("<memory unit='bytes'>67108865</memory>", 65537),
        ("<memory unit='KB'>10000001</memory>", 9765626),
        ("<memory> 65536 </memory>", 65536),
    ],
)
def test_memory_in_kib_rounded_up_as_libvirt(memory: str, kib: int) -> None:
    assert parse_domain_xml(domain(memory)).memory_kib == kib


@pytest.mark.parametrize("unit", ["PiB", "P", "PB", "EiB", "E", "EB"])
def test_huge_units_read_then_refused_by_the_spec(unit: str) -> None:
    error = refusal(domain(f"<memory unit='{unit}'>2</memory>"))
    assert error.code is ErrorCode.INVALID_ARG
    assert error.detail.startswith("memory_kib:")


def test_current_memory() -> None:
    assert parse_domain_xml(domain("<currentMemory>65536</currentMemory>")).memory_kib == 65536
    above = domain("<memory>65536</memory>", "<currentMemory>131072</currentMemory>")
    assert parse_domain_xml(above).memory_kib == 65536
    below = refusal(domain("<memory>131072</memory>", "<currentMemory>65536</currentMemory>"))
    assert below.code is ErrorCode.CONFIG_UNSUPPORTED
    assert "<currentMemory> below <memory>" in below.detail


# -- refusals by code ------------------------------------------------------------------------

XML_ERRORS = {
    "not XML": ("{", "Start tag expected"),
    "empty": ("", "Document is empty"),
    "unclosed": ("<domain type='docker'><name>web</name>", "Premature end of data"),
    "root": ("<network/>", "expecting root element of 'domain', not 'network'"),
    "namespaced root": ("<x:domain xmlns:x='urn:x' type='docker'/>", "not 'x:domain'"),
    "no type": ("<domain><name>web</name></domain>", "missing domain type attribute"),
    "no name": (domain("<name> </name>"), "missing <name>"),
    "two names": (domain("<name>a</name><name>b</name>"), "more than one <name>"),
    "uuid": (domain("<uuid>nope</uuid>"), "malformed <uuid> 'nope'"),
    "memory": (domain("<memory>64M</memory>"), "invalid value '64M' of <memory>"),
    "negative": (domain("<memory>-1</memory>"), "invalid value '-1' of <memory>"),
    "unit": (domain("<memory unit='KiBs'>1</memory>"), "unknown unit 'KiBs' of <memory>"),
    "digits": (domain(f"<memory>{'9' * 5000}</memory>"), "value of <memory> too large"),
    "vcpu": (domain("<vcpu>two</vcpu>"), "invalid value 'two' of <vcpu>"),
    "action": (domain("<on_crash>explode</on_crash>"), "invalid <on_crash> value 'explode'"),
    "initarg": (domain("<os><initarg>x</initarg></os>"), "<os><initarg> without <os><init>"),
    "initenv": (domain("<os><initenv>x</initenv></os>"), "missing name of <os><initenv>"),
    "env twice": (
        domain("<os><initenv name='A'>1</initenv><initenv name='A'>2</initenv></os>"),
        "more than one <os><initenv name='A'>",
    ),
    "element in text": (domain("<name>we<b/>b</name>"), "<name> must hold text only"),
    "stray text": (domain("<os>exe</os>"), "<os> holds stray text"),
    "metadata text": (domain("<metadata>note</metadata>"), "<metadata> holds text outside"),
    "no source": (
        "<domain type='docker'><name>w</name><devices><filesystem type='template'>"
        "<target dir='/'/></filesystem></devices></domain>",
        "missing <devices><filesystem type='template'><source>",
    ),
    "no source name": (
        "<domain type='docker'><name>w</name><devices><filesystem type='template'>"
        "<source/><target dir='/'/></filesystem></devices></domain>",
        "missing name of <devices><filesystem type='template'><source>",
    ),
    "no network": (
        domain(image="busybox").replace(
            "</devices>", "<interface type='network'><source/></interface></devices>"
        ),
        "missing network of <devices><interface type='network'><source>",
    ),
    "yes or no": (
        domain("<v:config xmlns:v='urn:virtbus:domain'><v:init>maybe</v:init></v:config>"),
        "<v:init> must be yes or no, not 'maybe'",
    ),
    "undefined entity": (domain("<name>&web;</name>"), "Entity 'web' not defined"),
}


@pytest.mark.parametrize(("xml", "message"), XML_ERRORS.values(), ids=XML_ERRORS.keys())
def test_xml_errors(xml: str, message: str) -> None:
    error = refusal(xml)
    assert error.code is ErrorCode.XML_ERROR
    assert message in error.detail
    assert str(error).startswith("XML error: ")


INVALID = {
    "name": (domain("<name>web/1</name>"), "name:"),
    "memory below Docker's least": (domain("<memory unit='MiB'>1</memory>"), "memory_kib:"),
    "no vcpu": (domain("<vcpu>0</vcpu>"), "vcpus:"),
    "host network": (
        domain().replace(
            "</devices>", "<interface type='network'><source network='host'/></interface></devices>"
        ),
        "network:",
    ),
    "relative mount": (
        domain().replace(
            "</devices>",
            "<filesystem type='mount'><source dir='srv'/><target dir='/srv'/></filesystem>"
            "</devices>",
        ),
        "mounts.0.source:",
    ),
    "env name": (domain("<os><initenv name='1X'>v</initenv></os>"), "env.1X.[key]:"),
    "image": (domain(image="Not An Image"), "image:"),
}


@pytest.mark.parametrize(("xml", "where"), INVALID.values(), ids=INVALID.keys())
def test_values_the_spec_refuses_are_invalid_arg(xml: str, where: str) -> None:
    error = refusal(xml)
    assert error.code is ErrorCode.INVALID_ARG
    assert error.detail.startswith(where)


def test_type_lxc_is_accepted_and_written_as_docker() -> None:
    spec = parse_domain_xml(domain(kind="lxc"))
    assert domain_xml(spec).startswith("<domain type='docker'>")


def test_every_refusal_is_named_in_one_message() -> None:
    error = refusal(domain("<cpu/>", "<iothreads>1</iothreads>", "<os><type>hvm</type></os>"))
    assert error.code is ErrorCode.CONFIG_UNSUPPORTED
    assert str(error) == (
        "unsupported configuration: not supported by virtbus: <cpu>, <iothreads>, <os><type>hvm"
    )


# -- hostile XML -----------------------------------------------------------------------------


def test_entity_expansion_is_refused_at_once() -> None:
    entities = "".join(f'<!ENTITY e{n} "{f"&e{n - 1};" * 10 if n else "lol"}">' for n in range(10))
    bomb = f"<!DOCTYPE domain [{entities}]>" + domain("<name>&e9;</name>")
    started = time.monotonic()
    error = refusal(bomb)
    assert time.monotonic() - started < 1
    assert error.code is ErrorCode.XML_ERROR
    assert "DTD" in error.detail


def test_external_entities_are_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t")
    for doctype in (
        f'<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{secret}">]>',
        f'<!DOCTYPE domain [<!ENTITY % p SYSTEM "file://{secret}"> %p;]>',
        f'<!DOCTYPE domain SYSTEM "file://{secret}">',
        '<!DOCTYPE domain SYSTEM "http://127.0.0.1:9/domain.dtd">',
    ):
        error = refusal(doctype + domain("<name>&x;</name>" if "ENTITY x" in doctype else ""))
        assert error.code is ErrorCode.XML_ERROR
        assert "DTD" in error.detail


@pytest.mark.parametrize(
    "prolog", ["", "\ufeff", "<?xml version='1.0'?>\n", "<!-- c -->\n<?pi x?>\n  "]
)
def test_a_doctype_anywhere_in_the_prolog_is_refused(prolog: str) -> None:
    error = refusal(prolog + "<!DOCTYPE domain>" + domain())
    assert error.code is ErrorCode.XML_ERROR
    assert "DTD" in error.detail


def test_doctype_words_in_a_comment_are_only_words() -> None:
    assert parse_domain_xml("<!-- <!DOCTYPE domain> -->" + domain()).name == "web"


def test_too_long_a_document_is_refused() -> None:
    padding = " " * MAX_XML_CHARS
    assert refusal(domain(padding)).code is ErrorCode.INVALID_ARG


def test_a_declared_encoding_does_not_matter_for_decoded_text() -> None:
    declared = "<?xml version='1.0' encoding='ISO-8859-1'?>" + domain("<os><init>é</init></os>")
    assert parse_domain_xml(declared).command == ["é"]


# -- metadata --------------------------------------------------------------------------------


def test_metadata_is_kept_verbatim_with_its_namespaces() -> None:
    xml = (
        "<domain type='docker' xmlns:a='urn:a' xmlns:unused='urn:u'>"
        "<name>web</name>"
        "<metadata>\n  <a:x k='1'>  <a:y>text &amp; more</a:y><!-- gone --></a:x>\n"
        "  <b xmlns='urn:b'/>\n</metadata>"
        "<devices><filesystem type='template'><source name='busybox'/><target dir='/'/>"
        "</filesystem></devices></domain>"
    )
    spec = parse_domain_xml(xml)
    assert spec.metadata_xml == (
        '<a:x xmlns:a="urn:a" k="1">  <a:y>text &amp; more</a:y></a:x>\n<b xmlns="urn:b"/>'
    )
    assert parse_domain_xml(domain_xml(spec)) == spec


def test_metadata_xml_from_json_is_normalised() -> None:
    spec = DomainSpec(name="web", image="busybox", metadata_xml="  <a:x xmlns:a='urn:a'/> <b/>")
    assert spec.metadata_xml == '<a:x xmlns:a="urn:a"/>\n<b/>'
    assert parse_domain_xml(domain_xml(spec)) == spec


@pytest.mark.parametrize(
    "fragment",
    ["", "   ", "text", "<a>", "<a/>text", "</metadata><b/><metadata>", "<!DOCTYPE x><a/>"],
)
def test_metadata_xml_must_be_elements(fragment: str) -> None:
    with pytest.raises(ValidationError):
        DomainSpec(name="web", image="busybox", metadata_xml=fragment)


def test_empty_metadata_is_no_metadata() -> None:
    assert parse_domain_xml(domain("<metadata>\n</metadata>")).metadata_xml is None


# -- commands --------------------------------------------------------------------------------

XML = domain("<os><init>sleep</init><initarg>60</initarg></os>")


def command(op: str, **fields: Any) -> bytes:
    return json.dumps({"v": 1, "id": "cmd-1", "op": op, **fields}).encode()


def refused_command(body: bytes) -> InvalidCommand:
    with pytest.raises(InvalidCommand) as caught:
        parse_command(body)
    return caught.value


def test_define_and_create_take_xml_as_a_spec() -> None:
    defined = parse_command(command("domain.define", args={"xml": XML}))
    assert isinstance(defined, Define)
    assert defined.args.spec == parse_domain_xml(XML)
    created = parse_command(command("domain.create_xml", args={"xml": XML, "start_paused": True}))
    assert isinstance(created, CreateXml)
    assert created.args.spec.command == ["sleep", "60"]
    assert created.args.start_paused


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"xml": XML, "spec": {"name": "web", "image": "busybox"}}, "spec or xml, not both"),
        ({}, "needs spec"),
        ({"start_paused": True}, "needs spec"),
        ({"xml": 7}, "xml must be a string"),
    ],
)
def test_spec_or_xml_exactly(args: dict[str, Any], reason: str) -> None:
    error = refused_command(command("domain.create_xml", args=args))
    assert error.code is ErrorCode.INVALID_ARG
    assert reason in error.reason


@pytest.mark.parametrize(
    ("xml", "code"),
    [
        ("<domain", ErrorCode.XML_ERROR),
        (domain("<cpu/>"), ErrorCode.CONFIG_UNSUPPORTED),
        (domain("<name>a b</name>"), ErrorCode.INVALID_ARG),
    ],
)
def test_xml_refusals_keep_their_code_through_the_command(xml: str, code: ErrorCode) -> None:
    error = refused_command(command("domain.define", args={"xml": xml}))
    assert error.code is code


def test_get_xml_desc_command() -> None:
    parsed = parse_command(command("domain.get_xml_desc", target={"name": "web"}))
    assert isinstance(parsed, GetXmlDesc)
    assert not parsed.args.inactive
    inactive = parse_command(
        command("domain.get_xml_desc", target={"name": "web"}, args={"inactive": True})
    )
    assert isinstance(inactive, GetXmlDesc) and inactive.args.inactive
    assert refused_command(command("domain.get_xml_desc")).code is ErrorCode.INVALID_ARG


def test_the_schema_says_spec_or_xml() -> None:
    schema = Define.model_json_schema()["$defs"]["DefineArgs"]
    assert schema["oneOf"] == [{"required": ["spec"]}, {"required": ["xml"]}]
    assert schema["properties"]["xml"]["type"] == "string"
    assert "required" not in schema


def test_the_reply_carries_the_xml() -> None:
    xml = domain_xml(DomainSpec(name="web", image="busybox"))
    reply = Reply(id="cmd-1", host="h1", ok=True, result=DomainXml(xml=xml))
    again = Reply.model_validate_json(reply.model_dump_json())
    assert isinstance(again.result, DomainXml)
    assert again.result.xml == xml


def test_a_pids_limit_travels_in_virtbus_config() -> None:
    spec = DomainSpec(name="web", image="busybox", pids_limit=64)
    written = domain_xml(spec)
    assert "<virtbus:pids_limit>64</virtbus:pids_limit>" in written
    assert parse_domain_xml(written) == spec
