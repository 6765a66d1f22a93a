"""Registry credentials on disk: owner-only modes, whole-file replacement, nothing shown."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from types import SimpleNamespace

import aiodocker
import pytest
from pydantic import SecretStr

from agent.errors import VirtError
from agent.host.credentials import RegistryCredentials
from agent.host.driver import DockerDriver
from schemas.codes import ErrorCode

PASSWORD = "hunter2-registry-password"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_login_is_kept_owner_only_and_survives_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "h1" / "registries.json"
    credentials = RegistryCredentials(path)
    credentials.login("127.0.0.1:5443", "tester", SecretStr(PASSWORD))
    assert (mode(path.parent), mode(path)) == (0o700, 0o600)
    assert json.loads(path.read_text()) == {
        "127.0.0.1:5443": {"username": "tester", "password": PASSWORD}
    }
    again = RegistryCredentials(path)
    assert again.for_pulls() == {"127.0.0.1:5443": ("tester", PASSWORD)}
    assert PASSWORD not in repr(again)
    assert PASSWORD not in caplog.text
    assert "logged in to registry 127.0.0.1:5443 as tester" in caplog.text
    assert again.logout("127.0.0.1:5443")
    assert not again.logout("127.0.0.1:5443")
    assert json.loads(path.read_text()) == {}
    assert RegistryCredentials(path).for_pulls() == {}


def test_loose_modes_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "h1" / "registries.json"
    RegistryCredentials(path).login("r.example", "u", SecretStr(PASSWORD))
    path.parent.chmod(0o755)
    path.chmod(0o644)
    RegistryCredentials(path)
    assert (mode(path.parent), mode(path)) == (0o700, 0o600)


def test_a_leftover_partial_file_does_not_loosen_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "registries.json"
    partial = path.with_suffix(".tmp")
    partial.write_text("left over")
    partial.chmod(0o666)
    RegistryCredentials(path).login("r.example", "u", SecretStr(PASSWORD))
    assert mode(path) == 0o600
    assert not partial.exists()


@pytest.mark.parametrize(
    "content",
    [b"not json " + PASSWORD.encode(), json.dumps({"r.example": {"password": PASSWORD}}).encode()],
    ids=["garbage", "no-username"],
)
def test_an_unreadable_file_means_no_logins_and_is_reported_without_its_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "registries.json"
    path.write_bytes(content)
    path.chmod(0o600)
    assert RegistryCredentials(path).for_pulls() == {}
    assert "ignoring registry logins" in caplog.text
    assert PASSWORD not in caplog.text


class _Images:
    """The engine's image API as far as a pull goes: records it, then fails it."""

    def __init__(self) -> None:
        self.pulls: list[tuple[str, dict[str, str] | None]] = []

    async def pull(self, reference: str, *, auth: dict[str, str] | None = None) -> None:
        self.pulls.append((reference, auth))
        raise aiodocker.DockerError(500, "no route to the registry")


@pytest.mark.parametrize(
    ("image", "reference", "registry"),
    [
        ("127.0.0.1:5443/virtbus/test:1", "127.0.0.1:5443/virtbus/test:1", "127.0.0.1:5443"),
        ("alpine:3", "docker.io/library/alpine:3", "docker.io"),
        ("team/app:2", "team/app:2", "docker.io"),
    ],
)
async def test_a_pull_sends_the_login_of_the_image_registry_and_says_so_when_it_fails(
    image: str, reference: str, registry: str
) -> None:
    images = _Images()
    driver = DockerDriver("h1", pids_limit=1024)
    driver._docker = SimpleNamespace(images=images)  # type: ignore[assignment]
    logins = {registry: ("tester", PASSWORD), "other.example": ("x", "y")}
    with pytest.raises(VirtError) as raised:
        await driver._pull(image, logins)
    auth = {"username": "tester", "password": PASSWORD, "serveraddress": registry}
    assert images.pulls == [(reference, auth)]
    assert raised.value.code == ErrorCode.OPERATION_FAILED
    assert raised.value.detail == (
        f"cannot pull image '{image}' from registry '{registry}': the engine could not "
        "pull it, with a host.login (engine: no route to the registry)"
    )
    with pytest.raises(VirtError) as anonymous:
        await driver._pull(image, {})
    assert images.pulls[-1] == (reference, None)
    assert "without a host.login (engine: no route to the registry)" in anonymous.value.detail
    assert PASSWORD not in str(raised.value) + str(anonymous.value)
