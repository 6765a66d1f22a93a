"""Signed commands: an orchestrator proves, message by message, that it may command a host.

An orchestrator signs each command with its key (an HMAC-SHA256 secret or an Ed25519
private key) and names the key in a header. An agent that trusts at least one key
refuses, with AUTH_FAILED, every command that is unsigned, signed by a key it does not
know, signed wrongly, stale (its timestamp outside the window around the agent's clock)
or replayed (its signature seen before, while still inside the window).

The signature covers these bytes: seven lines, each ended by a line feed, then the body
exactly as published. No line may contain a line feed itself.

    virtbus-command-v1
    <key id>
    <timestamp: Unix time in whole seconds, in decimal>
    <the exchange the command is published to>
    <the routing key it is published with>
    <the message_id property, or nothing>
    <the correlation_id property, or nothing>
    <body>

Headers: ``x-virtbus-key-id``, ``x-virtbus-timestamp`` (integer, or its decimal text),
``x-virtbus-signature`` (base64 of the 32-byte HMAC or the 64-byte Ed25519 signature).
The key's algorithm is the one the agent trusts it for; the sender cannot choose it.

Guarantees: key material never appears in a repr, a log line or an error message; a
signature is accepted once, and a copy of it is refused for as long as its timestamp is
inside the window (the agent's store keeps it across restarts); a broker redelivery of a
command already accepted is not a replay (it is the same delivery coming back, and the
dispatcher answers it from its recorded reply).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from pydantic import GetCoreSchemaHandler, SecretBytes
from pydantic_core import core_schema

from schemas.codes import ErrorCode
from schemas.errors import VirtbusError

log = logging.getLogger(__name__)

Algorithm = Literal["hmac-sha256", "ed25519"]
Reason = Literal["unsigned", "unknown_key", "bad_signature", "stale", "replayed"]
REASONS: tuple[Reason, ...] = get_args(Reason)

SCHEME = b"virtbus-command-v1"
KEY_ID_HEADER = "x-virtbus-key-id"
TIMESTAMP_HEADER = "x-virtbus-timestamp"
SIGNATURE_HEADER = "x-virtbus-signature"
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIN_SECRET_BYTES = 32
DEFAULT_WINDOW_S = 60.0
_TIMESTAMP = re.compile(r"^[0-9]{1,15}$")


def signed_bytes(
    key_id: str,
    timestamp: int,
    exchange: str,
    routing_key: str,
    message_id: str | None,
    correlation_id: str | None,
    body: bytes,
) -> bytes:
    """The exact bytes a signature covers (see the module's docstring)."""
    lines = [key_id, str(timestamp), exchange, routing_key, message_id or "", correlation_id or ""]
    if any("\n" in line for line in lines):
        raise ValueError("a signed field contains a line feed")
    return b"\n".join([SCHEME, *(line.encode() for line in lines), body])


def parse_key_reference(text: str) -> tuple[str, Algorithm, Path]:
    """``ID=ALGORITHM:PATH`` (``orch1=ed25519:/etc/virtbus/orch1.pem``) → its three parts."""
    key_id, equals, rest = text.strip().partition("=")
    algorithm, colon, path = rest.partition(":")
    if not equals or not colon or not path:
        raise ValueError(f"a key is ID=ALGORITHM:PATH, got {text!r}")
    if not KEY_ID.match(key_id):
        raise ValueError(f"key id {key_id!r} does not match {KEY_ID.pattern}")
    for known in get_args(Algorithm):
        if algorithm == known:
            return key_id, known, Path(path)
    raise ValueError(f"key {key_id}: algorithm {algorithm!r} is not one of {get_args(Algorithm)}")


def _read(key_id: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"key {key_id}: cannot read {path}: {error.strerror}") from None


def _secret(key_id: str, path: Path) -> SecretBytes:
    """An HMAC secret: the file's bytes, surrounding whitespace removed."""
    secret = _read(key_id, path).strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"key {key_id}: the HMAC secret in {path} is shorter than {MIN_SECRET_BYTES} bytes"
        )
    return SecretBytes(secret)


class SigningKey:
    """A key to sign commands with, on the orchestrator's side."""

    def __init__(
        self, key_id: str, algorithm: Algorithm, secret: SecretBytes | Ed25519PrivateKey
    ) -> None:
        if not KEY_ID.match(key_id):
            raise ValueError(f"key id {key_id!r} does not match {KEY_ID.pattern}")
        self.key_id = key_id
        self.algorithm = algorithm
        self._secret = secret

    @classmethod
    def hmac_sha256(cls, key_id: str, secret: bytes) -> SigningKey:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"key {key_id}: the HMAC secret is shorter than {MIN_SECRET_BYTES}")
        return cls(key_id, "hmac-sha256", SecretBytes(secret))

    @classmethod
    def load(cls, key_id: str, algorithm: Algorithm, path: Path) -> SigningKey:
        """From a file: the HMAC secret itself, or an unencrypted PEM Ed25519 private key."""
        if algorithm == "hmac-sha256":
            return cls(key_id, algorithm, _secret(key_id, path))
        data = _read(key_id, path)
        try:
            private = load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ValueError(
                f"key {key_id}: {path} is not an unencrypted PEM private key"
            ) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"key {key_id}: {path} is not an Ed25519 private key")
        return cls(key_id, algorithm, private)

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        """From ``ID=ALGORITHM:PATH``."""
        return cls.load(*parse_key_reference(text))

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, algorithm={self.algorithm!r})"

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._secret, Ed25519PrivateKey):
            return self._secret.sign(data)
        return hmac.digest(self._secret.get_secret_value(), data, hashlib.sha256)

    def headers(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        message_id: str | None,
        correlation_id: str | None,
        now: float | None = None,
    ) -> dict[str, str | int]:
        """The headers that sign this message, as published with these properties."""
        timestamp = int(time.time() if now is None else now)
        data = signed_bytes(
            self.key_id, timestamp, exchange, routing_key, message_id, correlation_id, body
        )
        return {
            KEY_ID_HEADER: self.key_id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: base64.b64encode(self.sign(data)).decode(),
        }


class TrustedKey:
    """A key the agent accepts signatures from: an HMAC secret or an Ed25519 public key."""

    def __init__(
        self, key_id: str, algorithm: Algorithm, material: SecretBytes | Ed25519PublicKey
    ) -> None:
        self.key_id = key_id
        self.algorithm = algorithm
        self._material = material

    @classmethod
    def load(cls, key_id: str, algorithm: Algorithm, path: Path) -> TrustedKey:
        """From a file: the HMAC secret itself, or a PEM Ed25519 public key."""
        if algorithm == "hmac-sha256":
            return cls(key_id, algorithm, _secret(key_id, path))
        data = _read(key_id, path)
        try:
            public = load_pem_public_key(data)
        except (ValueError, TypeError):
            raise ValueError(f"key {key_id}: {path} is not a PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError(f"key {key_id}: {path} is not an Ed25519 public key")
        return cls(key_id, algorithm, public)

    @classmethod
    def parse(cls, text: str) -> TrustedKey:
        """From ``ID=ALGORITHM:PATH``."""
        return cls.load(*parse_key_reference(text))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)

    def __repr__(self) -> str:
        return f"TrustedKey(key_id={self.key_id!r}, algorithm={self.algorithm!r})"

    def verify(self, data: bytes, signature: bytes) -> bool:
        if isinstance(self._material, Ed25519PublicKey):
            try:
                self._material.verify(signature, data)
            except InvalidSignature:
                return False
            return True
        expected = hmac.digest(self._material.get_secret_value(), data, hashlib.sha256)
        return hmac.compare_digest(expected, signature)


class Delivery(Protocol):
    """A command message as it arrived: what its signature covers, and its headers."""

    @property
    def body(self) -> bytes: ...
    @property
    def exchange(self) -> str: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def headers(self) -> Mapping[str, object]: ...
    @property
    def redelivered(self) -> bool: ...


class Replays(Protocol):
    def signature_seen(self, signature: bytes, until: float, now: float) -> bool:
        """Note ``signature`` until ``until``; True if it was noted already and still is."""
        ...


class Refused(VirtbusError):
    """A command that failed authentication (AUTH_FAILED): why, and under which key id
    (if any)."""

    def __init__(self, reason: Reason, detail: str, key_id: str | None = None) -> None:
        super().__init__(ErrorCode.AUTH_FAILED, detail)
        self.reason = reason
        self.key_id = key_id

    def __str__(self) -> str:
        return f"{self.reason.replace('_', ' ')}: {self.detail}"


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


class Verifier:
    """Checks each command's signature against the trusted keys, its timestamp against
    the window, and its signature against those already accepted."""

    def __init__(
        self,
        keys: Mapping[str, TrustedKey],
        window_s: float,
        replays: Replays,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = dict(keys)
        self.window_s = window_s
        self._replays = replays
        self._clock = clock
        log.info(
            "signed commands required: keys %s; window ±%g s",
            ", ".join(f"{key.key_id} ({key.algorithm})" for key in self._keys.values()),
            window_s,
        )

    def check(self, delivery: Delivery | None) -> str:
        """The key id that signed this delivery; raises ``Refused`` if it is not authentic."""
        headers = delivery.headers if delivery is not None else {}
        missing = [h for h in (KEY_ID_HEADER, SIGNATURE_HEADER) if h not in headers]
        if delivery is None or missing:
            raise Refused("unsigned", f"no {' and no '.join(missing)} header")
        key_id = _text(headers[KEY_ID_HEADER])
        if key_id is None:
            raise Refused("bad_signature", f"{KEY_ID_HEADER} is not text")
        key = self._keys.get(key_id)
        if key is None:
            raise Refused("unknown_key", "no trusted key has this id", key_id[:64])
        timestamp = self._timestamp(headers.get(TIMESTAMP_HEADER), key_id)
        signature = self._signature(headers[SIGNATURE_HEADER], key_id)
        try:
            data = signed_bytes(
                key_id,
                timestamp,
                delivery.exchange,
                delivery.routing_key,
                delivery.message_id,
                delivery.correlation_id,
                delivery.body,
            )
        except ValueError as error:
            raise Refused("bad_signature", str(error), key_id) from None
        if not key.verify(data, signature):
            raise Refused("bad_signature", f"the signature does not match key '{key_id}'", key_id)
        now = self._clock()
        if abs(now - timestamp) > self.window_s:
            side = "behind" if timestamp < now else "ahead of"
            raise Refused(
                "stale",
                f"timestamp {timestamp} is {abs(now - timestamp):.0f} s {side} the agent's clock, "
                f"outside ±{self.window_s:g} s (key '{key_id}')",
                key_id,
            )
        seen = self._replays.signature_seen(signature, timestamp + self.window_s, now)
        if seen and not delivery.redelivered:
            raise Refused(
                "replayed", f"this signature by key '{key_id}' was accepted before", key_id
            )
        return key_id

    @staticmethod
    def _timestamp(value: object, key_id: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        text = _text(value)
        if text is None or not _TIMESTAMP.match(text):
            raise Refused(
                "bad_signature", f"{TIMESTAMP_HEADER} is missing or not Unix seconds", key_id
            )
        return int(text)

    @staticmethod
    def _signature(value: object, key_id: str) -> bytes:
        text = _text(value)
        try:
            return base64.b64decode(text or "", validate=True)
        except ValueError:
            raise Refused("bad_signature", f"{SIGNATURE_HEADER} is not base64", key_id) from None
