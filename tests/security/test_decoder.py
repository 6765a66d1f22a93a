"""Random and malicious bodies thrown at the decoder and at the dispatcher (over the fake
engine): the decoder gives a command or InvalidCommand, nothing else; the dispatcher
answers every body, never with INTERNAL_ERROR, and creates nothing the policy forbids."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.host.dispatch import Dispatcher
from agent.host.policy import Denied, Policy
from agent.host.store import Store
from schemas.commands import COMMAND_ADAPTER, OPS, CreateXml, Define, InvalidCommand, parse_command
from schemas.domain import DomainSpec
from tests.fakes import FakeDriver, fake_host
from tests.security.strategies import ALLOWED_IMAGE, bodies, nested
from tests.support.hostile import TRIED

POLICY = Policy(images=["virtbus-test:*"], memory_kib_max=131072, vcpus_max=1, pids_max=256)
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


@settings(max_examples=600, deadline=None, suppress_health_check=HEALTH)
@given(body=bodies, message_id=st.none() | st.text(max_size=300))
@example(body=b"1" * 5000, message_id=None)
@example(body=nested(100_000), message_id=None)
@example(body=b"\xff\xfe{}", message_id="x")
@example(body=b'{"op": "host.ping", "id": "\\ud800"}', message_id=None)
def test_the_decoder_gives_a_command_or_invalid(body: bytes, message_id: str | None) -> None:
    try:
        command = parse_command(body, message_id)
    except InvalidCommand as error:
        reason = error.reason
    else:
        reason = ""
        assert command.op in OPS
        assert parse_command(COMMAND_ADAPTER.dump_json(command)) == command
        if isinstance(command, Define | CreateXml):
            _admitted_only_within_policy(command.args.spec)
    TRIED["decoder: refused" if reason else "decoder: parsed"] += 1


def _admitted_only_within_policy(spec: DomainSpec) -> None:
    try:
        POLICY.admit(spec)
    except Denied as denied:
        outcome = f"denied by {denied.rule}"
    else:
        outcome = "admitted"
        assert spec.image.startswith("virtbus-test")
        assert not spec.mounts
        assert spec.network == "none"
    TRIED[f"policy: {outcome}"] += 1


async def _dispatch(sequence: list[bytes], state: Path) -> FakeDriver:
    with Store(state) as store:
        async with fake_host(store, state) as host:
            operations = host.operations(policy=POLICY)
            dispatcher = Dispatcher("h1", operations, host.domains, store, 4, max_body_bytes=65536)
            pending = [dispatcher.submit(body, f"m{n}") for n, body in enumerate(sequence)]
            for outcome in await asyncio.wait_for(asyncio.gather(*pending), 60):
                error = outcome.reply.error
                assert error is None or error.code != "INTERNAL_ERROR", error
                TRIED[f"dispatcher: {error.code if error else 'ok'}"] += 1
    return host.driver


@settings(max_examples=150, deadline=None, suppress_health_check=HEALTH)
@given(sequence=st.lists(bodies, min_size=1, max_size=8))
def test_the_dispatcher_answers_everything_and_creates_only_what_the_policy_allows(
    sequence: list[bytes],
) -> None:
    with tempfile.TemporaryDirectory() as state:
        driver = asyncio.run(_dispatch(sequence, Path(state) / "h1"))
    for container in driver.containers.values():
        assert container.spec.image == ALLOWED_IMAGE or container.spec.image.startswith(
            "virtbus-test"
        )
        assert container.spec.mounts == []
        assert container.spec.network == "none"
        assert container.spec.memory_kib is not None and container.spec.memory_kib <= 131072
        assert container.spec.vcpus == 1
        assert (container.spec.pids_limit or 0) <= 256
