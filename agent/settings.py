"""What every virtbus program reads the same way: the broker it reaches by default and how a
broker URL is shown. Each program's own settings (the agent's ``Config``, the CLI's
``CliConfig``, the gateway's ``GatewaySettings``) are pydantic-settings models read from
flags, then ``VIRTBUS_*`` variables, then defaults."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

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
