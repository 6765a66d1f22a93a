"""Registry credentials kept by the agent for image pulls (``host.login``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import SecretStr


class RegistryCredentials:
    """Registry → (username, password), in a file only its owner can read.

    Passwords stay ``SecretStr`` in memory so that no repr or log line can show them.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._entries: dict[str, tuple[str, SecretStr]] = {}
        if path.exists():
            stored = json.loads(path.read_text())
            self._entries = {
                registry: (entry["username"], SecretStr(entry["password"]))
                for registry, entry in stored.items()
            }

    def __repr__(self) -> str:
        return f"RegistryCredentials(registries={sorted(self._entries)})"

    def login(self, registry: str, username: str, password: SecretStr) -> None:
        self._entries[registry] = (username, password)
        self._save()

    def logout(self, registry: str) -> bool:
        if self._entries.pop(registry, None) is None:
            return False
        self._save()
        return True

    def for_pulls(self) -> dict[str, tuple[str, str]]:
        return {
            registry: (username, password.get_secret_value())
            for registry, (username, password) in self._entries.items()
        }

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        document = {
            registry: {"username": username, "password": password.get_secret_value()}
            for registry, (username, password) in self._entries.items()
        }
        partial = self._path.with_suffix(".tmp")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(document, file)
        partial.replace(self._path)
