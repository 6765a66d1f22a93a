"""The ``VIRTBUS_*`` settings of every ``virtbus`` verb but ``agent`` (whose settings are
``agent.config.Config``), read by the same pydantic-settings machinery. Flags given on
the command line override them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.settings import DEFAULT_AMQP_URL


class CliConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIRTBUS_", frozen=True, extra="forbid", hide_input_in_errors=True
    )

    amqp_url: str = DEFAULT_AMQP_URL
    """The broker the client verbs and the gateway connect to (``--connect``)."""
    signing_key: str | None = None
    """``ID=ALGORITHM:PATH``: sign every command with this key (``--signing-key``)."""
    amqp_ca_file: Path | None = None
    amqp_cert_file: Path | None = None
    amqp_key_file: Path | None = None
    host: str | None = None
    """The host a domain verb talks to without ``--host``, ``--group`` or
    ``--all-hosts``."""
    known_hosts: str | None = None
    """The file of the hosts seen, which broadcasts expect to answer."""
    state_home: str | None = Field(default=None, validation_alias="XDG_STATE_HOME")
    """Base of the default ``known_hosts``: ``$XDG_STATE_HOME/virtbus/hosts.json``."""
    management_url: str | None = None
    """RabbitMQ's management API, with an administrator's credentials, for ``provision``;
    None: ``agent.provision.DEFAULT_MANAGEMENT_URL``."""

    @property
    def known_hosts_path(self) -> Path:
        if self.known_hosts is not None:
            return Path(self.known_hosts)
        base = self.state_home or str(Path.home() / ".local" / "state")
        return Path(base) / "virtbus" / "hosts.json"
