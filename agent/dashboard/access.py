"""Who may look at the dashboard and who may act: users and roles from a file, bcrypt
password hashes, sessions in memory, a CSRF token per session.

The users file is TOML::

    [users.alice]
    role = "operator"        # or "read-only"
    password = "$2b$12$..."  # bcrypt; `virtbus dashboard-user add` writes it
"""

from __future__ import annotations

import secrets
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import bcrypt

from agent.errors import VirtbusError
from schemas.codes import ErrorCode

Role = Literal["read-only", "operator"]
ROLES: tuple[Role, ...] = ("read-only", "operator")
SESSION_S = 12 * 3600
LOCAL_USER = "local"
"""Who acts on a loopback dashboard that has no users file."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: bytes

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


@dataclass
class Session:
    user: str
    role: Role
    csrf: str
    expires: float

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def read_users(path: Path) -> dict[str, User]:
    """The users of ``path``; INVALID_ARG (naming the user) for a role or hash that is
    not one."""
    try:
        document = tomllib.loads(path.read_text()) if path.exists() else {}
    except tomllib.TOMLDecodeError as error:
        raise VirtbusError.of(ErrorCode.INVALID_ARG, f"{path}: {error}") from None
    users: dict[str, User] = {}
    for name, entry in document.get("users", {}).items():
        role = entry.get("role")
        hashed = str(entry.get("password", ""))
        if role not in ROLES or not hashed.startswith("$2"):
            raise VirtbusError.of(
                ErrorCode.INVALID_ARG,
                f"{path}: user {name!r} needs a role ({', '.join(ROLES)}) and a bcrypt hash",
            )
        users[name] = User(name, cast(Role, role), hashed.encode())
    return users


def write_users(path: Path, users: dict[str, User]) -> None:
    lines = []
    for user in sorted(users.values(), key=lambda u: u.name):
        lines += [
            f'[users."{user.name}"]',
            f'role = "{user.role}"',
            f'password = "{user.password_hash.decode()}"',
            "",
        ]
    path.write_text("\n".join(lines))
    path.chmod(0o600)


class Access:
    """Logins and sessions. Without users (``users is None``) everyone who reaches the
    page is ``local``, an operator: the server allows that on loopback only."""

    def __init__(self, users: dict[str, User] | None) -> None:
        self.users = users
        self._sessions: dict[str, Session] = {}
        self._dummy = bcrypt.hashpw(b"-", bcrypt.gensalt())

    @property
    def open(self) -> bool:
        return self.users is None

    def login(self, name: str, password: str) -> tuple[str, Session] | None:
        """A new session for a right password, else None (in about the same time)."""
        user = (self.users or {}).get(name)
        hashed = user.password_hash if user is not None else self._dummy
        if not bcrypt.checkpw(password.encode(), hashed) or user is None:
            return None
        return self._new(user.name, user.role)

    def anonymous(self) -> tuple[str, Session]:
        return self._new(LOCAL_USER, "operator")

    def _new(self, user: str, role: Role) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(user, role, secrets.token_urlsafe(32), time.time() + SESSION_S)
        self._sessions[token] = session
        return token, session

    def session(self, token: str | None) -> Session | None:
        session = self._sessions.get(token or "")
        if session is None:
            return None
        if session.expires < time.time():
            del self._sessions[token or ""]
            return None
        return session

    def logout(self, token: str | None) -> None:
        self._sessions.pop(token or "", None)

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        return presented is not None and secrets.compare_digest(session.csrf, presented)
