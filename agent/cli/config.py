"""The ``VIRTBUS_*`` settings of every ``virtbus`` verb but ``agent`` (whose settings are
``agent.host.config.Config``). Flags given on the command line override them.

Every setting is text (a URL, a name, a path), so there is nothing to validate here and
no pydantic-settings to load: reading them costs a one-command verb nothing. Variable
names are matched regardless of case, as pydantic-settings matches them."""

from __future__ import annotations

import os
from pathlib import Path

from agent.settings import DEFAULT_AMQP_URL


def _variable(name: str) -> str | None:
    wanted = name.lower()
    found = os.environ.get(name)
    if found is not None:
        return found
    return next((value for key, value in os.environ.items() if key.lower() == wanted), None)


def _path(name: str) -> Path | None:
    value = _variable(name)
    return None if value is None else Path(value)


class CliConfig:
    """Each setting is its ``VIRTBUS_<SETTING>`` variable when set, else its default."""

    def __init__(self) -> None:
        self.amqp_url: str = _variable("VIRTBUS_AMQP_URL") or DEFAULT_AMQP_URL
        """The broker the client verbs and the gateway connect to (``--connect``)."""
        self.signing_key = _variable("VIRTBUS_SIGNING_KEY")
        """``ID=ALGORITHM:PATH``: sign every command with this key (``--signing-key``)."""
        self.amqp_ca_file = _path("VIRTBUS_AMQP_CA_FILE")
        self.amqp_cert_file = _path("VIRTBUS_AMQP_CERT_FILE")
        self.amqp_key_file = _path("VIRTBUS_AMQP_KEY_FILE")
        self.host = _variable("VIRTBUS_HOST")
        """The host a domain verb talks to without ``--host``, ``--group`` or
        ``--all-hosts``."""
        self.known_hosts = _variable("VIRTBUS_KNOWN_HOSTS")
        """The file of the hosts seen, which broadcasts expect to answer."""
        self.state_home = _variable("XDG_STATE_HOME")
        """Base of the default ``known_hosts``: ``$XDG_STATE_HOME/virtbus/hosts.json``."""
        self.management_url = _variable("VIRTBUS_MANAGEMENT_URL")
        """RabbitMQ's management API, with an administrator's credentials, for
        ``provision``; None: ``agent.provision.DEFAULT_MANAGEMENT_URL``."""

    @property
    def known_hosts_path(self) -> Path:
        if self.known_hosts is not None:
            return Path(self.known_hosts)
        base = self.state_home or str(Path.home() / ".local" / "state")
        return Path(base) / "virtbus" / "hosts.json"
