"""The one-command verbs: each names the group that adds it and a command model whose op
it sends, builds commands the models accept, is checked with the models when its input
could be wrong, and prints each host's answer to a broadcast as it arrives."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from agent.cli import ONE_COMMAND_VERBS, build_parser
from agent.cli.domain import WireRequest, run_json
from agent.cli.plain import STATE_NAMES, Output, render_state
from schemas import commands
from schemas.codes import DomainState, ErrorCode
from schemas.commands import COMMAND_ADAPTER, op_of
from schemas.errors import VirtbusError
from schemas.names import OP_NAMES

VERB_ARGV = {
    "list": ["list", "--all"],
    "domstate": ["domstate", "--reason", "web"],
    "domid": ["domid", "7"],
    "domuuid": ["domuuid", "8c4d37a0-6f0e-4c4a-9a37-0d3b6c1e2f10"],
    "domname": ["domname", "web"],
    "dumpxml": ["dumpxml", "--inactive", "web"],
    "start": ["start", "--paused", "web"],
    "shutdown": ["shutdown", "--no-kill", "web"],
    "destroy": ["destroy", "web"],
    "reboot": ["reboot", "web"],
    "suspend": ["suspend", "web"],
    "resume": ["resume", "web"],
    "undefine": ["undefine", "--snapshots-metadata", "web"],
}


def test_every_op_name_is_its_models_op() -> None:
    assert {name: op_of(getattr(commands, name)) for name in OP_NAMES} == OP_NAMES


def test_state_names_cover_libvirts_states() -> None:
    assert set(STATE_NAMES) == {int(state) for state in DomainState}


@pytest.mark.parametrize("verb", sorted(ONE_COMMAND_VERBS))
def test_a_one_command_verb_parses_with_its_group_alone_into_a_valid_command(
    verb: str,
) -> None:
    args = build_parser([ONE_COMMAND_VERBS[verb]]).parse_args([*VERB_ARGV[verb], "--host", "h1"])
    request = args.request(args)
    assert isinstance(request, WireRequest)
    assert request.plainly_valid()
    document = {"v": 1, "id": "c1", "op": request.op}
    document |= {"args": request.args} if request.args is not None else {}
    document |= {"target": request.target} if request.target is not None else {}
    assert op_of(type(COMMAND_ADAPTER.validate_python(document))) == request.op


@pytest.mark.parametrize(
    ("target", "args", "said"),
    [
        ({"name": "bad name!"}, None, "'bad name!' is not a name"),
        ({"id": 0}, None, "should be greater than or equal to 1"),
    ],
)
def test_input_the_cli_cannot_vouch_for_is_checked_with_the_models(
    target: dict[str, Any], args: dict[str, Any] | None, said: str
) -> None:
    request = WireRequest("GetState", args, target, render_state(False))
    assert not request.plainly_valid()
    with pytest.raises(VirtbusError) as raised:
        request.check(10.0)
    assert raised.value.code is ErrorCode.INVALID_ARG
    assert said in str(raised.value)


def test_a_grace_period_is_checked_with_the_models() -> None:
    args = build_parser(["lifecycle"]).parse_args(["shutdown", "--grace", "99999", "web"])
    request = args.request(args)
    assert not request.plainly_valid()
    with pytest.raises(VirtbusError, match="less than or equal to 3600"):
        request.check(10.0)


class GatedBus:
    """A wire connection whose broadcast releases each reply when the test says."""

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts
        self.release = {host: asyncio.Event() for host in hosts}
        self.taken = {host: asyncio.Event() for host in hosts}
        """Set once the caller is done with the host's reply and asks for the next."""

    def command(
        self, op: str, args: Any, target: Any, timeout_s: float | None = None
    ) -> dict[str, Any]:
        return {"v": 1, "id": "c1", "op": op}

    async def broadcast(
        self,
        command: dict[str, Any],
        group: str | None,
        expect: Iterable[str] | None,
        timeout_s: float,
    ) -> AsyncIterator[dict[str, Any]]:
        for host in self.hosts:
            await asyncio.wait_for(self.release[host].wait(), 5)
            yield {
                "v": 1,
                "id": "c1",
                "host": host,
                "ok": True,
                "result": {"state": 1, "reason": 1},
            }
            self.taken[host].set()


async def test_a_broadcast_prints_each_hosts_answer_as_it_arrives(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("VIRTBUS_KNOWN_HOSTS", str(tmp_path / "hosts.json"))
    args = build_parser(["info"]).parse_args(
        ["domstate", "web", "--group", "red", "--expect", "h1,h2"]
    )
    out, err = io.StringIO(), io.StringIO()
    bus = GatedBus(["h2", "h1"])
    running = asyncio.create_task(run_json(bus, args, Output(False, out, err)))  # type: ignore[arg-type]
    bus.release["h2"].set()
    await asyncio.wait_for(bus.taken["h2"].wait(), 5)
    assert out.getvalue() == "== h2\nrunning\n"
    assert not running.done()
    bus.release["h1"].set()
    assert await asyncio.wait_for(running, 5) == 0
    assert out.getvalue() == "== h2\nrunning\n== h1\nrunning\n"
    assert err.getvalue().startswith("2/2 expected hosts answered in ")
