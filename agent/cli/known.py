"""The hosts seen before, kept in a file so that a later broadcast knows whom to expect
(``VIRTBUS_KNOWN_HOSTS``, by default ``$XDG_STATE_HOME/virtbus/hosts.json``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.config import CliConfig

if TYPE_CHECKING:
    from agent.client import HostStatus


def known_hosts_path() -> Path:
    return CliConfig().known_hosts_path


def load_known() -> dict[str, dict[str, Any]]:
    path = known_hosts_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return known if isinstance(known, dict) else {}


def save_known(known: dict[str, dict[str, Any]]) -> None:
    path = known_hosts_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1, sort_keys=True))
    except OSError:
        return


def remember(replies: Iterable[str], statuses: Iterable[HostStatus] = ()) -> None:
    """Keep the hosts seen (those that ``replies`` answered, by name), so that a later
    broadcast knows whom to expect."""
    known = load_known()
    now = datetime.now(UTC).isoformat()
    for host in replies:
        known.setdefault(host, {}).update(last_seen=now, state="alive")
    for status in statuses:
        known[status.host] = {
            "last_seen": status.last_seen.isoformat(),
            "state": status.state,
            "groups": status.groups,
            "heartbeat_s": status.heartbeat_s,
            "agent_version": status.agent_version,
        }
    save_known(known)


def expected_hosts(expect: list[str] | None, group: str | None) -> set[str] | None:
    """The hosts a broadcast waits for: those given, else the known ones of ``group``
    (all if None) that did not say goodbye; None if there are none."""
    if expect:
        return {h for item in expect for h in item.split(",") if h}
    known = load_known()
    chosen = {
        host
        for host, facts in known.items()
        if facts.get("state") != "offline" and (group is None or group in facts.get("groups", []))
    }
    return chosen or None
