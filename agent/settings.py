"""What every virtbus program reads the same way: the broker it reaches by default and how a
broker URL is shown. Each program's own settings (the agent's ``Config``, the CLI's
``CliConfig``, the gateway's ``GatewaySettings``) are pydantic-settings models read from
flags, then ``VIRTBUS_*`` variables, then defaults; ``setting_problems`` says what is wrong
with them, by flag and variable."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from schemas.problems import explain

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def setting_problems(
    error: ValidationError,
    flags: Mapping[str, str | None] | None = None,
    env_prefix: str | None = "VIRTBUS_",
    secret: frozenset[str] = frozenset({"amqp_url"}),
) -> list[str]:
    """One line per refused setting, named by its flag and its environment variable,
    saying what is expected: ``--host (VIRTBUS_HOST): 'Bad_Name' is not a host name: …``.

    ``flags`` maps a field to its flag where it is not ``--`` and the field's name with
    dashes, or to None where it has none; ``env_prefix`` None: no variable. A value of a
    ``secret`` field is never echoed."""
    lines = []
    for item in error.errors(include_url=False):
        field = str(item["loc"][0]) if item["loc"] else ""
        what = explain(item, show_input=field not in secret)
        if not field:
            lines.append(what)
            continue
        names = []
        flag = (flags or {}).get(field, "--" + field.replace("_", "-"))
        if flag is not None:
            names.append(flag)
        if env_prefix is not None:
            names.append(f"{env_prefix}{field.upper()}")
        label = f"{names[0]} ({names[1]})" if len(names) == 2 else "".join(names)
        lines.append(f"{label}: {what}")
    return lines
