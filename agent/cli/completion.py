"""``completion``: the shell completion script for bash or zsh, made from the parser by
shtab, so it knows every command and option of this version."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli.config import CliConfig

if TYPE_CHECKING:
    from agent.cli.options import Commands

SHELLS = ("bash", "zsh")


def register(commands: Commands, config: CliConfig) -> None:
    parser = commands.add_parser(
        "completion",
        help="print the shell completion script for bash or zsh",
        description="Print the shell completion script. bash: "
        'eval "$(virtbus completion bash)" in ~/.bashrc; zsh: '
        "virtbus completion zsh > ~/.zfunc/_virtbus, with ~/.zfunc on $fpath.",
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell the script is for")
    parser.set_defaults(main=main)


def script(shell: str) -> str:
    """The completion script of ``shell`` for the whole ``virtbus`` parser."""
    import shtab

    from agent.cli import build_parser

    text: str = shtab.complete(build_parser(), shell=shell)
    return text


def main(args: argparse.Namespace) -> int:
    print(script(args.shell))
    return 0
