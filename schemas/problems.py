"""Validation errors in words for people: where, what was given, and what is expected,
one line each, without pydantic's boilerplate or links. Used for command arguments (a
domain spec's fields, named as the spec spells them) and for every program's settings
(named by flag and environment variable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

PATTERN_WORDS = {
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$": (
        "a host name: lowercase letters, digits and '-' (not first or last), at most 63"
    ),
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$": (
        "a name: letters, digits, '_', '.' and '-', starting with a letter or digit, at most 63"
    ),
    r"^/[^\x00-\x1f\x7f]*$": "an absolute path (starting with /), without control characters",
    r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$": "an image reference (registry/name:tag or @digest)",
    r"^[A-Za-z_][A-Za-z0-9_]{0,127}$": "an environment variable name (letters, digits, '_')",
    r"^[^\x00]*$": "text without NUL characters",
}
"""The contract's patterns (schemas.base, schemas.domain), as a person would say them."""

TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "path_type": "a path",
    "path_not_file": "an existing file",
    "url_parsing": "a URL",
    "uuid_parsing": "a UUID",
    "uuid_type": "a UUID",
}
_INTERNAL = ("function-after[", "function-before[", "function-wrap[", "function-plain[")


def where(loc: Sequence[int | str]) -> str:
    """A location as the document spells it: ``spec.mounts[0].target``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith(_INTERNAL):
            text += f".{part}" if text else part
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def explain(item: ErrorDetails, show_input: bool = True) -> str:
    """What is wrong with one value, in words: ``'Bad_Name' is not a host name: …``."""
    kind = item["type"]
    given = f"{_shown(item['input'])} is not " if show_input and "input" in item else "not "
    ctx = item.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return given + PATTERN_WORDS.get(pattern, f"text matching {pattern}")
    if kind in TYPE_WORDS:
        return given + TYPE_WORDS[kind]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind in ("literal_error", "enum"):
        return given + "one of " + str(ctx.get("expected", ""))
    message = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message.removeprefix("Input ")
    return message[:1].lower() + message[1:]


def problems(error: ValidationError, skip: int = 0) -> list[tuple[str, str]]:
    """(where, what) for each error, the first ``skip`` parts of each location left out."""
    return [(where(item["loc"][skip:]), explain(item)) for item in error.errors(include_url=False)]
