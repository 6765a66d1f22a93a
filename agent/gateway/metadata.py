"""virDomainSetMetadata and virDomainGetMetadata (``virsh desc``, ``virsh metadata``)."""

from __future__ import annotations

from agent.client import VirtbusError
from agent.gateway.procedures import (
    AFFECT_ALL,
    AFFECT_CONFIG,
    Session,
    affect,
    check_flags,
    handles,
    on_domain,
    read_domain,
    string,
)
from agent.gateway.protocol import STRING_MAX, Proc
from agent.gateway.xdr import Unpacker
from schemas.codes import ErrorCode, MetadataType
from schemas.commands import GetMetadata, MetadataKind, SetMetadata
from schemas.domain import DomainRecord
from schemas.replies import Metadata

KINDS: dict[int, MetadataKind] = {
    MetadataType.DESCRIPTION: "description",
    MetadataType.TITLE: "title",
    MetadataType.ELEMENT: "element",
}


def kind_of(value: int) -> MetadataKind:
    try:
        return KINDS[value]
    except KeyError:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"unknown metadata type '{value}'") from None


@handles(Proc.DOMAIN_SET_METADATA)
async def set_metadata(session: Session, args: Unpacker) -> bytes:
    """Changing the persistent definition also needs ``domain:save``, as libvirt's ACL."""
    domain = read_domain(args)
    kind = kind_of(args.int32())
    metadata = args.optional(lambda: args.string(STRING_MAX))
    key = args.optional(lambda: args.string(STRING_MAX))
    uri = args.optional(lambda: args.string(STRING_MAX))
    flags = args.uint32()
    check_flags(flags, AFFECT_ALL, "virDomainSetMetadata")
    if flags & AFFECT_CONFIG:
        session.require("domain:save", api="virDomainSetMetadata")
    fields = {"type": kind, "metadata": metadata, "key": key, "uri": uri}
    await on_domain(
        session,
        domain,
        SetMetadata,
        DomainRecord,
        {
            **{name: value for name, value in fields.items() if value is not None},
            **affect(flags),
        },
    )
    return b""


@handles(Proc.DOMAIN_GET_METADATA)
async def get_metadata(session: Session, args: Unpacker) -> bytes:
    domain = read_domain(args)
    kind = kind_of(args.int32())
    uri = args.optional(lambda: args.string(STRING_MAX))
    flags = args.uint32()
    check_flags(flags, AFFECT_ALL, "virDomainGetMetadata")
    asked: dict[str, object] = {
        "type": kind,
        **affect(flags),
    }
    if uri is not None:
        asked["uri"] = uri
    got = await on_domain(session, domain, GetMetadata, Metadata, asked)
    return string(got.metadata)
