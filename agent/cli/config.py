"""The ``VIRTBUS_*`` settings of every ``virtbus`` verb but ``agent`` (whose settings are
``agent.host.config.Config``). Flags given on the command line override them.

Every setting is text (a URL, a name, a path), so there is nothing to validate here and
no pydantic-settings to load: reading them costs a one-command verb nothing. Variable
names are matched regardless of case, as pydantic-settings matches them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class CliConfig:
    """Each field defaults to its ``VIRTBUS_<FIELD>`` variable, else to its default."""

    amqp_url: str = field(default_factory=lambda: _variable("VIRTBUS_AMQP_URL") or DEFAULT_AMQP_URL)
    """The broker the client verbs and the gateway connect to (``--connect``)."""
    signing_key: str | None = field(default_factory=lambda: _variable("VIRTBUS_SIGNING_KEY"))
    """``ID=ALGORITHM:PATH``: sign every command with this key (``--signing-key``)."""
    amqp_ca_file: Path | None = field(default_factory=lambda: _path("VIRTBUS_AMQP_CA_FILE"))
    amqp_cert_file: Path | None = field(default_factory=lambda: _path("VIRTBUS_AMQP_CERT_FILE"))
    amqp_key_file: Path | None = field(default_factory=lambda: _path("VIRTBUS_AMQP_KEY_FILE"))
    host: str | None = field(default_factory=lambda: _variable("VIRTBUS_HOST"))
    """The host a domain verb talks to without ``--host``, ``--group`` or
    ``--all-hosts``."""
    known_hosts: str | None = field(default_factory=lambda: _variable("VIRTBUS_KNOWN_HOSTS"))
    """The file of the hosts seen, which broadcasts expect to answer."""
    state_home: str | None = field(default_factory=lambda: _variable("XDG_STATE_HOME"))
    """Base of the default ``known_hosts``: ``$XDG_STATE_HOME/virtbus/hosts.json``."""
    management_url: str | None = field(default_factory=lambda: _variable("VIRTBUS_MANAGEMENT_URL"))
    """RabbitMQ's management API, with an administrator's credentials, for ``provision``;
    None: ``agent.provision.DEFAULT_MANAGEMENT_URL``."""

    @property
    def known_hosts_path(self) -> Path:
        if self.known_hosts is not None:
            return Path(self.known_hosts)
        base = self.state_home or str(Path.home() / ".local" / "state")
        return Path(base) / "virtbus" / "hosts.json"
