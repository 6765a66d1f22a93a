"""virDomainSetMetadata and virDomainGetMetadata: a domain's description, title and
namespaced metadata elements, in its running and persistent definitions.

Metadata lives in the agent's store, never in Docker, so a change takes no
Docker call: the definitions change, and one METADATA_CHANGE event is published in the
same transaction that stores them.
"""

from __future__ import annotations

import copy
from typing import Any

from lxml import etree

from agent.errors import VirtError
from agent.host.domains import affected, read_live
from agent.host.operations import Operations, handles
from schemas.codes import ErrorCode, MetadataType
from schemas.commands import GetMetadata, MetadataKind, SetMetadata
from schemas.domain import DomainRecord, DomainSpec
from schemas.events import MetadataChangeEvent
from schemas.replies import Metadata
from schemas.xmldoc import XmlError, fragment_of, parse_xml, read_fragment

FIELDS: dict[MetadataKind, str] = {"description": "description", "title": "title"}
"""The spec field of each kind of metadata but elements (all in ``metadata_xml``)."""
NOT_PRESENT = "Requested metadata element is not present"


def _with_element(spec: DomainSpec, uri: str, element: etree._Element | None) -> DomainSpec:
    """The spec with its element of namespace ``uri`` replaced by ``element`` (or removed)."""
    kept = []
    if spec.metadata_xml is not None:
        kept = [
            e
            for e in read_fragment(spec.metadata_xml, "metadata")
            if etree.QName(e).namespace != uri
        ]
    if element is not None:
        kept.append(element)
    return spec.model_copy(update={"metadata_xml": fragment_of(kept) if kept else None})


def _element(metadata: str, key: str, uri: str) -> etree._Element:
    """One XML element given as text, put in namespace ``uri`` with prefix ``key`` (its
    own element only, as libvirt)."""
    try:
        parsed = parse_xml(metadata)
    except XmlError as error:
        raise VirtError(error.code, error.detail) from None
    element = etree.Element(
        f"{{{uri}}}{etree.QName(parsed).localname}", dict(parsed.attrib), nsmap={key: uri}
    )
    element.text = parsed.text
    for child in parsed:
        element.append(copy.deepcopy(child))
    return element


def _without_namespace(element: etree._Element) -> str:
    bare = etree.Element(etree.QName(element).localname, dict(element.attrib))
    bare.text = element.text
    for child in element:
        bare.append(copy.deepcopy(child))
    etree.cleanup_namespaces(bare)
    return str(etree.tostring(bare, encoding="unicode"))


def _changed(spec: DomainSpec, args: Any) -> DomainSpec:
    kind: MetadataKind = args.type
    if kind in FIELDS:
        if args.uri is not None or args.key is not None:
            raise VirtError(
                ErrorCode.INVALID_ARG,
                f"uri and key in virDomainSetMetadata are for elements only, not the {kind}",
            )
        value = args.metadata or None
        if kind == "title" and value is not None and "\n" in value:
            raise VirtError(ErrorCode.INVALID_ARG, "Domain title can't contain newlines")
        return spec.model_copy(update={FIELDS[kind]: value})
    if args.uri is None:
        raise VirtError(ErrorCode.INVALID_ARG, "uri in virDomainSetMetadata must not be NULL")
    if not args.metadata:
        return _with_element(spec, args.uri, None)
    if args.key is None:
        raise VirtError(ErrorCode.INVALID_ARG, "key in virDomainSetMetadata must not be NULL")
    return _with_element(spec, args.uri, _element(args.metadata, args.key, args.uri))


@handles(SetMetadata)
def set_metadata(ops: Operations, command: SetMetadata) -> DomainRecord:
    """Changes the running definition, the persistent one, or both, and publishes exactly
    one METADATA_CHANGE event. A change to the running definition alone leaves the
    persistent one as it was (it becomes the pending definition of the next start)."""
    args = command.args
    domain = ops.domains.get(command.target)
    live, config = affected(domain, args.live, args.config)
    persistent = domain.next_definition
    if live:
        if not config and domain.pending is None and domain.persistent:
            domain.pending = domain.spec
        domain.spec = _changed(domain.spec, args)
    if config:
        changed = _changed(persistent, args)
        if domain.active:
            domain.pending = changed
        else:
            # the container is still the one ``spec`` built: a pending definition keeps
            # what its next start changes, and takes this change too
            domain.spec = _changed(domain.spec, args)
            if domain.pending is not None:
                domain.pending = changed
    kind = MetadataType[args.type.upper()]
    nsuri = args.uri if kind is MetadataType.ELEMENT else None

    def event(seq: int, common: dict[str, Any]) -> MetadataChangeEvent:
        return MetadataChangeEvent(
            seq=seq,
            type=args.type,
            type_code=int(kind),
            nsuri=nsuri,
            origin="agent",
            cause=command.id,
            **common,
        )

    ops.monitor.publish(domain, event)
    return domain.record()


@handles(GetMetadata)
def get_metadata(ops: Operations, command: GetMetadata) -> Metadata:
    """NO_DOMAIN_METADATA when the domain has none of the kind (or namespace) asked for."""
    args = command.args
    domain = ops.domains.get(command.target)
    spec = domain.spec if read_live(domain, args.live, args.config) else domain.next_definition
    if args.type in FIELDS:
        value = getattr(spec, FIELDS[args.type])
        if value is None:
            raise VirtError(ErrorCode.NO_DOMAIN_METADATA, NOT_PRESENT)
        return Metadata(metadata=value)
    if args.uri is None:
        raise VirtError(ErrorCode.INVALID_ARG, "uri in virDomainGetMetadata must not be NULL")
    for element in read_fragment(spec.metadata_xml or "", "metadata"):
        if etree.QName(element).namespace == args.uri:
            return Metadata(metadata=_without_namespace(element))
    raise VirtError(ErrorCode.NO_DOMAIN_METADATA, NOT_PRESENT)
