"""Who may do what through the gateway: the authorization file, and identities from
client certificates.

The file (TOML) lists rules; with a file, whatever no rule allows is denied::

    [[allow]]
    identity = "x509:C=GB,O=Example,CN=*"   # or "sasl:alice", "anonymous"
    hosts = ["web-*"]                        # host names, wildcards * and ?
    groups = ["prod"]                        # or the hosts' groups (host.get_info)
    access = "read-only"                     # or "full" (the default)
    permissions = ["domain:read", "domain:start"]   # libvirt ACL names; all if absent

A connection may call a procedure when one rule that names its identity and its host
(or one of the host's groups) grants every permission the procedure needs (``acl.py``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.gateway.acl import reads
from agent.gateway.identity import Identity


@lru_cache(maxsize=1024)
def _pattern(wildcards: str) -> re.Pattern[str]:
    return re.compile(
        ".*".join(".".join(map(re.escape, p.split("?"))) for p in wildcards.split("*"))
    )


def matches(wildcards: str, text: str) -> bool:
    """GLib's g_pattern_match_simple, as libvirt matches its allowed lists: ``*`` any
    run of characters, ``?`` any one, everything else itself; the whole text."""
    return _pattern(wildcards).fullmatch(text) is not None


def subject_dn(der: bytes) -> str:
    """A certificate's subject as libvirt (GnuTLS) writes it: its attributes in the
    certificate's order, ``C=GB,O=Example,CN=client``."""
    name = x509.load_der_x509_certificate(der).subject
    return ",".join(rdn.rfc4514_string() for rdn in name.rdns)


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: str = Field(min_length=1)
    hosts: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    access: Literal["full", "read-only"] = "full"
    permissions: frozenset[str] | None = None

    def names(self, identity: Identity) -> bool:
        if self.identity == "anonymous":
            return identity.kind == "anonymous"
        return matches(self.identity, str(identity))

    def covers(self, host: str, groups: frozenset[str]) -> bool:
        return any(matches(p, host) for p in self.hosts) or any(
            matches(p, g) for p in self.groups for g in groups
        )

    def allows(self, permission: str) -> bool:
        if self.permissions is not None and permission not in self.permissions:
            return False
        return self.access == "full" or reads(permission)


class PolicyFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Grant:
    """What one identity may do on one host."""

    rules: tuple[Rule, ...]

    def allows(self, permission: str) -> bool:
        return any(rule.allows(permission) for rule in self.rules)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]

    @classmethod
    def load(cls, path: Path) -> Policy:
        """ValueError naming the file for a file that cannot be read or is not a policy."""
        try:
            document = tomllib.loads(path.read_text())
            return cls(PolicyFile.model_validate(document).allow)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"cannot read the authorization file {path}: {error}") from None
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
                for item in error.errors(include_url=False, include_input=False)
            )
            raise ValueError(f"the authorization file {path} is invalid: {problems}") from None

    def needs_groups(self, identity: Identity) -> bool:
        """Whether deciding for ``identity`` needs its hosts' groups."""
        return any(rule.groups and rule.names(identity) for rule in self.rules)

    def grant(self, identity: Identity, host: str, groups: frozenset[str]) -> Grant | None:
        """The rules for ``identity`` on ``host``; None when no rule names both."""
        found = tuple(r for r in self.rules if r.names(identity) and r.covers(host, groups))
        return Grant(found) if found else None
