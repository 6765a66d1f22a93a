"""Names on the wire as plain text, loadable without pydantic or dataclasses: the patterns
of domain and host names (``schemas.base`` builds its constrained strings from them), the
exchanges a command is published to (``schemas.topology`` has the rest of the broker's
objects), and the op of the command models the CLI sends without loading the models (a
test checks each against its model's ``op``)."""

from __future__ import annotations

import re

DOMAIN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
HOST_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
HOST_NAME_MAX = 63

COMMANDS_EXCHANGE = "virtbus.commands"
BROADCAST_EXCHANGE = "virtbus.broadcast"
BROADCAST_ALL = "all"
"""The broadcast routing key every host receives."""

OP_NAMES: dict[str, str] = {
    "Create": "domain.create",
    "Destroy": "domain.destroy",
    "GetState": "domain.get_state",
    "GetXmlDesc": "domain.get_xml_desc",
    "ListDomains": "host.list_domains",
    "Lookup": "domain.lookup",
    "Reboot": "domain.reboot",
    "Resume": "domain.resume",
    "Shutdown": "domain.shutdown",
    "Suspend": "domain.suspend",
    "Undefine": "domain.undefine",
}
"""Command model name: its op."""


def group_key(group: str) -> str:
    """The broadcast routing key of the hosts of ``group``."""
    return f"group.{group}"


def is_domain_name(text: str) -> bool:
    return re.match(DOMAIN_NAME_PATTERN, text) is not None


def is_host_name(text: str) -> bool:
    return len(text) <= HOST_NAME_MAX and re.match(HOST_NAME_PATTERN, text) is not None
