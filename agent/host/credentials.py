"""Registry credentials kept by the agent for image pulls (``host.login``).

Guarantees:
- Passwords stay ``SecretStr`` in memory: no repr, log line or error message shows them.
- On disk they are in one JSON file that only its owner can read or write (0600), in a
  directory only its owner can enter (0700); both are tightened if found looser.
- A login or logout is on disk when it returns: the file is replaced whole, never left
  half-written.
- A file that cannot be read as credentials is reported (without its content) and the
  agent starts with no logins rather than not at all.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_serializer,
)

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


class _Login(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    username: str
    password: SecretStr

    @field_serializer("password", when_used="json")
    def _reveal_on_disk(self, password: SecretStr) -> str:
        return password.get_secret_value()


_FILE = TypeAdapter(dict[str, _Login])


def _tighten(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) & ~mode:
        log.warning("%s was readable by others; now mode %o", path, mode)
        path.chmod(mode)


class RegistryCredentials:
    """Registry → (username, password), in a file only its owner can read."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._entries: dict[str, _Login] = {}
        if not path.exists():
            return
        _tighten(path.parent, DIRECTORY_MODE)
        _tighten(path, FILE_MODE)
        try:
            self._entries = _FILE.validate_json(path.read_bytes())
        except (OSError, ValidationError) as error:
            problem = error.strerror if isinstance(error, OSError) else "not a credentials file"
            log.warning("ignoring registry logins in %s: %s", path, problem)

    def __repr__(self) -> str:
        return f"RegistryCredentials(registries={sorted(self._entries)})"

    def login(self, registry: str, username: str, password: SecretStr) -> None:
        self._entries[registry] = _Login(username=username, password=password)
        self._save()
        log.info("logged in to registry %s as %s", registry, username)

    def logout(self, registry: str) -> bool:
        if self._entries.pop(registry, None) is None:
            return False
        self._save()
        log.info("logged out of registry %s", registry)
        return True

    def for_pulls(self) -> dict[str, tuple[str, str]]:
        """Registry → (username, password in clear): for the engine's pull request only."""
        return {
            registry: (entry.username, entry.password.get_secret_value())
            for registry, entry in self._entries.items()
        }

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
        _tighten(self._path.parent, DIRECTORY_MODE)
        partial = self._path.with_suffix(".tmp")
        partial.unlink(missing_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(descriptor, "wb") as file:
            file.write(_FILE.dump_json(self._entries))
            file.flush()
            os.fsync(file.fileno())
        partial.replace(self._path)
