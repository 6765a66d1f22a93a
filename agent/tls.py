"""TLS client contexts for the broker (amqps) and for a Docker engine over TCP.

Both verify the peer's certificate and host name. A CA file replaces the system's CAs;
a certificate and key present a client certificate to a peer that asks for one.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

_TCP_SCHEME = re.compile(r"^(tcp|http)://")


def client_context(
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> ssl.SSLContext | None:
    """A verifying client context; None when nothing is set (the library's default, the
    system's CAs, then applies). Raises ``ValueError`` naming the file that cannot be
    used."""
    if ca_file is None and cert_file is None and key_file is None:
        return None
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both its certificate and its key file")
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None
        )
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"cannot use CA file {ca_file}: {error}") from None
    if cert_file is not None and key_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(
                f"cannot use client certificate {cert_file} with key {key_file}: {error}"
            ) from None
    return context


def docker_url(url: str | None, context: ssl.SSLContext | None) -> str | None:
    """The engine URL aiodocker needs: with TLS, ``tcp://`` becomes ``https://`` (aiodocker
    only rewrites it itself for contexts it builds)."""
    if url is None or context is None:
        return url
    return _TCP_SCHEME.sub("https://", url)
