"""XML text read safely, and the fragments of it a domain keeps. No I/O.

Guarantees: a document with a DTD is refused before the parser reads it, so no entity
is ever declared or expanded and nothing outside the text is ever fetched (the parser
is also set to resolve no entity, load no DTD and use no network); every failure is an
XmlError carrying libvirt's error code.
"""

from __future__ import annotations

import copy
import re

from lxml import etree

from schemas.codes import ErrorCode
from schemas.errors import VirtbusError

MAX_XML_CHARS = 1 << 20
"""The largest document read: ample for any domain, small enough for one message."""

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    huge_tree=False,
    encoding="utf-8",
    remove_comments=True,
    remove_pis=True,
)
_PROLOG_ITEM = re.compile(r"\s+|<\?.*?\?>|<!--.*?-->", re.DOTALL)
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class XmlError(VirtbusError):
    """XML refused: ``code`` is libvirt's error number, ``detail`` says why, for a person.

    Deliberately not a ValueError: raised inside a pydantic validator it reaches the
    caller as itself, code and all, instead of becoming a generic validation error.
    """


def parse_xml(text: str) -> etree._Element:
    """The root element of ``text``; comments and processing instructions left out. The
    text is already decoded: whatever encoding its XML declaration names is ignored.

    Raises XmlError: XML_ERROR for text that is not well-formed XML or has a DTD,
    INVALID_ARG for text longer than MAX_XML_CHARS.
    """
    if len(text) > MAX_XML_CHARS:
        raise XmlError(ErrorCode.INVALID_ARG, f"XML longer than {MAX_XML_CHARS} characters")
    if _declares_doctype(text):
        raise XmlError(ErrorCode.XML_ERROR, "a document type declaration (DTD) is not accepted")
    try:
        return etree.fromstring(text.encode(errors="surrogatepass"), _PARSER)
    except etree.XMLSyntaxError as error:
        raise XmlError(ErrorCode.XML_ERROR, str(error.msg or error)) from None


def _declares_doctype(text: str) -> bool:
    """Whether the prolog (all a DOCTYPE may follow) holds one: found before the parser
    sees it, so no declaration in it is ever read."""
    position = 1 if text.startswith("\ufeff") else 0
    while (item := _PROLOG_ITEM.match(text, position)) is not None and item.end() > position:
        position = item.end()
    return text.startswith("<!DOCTYPE", position)


def fragment_of(elements: list[etree._Element]) -> str:
    """Elements as one normalised piece of XML text: each element on its own line,
    carrying the namespace declarations it uses and no others; its content verbatim."""
    pieces = []
    for element in elements:
        alone = copy.deepcopy(element)
        alone.tail = None
        etree.cleanup_namespaces(alone)
        pieces.append(etree.tostring(alone, encoding="unicode"))
    return "\n".join(pieces)


def read_fragment(text: str, where: str) -> list[etree._Element]:
    """The elements of a piece of XML text as fragment_of writes it. Text outside the
    elements other than whitespace is an XML_ERROR naming ``where``."""
    holder = parse_xml(f"<{where}>{text}</{where}>")
    if (holder.text or "").strip() or any((child.tail or "").strip() for child in holder):
        raise XmlError(ErrorCode.XML_ERROR, f"<{where}> holds text outside its elements")
    return list(holder)


def normal_fragment(text: str) -> str:
    """``text`` as fragment_of writes it: a ValueError (for pydantic) if it is not a
    sequence of one or more XML elements."""
    try:
        elements = read_fragment(text, "metadata")
    except XmlError as error:
        raise ValueError(error.detail) from None
    if not elements:
        raise ValueError("needs at least one XML element")
    return fragment_of(elements)


def unwritable(value: str) -> bool:
    """Whether ``value`` holds characters XML 1.0 cannot carry, even escaped."""
    return _NOT_XML_CHAR.search(value) is not None


def escape_text(value: str) -> str:
    """Character data that reads back as exactly ``value`` (carriage returns kept)."""
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def escape_attribute(value: str) -> str:
    """An attribute value for single quotes that reads back as exactly ``value``
    (XML would otherwise turn tabs and line ends in it into spaces)."""
    return (
        escape_text(value)
        .replace("'", "&apos;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
    )
