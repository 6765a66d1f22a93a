"""The gateway's guards, as one settings model read like every virtbus setting: the
options of ``virtbus gateway``, then ``VIRTBUS_GATEWAY_*`` variables
(``VIRTBUS_GATEWAY_MAX_CLIENTS``…), then the defaults, which are libvirtd's
(``libvirtd.conf``) where libvirtd has the setting."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
# a header and a 16 MiB payload: eight times the longest string a procedure takes
DEFAULT_MAX_PACKET = 4 + 24 + 16 * MIB


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIRTBUS_GATEWAY_", frozen=True, extra="forbid")

    max_clients: int = Field(5000, ge=1, description="libvirtd's max_clients")
    max_anonymous_clients: int = Field(
        20, ge=1, description="clients not yet authenticated (libvirtd's max_anonymous_clients)"
    )
    max_client_requests: int = Field(
        5,
        ge=1,
        description="calls in flight per client; no further packet is read until one is "
        "answered (libvirtd's max_client_requests)",
    )
    max_packet_bytes: int = Field(
        DEFAULT_MAX_PACKET,
        ge=28,
        description="a client announcing a longer packet is closed before it is read",
    )
    max_client_callbacks: int = Field(128, ge=1, description="event callbacks per client")
    handshake_timeout_s: float = Field(
        10.0, gt=0, description="from accepting a client until its CONNECT_OPEN succeeds"
    )
    packet_timeout_s: float = Field(
        30.0, gt=0, description="from a packet's first byte to its last (slow clients)"
    )
    keepalive_interval_s: float = Field(5.0, gt=0, description="libvirtd's keepalive_interval")
    keepalive_count: int = Field(5, ge=0, description="libvirtd's keepalive_count")
    tls_allowed_dn: tuple[str, ...] = Field(
        (), description="libvirtd's tls_allowed_dn_list: wildcards * and ?; empty admits any"
    )
    authz: Path | None = Field(None, description="the authorization file (TOML)")
    sasl_users: Path | None = Field(
        None,
        description="require a SASL login (SCRAM-SHA-256) checked against this users file "
        "('virtbus gateway-user'); needs --tls-cert",
    )
    log_interval_s: float = Field(
        60.0, gt=0, description="an error at a limit is logged once per interval"
    )
