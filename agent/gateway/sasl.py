"""SASL logins to the gateway: SCRAM-SHA-256 (RFC 5802, RFC 7677) against a users file.

The users file keeps, for each user, only what SCRAM lets a server keep: a random salt,
an iteration count and the two keys derived from the salted password (StoredKey,
ServerKey), in PostgreSQL's verifier format. Nobody can log in with a stolen file, and
recovering a password from it takes a PBKDF2 brute force per user. The protocol work is
the ``scramp`` library's; this module adds the file, the libvirt exchange around it
(``AUTH_SASL_INIT`` / ``START`` / ``STEP``) and the rules libvirtd keeps: a failed login
starts over from INIT, a completed one cannot be repeated.

SCRAM has no security layer (its SSF is 0), so libvirt's client offers it only on a
connection that is already secure: ``virtbus+tls://``. See docs/gateway-sasl.md.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import scramp

from schemas.codes import ErrorCode
from schemas.errors import VirtbusError

MECHANISM = "SCRAM-SHA-256"
# RFC 7677's floor, and the most Cyrus SASL's client (libvirt's) will compute
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 65536
DEFAULT_ITERATIONS = MAX_ITERATIONS
SALT_BYTES = 16
MAX_FAILURES = 3
"""Failed logins one connection may make; the gateway closes it after the last."""
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
"""Names need no SCRAM escaping (``=2C``, ``=3D``) and are safe to log as they are."""
_VERIFIER = re.compile(
    r"SCRAM-SHA-256\$(?P<iterations>[0-9]+):(?P<salt>[A-Za-z0-9+/=]+)"
    r"\$(?P<stored>[A-Za-z0-9+/=]+):(?P<server>[A-Za-z0-9+/=]+)"
)
_KEY_BYTES = hashlib.sha256().digest_size
_SCRAM = scramp.ScramMechanism(MECHANISM)


class UsersFileError(VirtbusError, ValueError):
    """A users file that cannot be read or does not parse; says which line."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.INVALID_ARG, detail)

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Verifier:
    """What the server keeps of one password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def derive(
        cls, password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
    ) -> Verifier:
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise ValueError(
                f"{iterations} iterations: libvirt's client computes "
                f"{MIN_ITERATIONS} to {MAX_ITERATIONS}"
            )
        salt_bytes, stored, server, count = _SCRAM.make_auth_info(
            password, iterations, salt if salt is not None else secrets.token_bytes(SALT_BYTES)
        )
        return cls(salt_bytes, count, stored, server)

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64)."""
        match = _VERIFIER.fullmatch(text)
        if match is None:
            raise ValueError("not a SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")
        try:
            salt, stored, server = (
                base64.b64decode(match[part], validate=True)
                for part in ("salt", "stored", "server")
            )
        except binascii.Error:
            raise ValueError("bad base64") from None
        iterations = int(match["iterations"])
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS or not salt:
            raise ValueError(
                f"an empty salt, or iterations outside {MIN_ITERATIONS}-{MAX_ITERATIONS}"
            )
        if len(stored) != _KEY_BYTES or len(server) != _KEY_BYTES:
            raise ValueError(f"keys must be {_KEY_BYTES} bytes")
        return cls(salt, iterations, stored, server)

    def __str__(self) -> str:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return (
            f"{MECHANISM}${self.iterations}:{b64(self.salt)}"
            f"${b64(self.stored_key)}:{b64(self.server_key)}"
        )


def check_username(name: str) -> str:
    if USERNAME.fullmatch(name) is None:
        raise ValueError(
            f"{name!r} is not a user name: 1-64 of letters, digits and . _ @ + -, "
            "starting with a letter or digit"
        )
    return name


def read_users(path: Path) -> dict[str, Verifier]:
    """``NAME:VERIFIER`` lines; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UsersFileError(f"cannot read the users file {path}: {error}") from None
    users: dict[str, Verifier] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, verifier = line.partition(":")
        try:
            check_username(name)
            users[name] = Verifier.parse(verifier)
        except ValueError as error:
            raise UsersFileError(f"{path}, line {number}: {error}") from None
    return users


def write_users(path: Path, users: dict[str, Verifier]) -> None:
    """Replace the file whole (a reader never sees half of it), readable by its owner only."""
    lines = [f"{name}:{users[name]}\n" for name in sorted(users)]
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write("".join(lines))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def set_user(path: Path, name: str, password: str, iterations: int = DEFAULT_ITERATIONS) -> bool:
    """Add a user or change its password; True if it is new. The password is not kept."""
    if not password:
        raise ValueError("an empty password")
    check_username(name)
    users = read_users(path) if path.exists() else {}
    new = name not in users
    users[name] = Verifier.derive(password, iterations)
    write_users(path, users)
    return new


def remove_user(path: Path, name: str) -> bool:
    """True if the user was there."""
    users = read_users(path)
    if users.pop(name, None) is None:
        return False
    write_users(path, users)
    return True


class Users:
    """The users file as the gateway reads it: loaded once, read again when it changes
    (a user added while the gateway runs can log in at once). A file that stops parsing
    keeps the last good list in force."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        self._users = read_users(path)
        self._decoy_key = secrets.token_bytes(32)

    def _stat(self) -> tuple[int, int, int]:
        try:
            stat = self.path.stat()
        except OSError as error:
            raise UsersFileError(f"cannot read the users file {self.path}: {error}") from None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def refresh(self) -> None:
        """Read the file again if it changed; raises UsersFileError if it no longer
        parses (the last good list stays in force)."""
        stamp = self._stat()
        if stamp != self._stamp:
            users = read_users(self.path)
            self._users, self._stamp = users, stamp

    def __contains__(self, name: str) -> bool:
        return name in self._users

    def verifier(self, name: str) -> Verifier:
        """The user's verifier; for a name not in the file, a decoy that no proof
        matches, with a salt stable per name, so the exchange does not tell who exists."""
        known = self._users.get(name)
        if known is not None:
            return known
        digest = hmac.new(self._decoy_key, name.encode(), hashlib.sha256).digest()
        return Verifier(digest[:SALT_BYTES], DEFAULT_ITERATIONS, digest, digest)


class SaslFailure(VirtbusError):
    """A login that failed; ``str()`` is the reason for the gateway's log (never any
    secret). The client is told only libvirt's "authentication failed"."""

    def __init__(self, reason: str, username: str | None = None) -> None:
        super().__init__(ErrorCode.AUTH_FAILED, reason)
        self.username = username

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Challenge:
    """``remote_auth_sasl_start_ret`` / ``_step_ret``: ``None`` data is SASL's "no
    data", which libvirt keeps apart from empty data."""

    complete: bool
    data: bytes | None


class _Stage(enum.Enum):
    IDLE = enum.auto()
    INITIALIZED = enum.auto()
    AWAIT_CLIENT_FIRST = enum.auto()
    AWAIT_CLIENT_FINAL = enum.auto()
    DONE = enum.auto()


class SaslLogin:
    """One connection's login, stage by stage as libvirtd runs it: INIT, START, then
    STEP until complete. Any failure (a call out of order included) raises SaslFailure
    and returns the login to before INIT. Once complete, ``username`` is set and the
    login cannot run again."""

    def __init__(self, users: Users) -> None:
        self._users = users
        self._stage = _Stage.IDLE
        self._server: scramp.core.ScramServer | None = None
        self._claimed: str | None = None
        self.username: str | None = None
        self.failures = 0

    @property
    def done(self) -> bool:
        return self._stage is _Stage.DONE

    @property
    def exhausted(self) -> bool:
        """True once the connection has used up its failed logins."""
        return self.failures >= MAX_FAILURES

    def init(self) -> str:
        """AUTH_SASL_INIT: the mechanisms offered, comma-separated as libvirtd lists them."""
        if self._stage is not _Stage.IDLE:
            self._fail(f"SASL init in stage {self._stage.name.lower()}")
        self._stage = _Stage.INITIALIZED
        return MECHANISM

    def start(self, mechanism: str, data: bytes | None) -> Challenge:
        """AUTH_SASL_START with the client's chosen mechanism and first message, if any."""
        if self._stage is not _Stage.INITIALIZED:
            self._fail(f"SASL start in stage {self._stage.name.lower()}")
        if mechanism != MECHANISM:
            self._fail(f"mechanism {mechanism[:40]!r} is not offered")
        try:
            self._users.refresh()
        except UsersFileError as error:
            self._fail(f"the users file is unusable, the last good list is used: {error}")
        self._server = _SCRAM.make_server(self._lookup)
        if data is None:
            self._stage = _Stage.AWAIT_CLIENT_FIRST
            return Challenge(False, b"")
        return self._client_first(data)

    def step(self, data: bytes | None) -> Challenge:
        """AUTH_SASL_STEP with the client's next message."""
        if self._stage is _Stage.AWAIT_CLIENT_FIRST:
            return self._client_first(data)
        if self._stage is not _Stage.AWAIT_CLIENT_FINAL:
            self._fail(f"SASL step in stage {self._stage.name.lower()}")
        assert self._server is not None
        try:
            self._server.set_client_final(self._text(data))
            final = self._server.get_server_final()
        except scramp.ScramException as error:
            known = self._claimed is not None and self._claimed in self._users
            self._fail("wrong password" if known else "unknown user", error)
        self.username, self._server = self._claimed, None
        self._stage = _Stage.DONE
        return Challenge(True, final.encode())

    def _client_first(self, data: bytes | None) -> Challenge:
        assert self._server is not None
        try:
            self._server.set_client_first(self._text(data))
            first = self._server.get_server_first()
        except scramp.ScramException as error:
            self._fail("a malformed or refused first message", error)
        self._stage = _Stage.AWAIT_CLIENT_FINAL
        return Challenge(False, first.encode())

    def _lookup(self, name: str) -> tuple[bytes, bytes, bytes, int]:
        """scramp's auth_fn: the verifier of the name the client claims."""
        if USERNAME.fullmatch(name) is None:
            raise scramp.ScramException("a user name the users file cannot hold")
        self._claimed = name
        verifier = self._users.verifier(name)
        return verifier.salt, verifier.stored_key, verifier.server_key, verifier.iterations

    def _text(self, data: bytes | None) -> str:
        if data is None:
            self._fail("no data where SCRAM needs a message")
        try:
            return data.decode()
        except UnicodeDecodeError:
            self._fail("a message that is not UTF-8")

    def _fail(self, reason: str, cause: Exception | None = None) -> NoReturn:
        claimed = self._claimed
        if self._stage is not _Stage.DONE:
            self._stage, self._server, self._claimed = _Stage.IDLE, None, None
        self.failures += 1
        detail = f"{reason} ({cause})" if cause is not None else reason
        raise SaslFailure(detail, claimed) from None
