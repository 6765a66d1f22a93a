"""The cause of a failed pull, read from the engine's own words (as Docker 20.10 and
later word them)."""

from __future__ import annotations

import pytest

from agent.host.driver import pull_cause

REGISTRY = "registry.example:5000"


@pytest.mark.parametrize(
    ("engine", "logged_in", "cause"),
    [
        (
            'Get "https://nowhere.invalid/v2/": dial tcp: lookup nowhere.invalid on '
            "10.0.0.53:53: no such host",
            False,
            "the registry's name 'registry.example:5000' does not resolve (DNS)",
        ),
        (
            'Get "https://registry.example:5000/v2/": x509: certificate signed by unknown '
            "authority",
            False,
            "the registry's TLS certificate is not trusted (TLS)",
        ),
        (
            "unauthorized: authentication required",
            True,
            "the registry refused the host.login's credentials (auth)",
        ),
        (
            "pull access denied for virtbus/x, repository does not exist or may require "
            "'docker login': denied: requested access to the resource is denied",
            False,
            "the registry wants a login and the host has no host.login for it (auth)",
        ),
        (
            "manifest for registry.example:5000/virtbus/x:2 not found: manifest unknown: "
            "manifest unknown",
            False,
            "the registry has no such image (not found)",
        ),
        (
            'Get "https://registry.example:5000/v2/": dial tcp 192.0.2.1:5000: connect: '
            "connection refused",
            False,
            "the registry at 'registry.example:5000' cannot be reached (network)",
        ),
        (
            "read tcp 127.0.0.1:1->127.0.0.1:5443: read: connection reset by peer",
            True,
            "the engine could not pull it, with a host.login",
        ),
    ],
)
def test_the_cause_is_named(engine: str, logged_in: bool, cause: str) -> None:
    assert pull_cause(engine, REGISTRY, logged_in) == cause
