"""Configuration: flags, then VIRTBUS_* variables, then defaults; secrets masked."""

from __future__ import annotations

import argparse
import json

import pytest

from agent.cli import build_parser, config_from, kib, main
from agent.settings import DEFAULT_AMQP_URL, mask_url


def parse(*argv: str) -> dict[str, object]:
    config = config_from(build_parser().parse_args(["agent", *argv]))
    return config.model_dump()


def test_flags_beat_environment_beats_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTBUS_HOST", "from-env")
    monkeypatch.setenv("VIRTBUS_GROUPS", "red, blue")
    monkeypatch.setenv("VIRTBUS_QUEUE_TYPE", "classic")
    config = parse("--host", "from-flag", "--concurrency", "4")
    assert config["host"] == "from-flag"
    assert config["groups"] == ["red", "blue"]
    assert config["queue_type"] == "classic"
    assert config["concurrency"] == 4
    assert config["prefetch"] == 64


def test_repeated_group_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTBUS_GROUPS", "ignored")
    assert parse("--group", "a", "--group", "b")["groups"] == ["a", "b"]


def test_defaults() -> None:
    config = config_from(build_parser().parse_args(["agent", "--host", "h1"]))
    assert config.amqp_url.get_secret_value() == DEFAULT_AMQP_URL
    assert config.queue_type == "quorum"
    assert str(config.host_dir) == "/var/lib/virtbus/h1"


def test_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTBUS_AMQP_URL", "amqp://agent:s3cret-pw@broker:5671/vh")
    config = config_from(build_parser().parse_args(["agent", "--host", "h1"]))
    assert "s3cret-pw" not in repr(config)
    assert "s3cret-pw" not in str(config)
    assert "s3cret-pw" not in config.describe()
    assert "amqp://agent:***@broker:5671/vh" in config.describe()
    assert mask_url("amqp://127.0.0.1/") == "amqp://127.0.0.1/"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--host", "Bad_Host"],
            "error: --host (VIRTBUS_HOST): 'Bad_Host' is not a host name: lowercase "
            "letters, digits and '-' (not first or last), at most 63\n",
        ),
        (
            ["--concurrency", "0"],
            "error: --concurrency (VIRTBUS_CONCURRENCY): should be greater than or equal to 1\n",
        ),
        (
            ["--group", "ok", "--group", "Not_Ok"],
            "error: --group (VIRTBUS_GROUPS): 'Not_Ok' is not a host name: lowercase "
            "letters, digits and '-' (not first or last), at most 63\n",
        ),
    ],
)
def test_invalid_configuration_is_named_by_flag_and_variable(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line per problem: the flag, the variable, what was given, what is expected;
    no pydantic boilerplate nor link."""
    assert main(["agent", *argv]) == 2
    assert capsys.readouterr().err == said


def test_a_secret_setting_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIRTBUS_AMQP_URL", "amqp://agent:s3cret-pw@broker/")
    monkeypatch.setenv("VIRTBUS_CONCURRENCY", "many")
    assert main(["agent", "--host", "h1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --concurrency (VIRTBUS_CONCURRENCY): 'many' is not an integer\n"


def test_schema_command_prints_every_wire_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    assert set(schemas) == {"Command", "Reply", "Event", "DomainSpec", "DomainRecord"}
    assert "domain.set_vcpus" in json.dumps(schemas["Command"])


@pytest.mark.parametrize(
    ("text", "expected"), [("65536", 65536), ("64M", 65536), ("1GiB", 1048576), ("8k", 8)]
)
def test_sizes_take_virsh_units(text: str, expected: int) -> None:
    assert kib(text) == expected


@pytest.mark.parametrize("text", ["", "12X", "M", "1.5G", "-4"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        kib(text)
