"""The CLI's parser as people meet it: virsh's answer to an unknown command, a word of
help for every option, connection options apart, no markup, completion scripts and a
man page generated from it, and a host name checked before anything is sent."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest
from build_manpages.manpage import Manpage

from agent.cli import build_parser, main
from agent.cli.completion import script


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(
        parser: argparse.ArgumentParser, path: str
    ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")

    yield from walk(build_parser(), "virtbus")


def test_a_mistyped_command_gets_virshs_message_and_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["lsit"]) == 1
    assert capsys.readouterr().err == (
        "error: unknown command: 'lsit'\n"
        "did you mean 'list'?\n"
        "(virtbus --help lists every command)\n"
    )


def test_an_unknown_command_without_a_close_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "frobnicate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command: 'frobnicate'\n")
    assert "did you mean" not in err


def test_every_option_has_help() -> None:
    missing = [
        f"{path} {action.option_strings or action.dest}"
        for path, parser in _parsers()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert missing == []


def test_no_markup_in_help() -> None:
    marked = [path for path, parser in _parsers() if "`" in parser.format_help()]
    assert marked == []


def test_connection_options_are_a_group_of_their_own() -> None:
    parsers = dict(_parsers())
    for verb in ("virtbus list", "virtbus start", "virtbus event", "virtbus hosts"):
        groups = {group.title: group for group in parsers[verb]._action_groups}
        connection = {o for a in groups["connection"]._group_actions for o in a.option_strings}
        assert connection == {
            "-c", "--connect", "--signing-key", "--timeout", "--ca-file", "--cert-file",
            "--key-file",
        }  # fmt: skip
        options = {o for a in groups["options"]._group_actions for o in a.option_strings}
        assert not options & connection


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_knows_every_command(shell: str) -> None:
    text = script(shell)
    verbs = [path.split()[1] for path, _ in _parsers() if path.count(" ") == 1]
    assert len(verbs) > 20
    for verb in verbs:
        assert verb in text, verb
    assert "--all-hosts" in text


def test_the_man_page_is_generated_from_the_parser() -> None:
    page = str(Manpage(build_parser()))
    assert page.startswith(".TH VIRTBUS")
    for path, _ in _parsers():
        assert path == "virtbus" or f"usage: {path} [" in page.replace("\\-", "-"), path


@pytest.mark.parametrize("argv", [["list", "--host", "UXNC1"], ["list", "--group", "A_b"]])
def test_a_host_name_is_checked_before_sending(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "is not a host or group name" in capsys.readouterr().err
