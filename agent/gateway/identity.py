"""Who is on a gateway connection.

A connection starts anonymous; a verified TLS client certificate makes it an ``x509``
identity (its subject DN), a completed SASL login a ``sasl`` identity (its username).
Authorization and the command log both read the connection's identity from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IdentityKind = Literal["anonymous", "x509", "sasl"]


@dataclass(frozen=True)
class Identity:
    kind: IdentityKind
    name: str
    """The certificate's subject DN, the SASL username, or the peer's address."""

    @classmethod
    def anonymous(cls, peer: str) -> Identity:
        return cls("anonymous", peer)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"
