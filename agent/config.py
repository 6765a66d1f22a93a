"""The agent's configuration: command-line flags, then ``VIRTBUS_*`` variables, then
defaults."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agent.policy import Policy, load_policy
from schemas.base import HostName

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def default_host() -> str:
    """This machine's short name, made into a DNS label."""
    name = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    return cleaned[:63] or "localhost"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIRTBUS_", frozen=True, extra="forbid")

    host: HostName = Field(default_factory=default_host)
    amqp_url: SecretStr = SecretStr(DEFAULT_AMQP_URL)
    groups: Annotated[list[HostName], NoDecode] = []
    docker_url: str | None = None
    state_dir: Path = Path("/var/lib/virtbus")
    queue_type: Literal["quorum", "classic"] = "quorum"
    concurrency: int = Field(default=32, ge=1, le=1024)
    prefetch: int = Field(default=64, ge=1, le=65535)
    heartbeat_s: float = Field(default=10.0, gt=0)
    drain_s: float = Field(default=30.0, ge=0)
    reconcile_s: float = Field(default=30.0, gt=0)
    """Seconds between re-lists of Docker, the safety net behind the event stream."""
    outbox_limit: int = Field(default=100_000, ge=1)
    """Events waiting for the broker beyond which no new command is taken."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve /metrics and /health on this port; None: no endpoint."""
    metrics_host: str = "127.0.0.1"

    # Host policy and hostile input (agent/policy.py)
    policy_file: Path | None = None
    """TOML file of the host policy, read and validated at start; None: the safe defaults."""
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=128 * 1024 * 1024)
    """Command bodies larger than this are refused unread (INVALID_ARG, dead-lettered)."""
    _policy: Policy = PrivateAttr(default_factory=Policy)

    @field_validator("policy_file")
    @classmethod
    def _policy_valid(cls, path: Path | None) -> Path | None:
        # here, a refusal names the file alone; a model validator's would echo every setting
        load_policy(path)
        return path

    @model_validator(mode="after")
    def _load_policy(self) -> Config:
        self._policy = load_policy(self.policy_file)
        return self

    @property
    def policy(self) -> Policy:
        return self._policy

    @field_validator("groups", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def amqp_urls(self) -> list[str]:
        """The brokers to try in turn (the setting may list several, comma-separated)."""
        return [url.strip() for url in self.amqp_url.get_secret_value().split(",") if url.strip()]

    @property
    def host_dir(self) -> Path:
        """The state directory of this host: one per host, so agents can share a base."""
        return self.state_dir / self.host

    def describe(self) -> str:
        """One line for logs, secrets masked."""
        return (
            f"host={self.host} groups={','.join(self.groups) or '-'} "
            f"amqp={','.join(mask_url(url) for url in self.amqp_urls)} "
            f"docker={self.docker_url or 'default'} state={self.host_dir} "
            f"queue={self.queue_type}"
        )
