"""The agent's configuration: command-line flags, then ``VIRTBUS_*`` variables, then
defaults."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, FilePath, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agent import tls
from agent.host.policy import Policy, load_policy
from agent.settings import DEFAULT_AMQP_URL, mask_url
from agent.signing import DEFAULT_WINDOW_S, TrustedKey
from schemas.base import HostName

DOCKER_TIMEOUT_S = 120.0
"""The default bound on one call to the Docker engine that does not wait on a container:
the kubelet's default for its runtime's calls."""


def default_host() -> str:
    """This machine's short name, made into a DNS label."""
    name = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    return cleaned[:63] or "localhost"


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIRTBUS_", frozen=True, extra="forbid", hide_input_in_errors=True
    )

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
    docker_timeout_s: float = Field(default=DOCKER_TIMEOUT_S, gt=0, le=3600)
    """Bound on one call to the Docker engine (a stop's grace period added): a command
    whose call the engine does not answer in time answers OPERATION_TIMEOUT."""
    outbox_limit: int = Field(default=100_000, ge=1)
    """Events waiting for the broker beyond which no new command is taken."""
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The agent's event loop: libuv's (uvloop), or the standard library's."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve /metrics and /health on this port; None: no endpoint."""
    metrics_host: str = "127.0.0.1"

    # signed commands (agent/signing.py): required as soon as one key is trusted
    trusted_keys: Annotated[dict[str, TrustedKey], NoDecode] = {}
    """Key id → key; given as ``ID=ALGORITHM:PATH`` items (comma-separated in the
    environment, one per ``--trusted-key`` flag)."""
    signing_window_s: float = Field(default=DEFAULT_WINDOW_S, gt=0, le=3600)
    """How far a signed command's timestamp may be from the agent's clock, either way."""

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _load_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            keys = [TrustedKey.parse(item) for item in value]
            ids = [key.key_id for key in keys]
            if len(set(ids)) != len(ids):
                raise ValueError(f"a key id is given twice: {sorted(ids)}")
            return {key.key_id: key for key in keys}
        return value

    declare_topology: bool = True
    """False: `virtbus provision` declared the topology; the agent only checks it is there,
    so its broker user needs no permission to declare, bind or delete anything."""

    # TLS: to the broker over amqps, and to a Docker engine over tcp:// (agent/tls.py)
    amqp_ca_file: FilePath | None = None
    """CA bundle that signed the broker's certificate; None: the system's CAs."""
    amqp_cert_file: FilePath | None = None
    """Client certificate for a broker that verifies its peers (with amqp_key_file)."""
    amqp_key_file: FilePath | None = None
    docker_ca_file: FilePath | None = None
    docker_cert_file: FilePath | None = None
    docker_key_file: FilePath | None = None
    _amqp_tls: ssl.SSLContext | None = PrivateAttr(default=None)
    _docker_tls: ssl.SSLContext | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _tls_contexts(self) -> Config:
        self._amqp_tls = tls.client_context(
            self.amqp_ca_file, self.amqp_cert_file, self.amqp_key_file
        )
        self._docker_tls = tls.client_context(
            self.docker_ca_file, self.docker_cert_file, self.docker_key_file
        )
        return self

    @property
    def amqp_ssl_context(self) -> ssl.SSLContext | None:
        """For amqps URLs; None: the system's CAs, no client certificate."""
        return self._amqp_tls

    @property
    def docker_ssl_context(self) -> ssl.SSLContext | None:
        """For a ``tcp://`` or ``https://`` engine URL; None: plain TCP or a socket."""
        return self._docker_tls

    @property
    def docker_endpoint(self) -> str | None:
        """The engine URL as aiodocker takes it with ``docker_ssl_context``."""
        return tls.docker_url(self.docker_url, self._docker_tls)

    # Host policy and hostile input (agent/host/policy.py)
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
