"""The dispatcher and operations over a fake driver: libvirt's rules, ordering,
idempotency, deadlines and errors, without Docker or a broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.host import operations
from agent.host.dispatch import Dispatcher, fingerprint_of
from agent.host.store import Fingerprint, Store
from schemas.codes import DomainState
from schemas.commands import parse_command
from schemas.events import EVENT_ADAPTER, LifecycleEvent
from schemas.replies import Reply
from tests.fakes import Envelope, FakeDriver, fake_host

SPEC = {"name": "web", "image": "virtbus-test:latest", "command": ["sleep", "60"]}


@dataclass
class Rig:
    driver: FakeDriver
    store: Store
    dispatcher: Dispatcher
    counter: int = 0

    async def call(
        self,
        op: str,
        target: dict[str, Any] | None = None,
        args: dict[str, Any] | None = None,
        **envelope: Any,
    ) -> Reply:
        outcome = await self.submit(op, target, args, **envelope)
        return outcome

    def submit(
        self,
        op: str,
        target: dict[str, Any] | None = None,
        args: dict[str, Any] | None = None,
        **envelope: Any,
    ) -> asyncio.Future[Reply]:
        self.counter += 1
        document: dict[str, Any] = {"id": f"cmd-{self.counter}", "op": op, **envelope}
        if target is not None:
            document["target"] = target
        if args is not None:
            document["args"] = args
        pending = self.dispatcher.submit(json.dumps(document).encode(), None)

        async def reply() -> Reply:
            return (await pending).reply

        return asyncio.ensure_future(reply())

    def lifecycle(self, name: str | None = None) -> list[tuple[str, str]]:
        events = [EVENT_ADAPTER.validate_json(p.body) for p in self.store.pending(10_000)]
        return [
            (e.event, e.detail)
            for e in events
            if isinstance(e, LifecycleEvent) and (name is None or e.domain.name == name)
        ]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with Store(tmp_path / "h1") as store:
        async with fake_host(store, tmp_path) as host:
            dispatcher = Dispatcher("h1", host.operations(), host.domains, store, concurrency=2)
            yield Rig(host.driver, store, dispatcher)


def error_code(reply: Reply) -> str | None:
    return reply.error.code if reply.error else None


async def test_lifecycle_ops_follow_libvirt_sequences(rig: Rig) -> None:
    web = {"name": "web"}
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    for op in ("domain.create", "domain.suspend", "domain.resume", "domain.reboot"):
        assert (await rig.call(op, web)).ok, op
    assert (await rig.call("domain.shutdown", web)).ok
    assert (await rig.call("domain.undefine", web)).ok
    assert rig.lifecycle() == [
        ("defined", "added"),
        ("started", "booted"),
        ("suspended", "paused"),
        ("resumed", "unpaused"),
        ("stopped", "shutdown"),
        ("undefined", "removed"),
    ]


@pytest.mark.parametrize(
    ("setup", "op", "args", "code"),
    [
        ([], "domain.create", None, "NO_DOMAIN"),
        (["domain.define"], "domain.destroy", None, "OPERATION_INVALID"),
        (["domain.define"], "domain.shutdown", None, "OPERATION_INVALID"),
        (["domain.define"], "domain.suspend", None, "OPERATION_INVALID"),
        (["domain.define", "domain.create"], "domain.create", None, "OPERATION_INVALID"),
        (
            ["domain.define", "domain.create"],
            "domain.rename",
            {"new_name": "x"},
            "OPERATION_INVALID",
        ),
        (["domain.define"], "domain.rename", {"new_name": "web"}, "OPERATION_INVALID"),
        (["domain.create_xml"], "domain.undefine", None, "OPERATION_INVALID"),
        (["domain.create_xml"], "domain.set_autostart", {"autostart": True}, "OPERATION_INVALID"),
        (["domain.define"], "domain.set_vcpus", {"vcpus": 3}, "INVALID_ARG"),
    ],
    ids=[
        "start-unknown",
        "destroy-shutoff",
        "shutdown-shutoff",
        "suspend-shutoff",
        "start-running",
        "rename-running",
        "rename-to-itself",
        "undefine-transient",
        "autostart-transient",
        "vcpus-above-host",
    ],
)
async def test_libvirt_refusals(
    rig: Rig, setup: list[str], op: str, args: dict[str, Any] | None, code: str
) -> None:
    for step in setup:
        if step in ("domain.define", "domain.create_xml"):
            assert (await rig.call(step, args={"spec": SPEC})).ok
        else:
            assert (await rig.call(step, {"name": "web"})).ok
    reply = await rig.call(op, {"name": "web"}, args)
    assert error_code(reply) == code, reply


OTHER_UUID = "6f1c2d3e-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("first", "op", "spec", "code", "message"),
    [
        # libvirt's domain list (virDomainObjListAdd): its codes and words, row by row
        (
            "domain.define",
            "domain.define",
            {"uuid": OTHER_UUID},
            "OPERATION_FAILED",
            "operation failed: domain 'web' already exists with uuid {uuid}",
        ),
        (
            "domain.define",
            "domain.define",
            {"name": "x", "uuid": "{uuid}"},
            "OPERATION_FAILED",
            "operation failed: domain 'web' is already defined with uuid {uuid}",
        ),
        (
            "domain.define",
            "domain.create_xml",
            {},
            "OPERATION_FAILED",
            "operation failed: domain 'web' already exists with uuid {uuid}",
        ),
        (
            "domain.define",
            "domain.create_xml",
            {"name": "x", "uuid": "{uuid}"},
            "OPERATION_FAILED",
            "operation failed: domain 'web' is already defined with uuid {uuid}",
        ),
        (
            "domain.create_xml",
            "domain.create_xml",
            {"uuid": "{uuid}"},
            "OPERATION_INVALID",
            "Requested operation is not valid: domain 'web' is already active",
        ),
        (
            "domain.create_xml",
            "domain.define",
            {"uuid": OTHER_UUID},
            "OPERATION_FAILED",
            "operation failed: domain 'web' already exists with uuid {uuid}",
        ),
        # libvirt would start it with the new definition for the run: virtbus keeps one
        (
            "domain.define",
            "domain.create_xml",
            {"uuid": "{uuid}"},
            "OPERATION_FAILED",
            "operation failed: domain 'web' is already defined and shut off: start it, or "
            "define it anew first (virtbus keeps one definition per domain)",
        ),
    ],
)
async def test_a_name_or_uuid_another_domain_holds_is_refused_as_libvirt_refuses_it(
    rig: Rig, first: str, op: str, spec: dict[str, str], code: str, message: str
) -> None:
    made = await rig.call(first, args={"spec": SPEC})
    assert made.ok and made.result is not None
    uuid = str(getattr(made.result, "uuid"))  # noqa: B009
    clash = {key: value.format(uuid=uuid) for key, value in spec.items()}
    reply = await rig.call(op, args={"spec": {**SPEC, **clash}})
    assert error_code(reply) == code
    assert reply.error is not None
    assert reply.error.message == message.format(uuid=uuid)
    listed = await rig.call("host.list_domains")
    assert listed.ok and listed.result is not None
    assert [d.name for d in getattr(listed.result, "domains")] == ["web"]  # noqa: B009


async def test_image_without_command_needs_one(rig: Rig) -> None:
    spec = {"name": "web", "image": "virtbus-test:nocmd"}
    reply = await rig.call("domain.define", args={"spec": spec})
    assert error_code(reply) == "INVALID_ARG"
    assert "command" in (reply.error.message if reply.error else "")
    assert "create" not in rig.driver.calls


async def test_same_domain_runs_in_order_other_domains_do_not_wait(rig: Rig) -> None:
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    assert (await rig.call("domain.define", args={"spec": {**SPEC, "name": "db"}})).ok
    gate = rig.driver.gates["start"] = asyncio.Event()
    start_web = rig.submit("domain.create", {"name": "web"})
    suspend_web = rig.submit("domain.suspend", {"name": "web"})
    state_db = await asyncio.wait_for(rig.call("domain.get_state", {"name": "db"}), 5)
    assert state_db.ok
    assert not start_web.done() and not suspend_web.done()
    gate.set()
    assert (await asyncio.wait_for(start_web, 5)).ok
    assert (await asyncio.wait_for(suspend_web, 5)).ok
    assert rig.lifecycle("web")[-2:] == [("started", "booted"), ("suspended", "paused")]


async def test_an_op_answers_at_dockers_report_before_dockers_answer(rig: Rig) -> None:
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    assert (await rig.call("domain.create", {"name": "web"})).ok
    late = rig.driver.answers["pause"] = asyncio.Event()
    suspended = await asyncio.wait_for(rig.call("domain.suspend", {"name": "web"}), 5)
    assert suspended.ok and suspended.result is not None
    assert getattr(suspended.result, "state") == DomainState.PAUSED  # noqa: B009
    assert rig.lifecycle("web")[-1] == ("suspended", "paused")
    late.set()
    assert (await asyncio.wait_for(rig.call("domain.resume", {"name": "web"}), 5)).ok


async def test_define_waits_for_dockers_answer_which_names_the_container(rig: Rig) -> None:
    late = rig.driver.answers["create"] = asyncio.Event()
    define = rig.submit("domain.define", args={"spec": SPEC})
    await rig.driver.wait_calls("create", 1)
    for _ in range(20):  # let every runnable task take its turn
        await asyncio.sleep(0)
    assert rig.lifecycle("web") == [("defined", "added")]
    assert not define.done()
    late.set()
    assert (await asyncio.wait_for(define, 5)).ok
    assert (await asyncio.wait_for(rig.call("domain.create", {"name": "web"}), 5)).ok


async def test_concurrency_is_bounded(rig: Rig) -> None:
    for name in ("a", "b", "c"):
        assert (await rig.call("domain.define", args={"spec": {**SPEC, "name": name}})).ok
    gate = rig.driver.gates["start"] = asyncio.Event()
    starts = [rig.submit("domain.create", {"name": name}) for name in ("a", "b", "c")]
    await rig.driver.wait_calls("start", 2)
    for _ in range(20):  # let every runnable task take its turn
        await asyncio.sleep(0)
    assert rig.driver.calls.count("start") == 2
    gate.set()
    assert all(r.ok for r in await asyncio.wait_for(asyncio.gather(*starts), 5))


async def test_repeated_id_answers_the_recorded_reply_without_acting(rig: Rig) -> None:
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    first = await rig.call("domain.create", {"name": "web"}, id="same")
    again = await rig.call("domain.create", {"name": "web"}, id="same")
    assert first.ok and again == first
    assert rig.driver.calls.count("start") == 1


async def test_next_command_starts_once_docker_finished_the_previous_call(rig: Rig) -> None:
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    assert (await rig.call("domain.create", {"name": "web"})).ok
    answer = rig.driver.answers["pause"] = asyncio.Event()
    assert (await asyncio.wait_for(rig.call("domain.suspend", {"name": "web"}), 5)).ok
    resume = rig.submit("domain.resume", {"name": "web"})
    for _ in range(20):  # let every runnable task take its turn
        await asyncio.sleep(0)
    assert "unpause" not in rig.driver.calls
    answer.set()
    assert (await asyncio.wait_for(resume, 5)).ok
    assert rig.driver.calls.count("unpause") == 1


async def test_a_docker_call_that_never_ends_times_the_next_command_out(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operations, "JOB_WAIT_S", 0.05)
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    assert (await rig.call("domain.create", {"name": "web"})).ok
    answer = rig.driver.answers["pause"] = asyncio.Event()
    assert (await asyncio.wait_for(rig.call("domain.suspend", {"name": "web"}), 5)).ok
    reply = await asyncio.wait_for(rig.call("domain.resume", {"name": "web"}), 5)
    assert error_code(reply) == "OPERATION_TIMEOUT"
    assert reply.error is not None and "cannot acquire state change lock" in reply.error.message
    assert "unpause" not in rig.driver.calls
    answer.set()


async def test_reused_id_with_another_op_is_refused_naming_it(rig: Rig) -> None:
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    assert (await rig.call("domain.create", {"name": "web"})).ok
    assert (await rig.call("host.ping", id="job-1")).ok
    outcome = await rig.dispatcher.submit(
        b'{"id": "job-1", "op": "domain.destroy", "target": {"name": "web"}}', None
    )
    assert not outcome.accepted
    assert error_code(outcome.reply) == "INVALID_ARG"
    assert outcome.reply.error is not None
    assert outcome.reply.error.message == (
        "invalid argument: command id 'job-1' was already used with op host.ping, "
        "not domain.destroy"
    )
    assert "kill" not in rig.driver.calls
    again = await rig.call("host.ping", id="job-1")
    assert again.ok


@pytest.mark.parametrize(
    ("target", "args", "conflict"),
    [
        ({"name": "other"}, None, "target name 'web', not name 'other'"),
        ({"name": "web"}, {"timeout_s": 3}, "other arguments to domain.shutdown"),
    ],
)
async def test_reused_id_with_another_target_or_arguments_is_refused(
    rig: Rig, target: dict[str, Any], args: dict[str, Any] | None, conflict: str
) -> None:
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    first = await rig.call("domain.shutdown", {"name": "web"}, id="job-2")
    reply = await rig.call("domain.shutdown", target, args, id="job-2")
    assert error_code(reply) == "INVALID_ARG"
    assert reply.error is not None and reply.error.message.endswith(conflict)
    assert (
        await rig.call("domain.shutdown", {"name": "web"}, {"timeout_s": 10}, id="job-2") == first
    )


async def test_reused_id_of_a_running_command_is_refused(rig: Rig) -> None:
    gate = rig.driver.gates["create"] = asyncio.Event()
    define = rig.submit("domain.define", args={"spec": SPEC}, id="job-3")
    await rig.driver.wait_calls("create", 1)
    reply = await rig.call("host.ping", id="job-3")
    assert error_code(reply) == "INVALID_ARG"
    gate.set()
    assert (await asyncio.wait_for(define, 5)).ok


async def test_same_command_with_a_new_deadline_gets_the_recorded_reply(rig: Rig) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    later = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    first = await rig.call("domain.define", args={"spec": SPEC}, id="job-4", deadline=soon)
    again = await rig.call("domain.define", args={"spec": SPEC}, id="job-4", deadline=later)
    assert first.ok and again == first
    assert rig.driver.calls.count("create") == 1


async def test_reused_id_after_a_crash_mid_command_is_refused(rig: Rig) -> None:
    assert (await rig.call("host.ping", id="job-5")).ok
    rig.store.attempt(
        "job-6", fingerprint_of(parse_command(b'{"id": "job-6", "op": "host.ping"}', None))
    )
    reply = await rig.call("host.get_info", id="job-6")
    assert error_code(reply) == "INVALID_ARG"


def test_a_login_password_is_not_part_of_the_fingerprint() -> None:
    def login(password: str) -> Fingerprint:
        body = {
            "id": "l",
            "op": "host.login",
            "args": {"registry": "r.example", "username": "u", "password": password},
        }
        return fingerprint_of(parse_command(json.dumps(body).encode(), None))

    assert login("one") == login("two")


async def test_past_deadline_is_aborted_unrun(rig: Rig) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    reply = await rig.call("domain.define", args={"spec": SPEC}, deadline=past)
    assert error_code(reply) == "OPERATION_ABORTED"
    assert reply.error is not None and reply.error.vir_error == 78
    assert "create" not in rig.driver.calls


async def test_invalid_command_is_refused_and_marked_for_dead_letter(rig: Rig) -> None:
    outcome = await rig.dispatcher.submit(b'{"op": "domain.explode", "id": "x"}', "x")
    assert not outcome.accepted
    assert error_code(outcome.reply) == "INVALID_ARG"
    assert outcome.reply.id == "x"


async def test_unexpected_failure_is_internal_error_and_dispatcher_goes_on(rig: Rig) -> None:
    rig.driver.failures["create"] = RuntimeError("boom")
    reply = await rig.call("domain.define", args={"spec": SPEC})
    assert error_code(reply) == "INTERNAL_ERROR"
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok


async def test_define_of_running_domain_applies_at_next_start(rig: Rig) -> None:
    web = {"name": "web"}
    defined = await rig.call("domain.define", args={"spec": SPEC})
    assert defined.ok and defined.result is not None
    uuid = str(getattr(defined.result, "uuid"))  # noqa: B009
    assert (await rig.call("domain.create", web)).ok
    update = {**SPEC, "uuid": uuid, "command": ["sleep", "99"]}
    assert (await rig.call("domain.define", args={"spec": update})).ok
    running = next(iter(rig.driver.containers.values()))
    assert running.spec.command == ["sleep", "60"]
    assert (await rig.call("domain.destroy", web)).ok
    assert (await rig.call("domain.create", web)).ok
    (fresh,) = rig.driver.containers.values()
    assert fresh.spec.command == ["sleep", "99"]
    assert fresh.name == "web"
    assert rig.lifecycle() == [
        ("defined", "added"),
        ("started", "booted"),
        ("defined", "updated"),
        ("stopped", "destroyed"),
        ("started", "booted"),
    ]


async def test_transient_domain_is_gone_once_stopped(rig: Rig) -> None:
    assert (await rig.call("domain.create_xml", args={"spec": SPEC})).ok
    assert (await rig.call("domain.destroy", {"name": "web"})).ok
    assert error_code(await rig.call("domain.lookup", {"name": "web"})) == "NO_DOMAIN"
    assert rig.lifecycle() == [("started", "booted"), ("stopped", "destroyed")]
    assert (await rig.call("domain.create_xml", args={"spec": SPEC})).ok


async def test_list_filters_by_flag_groups(rig: Rig) -> None:
    for name in ("off", "on", "paused"):
        assert (await rig.call("domain.define", args={"spec": {**SPEC, "name": name}})).ok
    for name in ("on", "paused"):
        assert (await rig.call("domain.create", {"name": name})).ok
    assert (await rig.call("domain.suspend", {"name": "paused"})).ok
    assert (await rig.call("domain.set_autostart", {"name": "off"}, {"autostart": True})).ok
    cases = {
        (): ["off", "on", "paused"],
        ("active",): ["on", "paused"],
        ("inactive",): ["off"],
        ("running", "shutoff"): ["off", "on"],
        ("active", "paused"): ["paused"],
        ("autostart",): ["off"],
        ("transient",): [],
    }
    for flags, names in cases.items():
        reply = await rig.call("host.list_domains", args={"flags": list(flags)})
        assert reply.ok and reply.result is not None
        listed = [d.name for d in getattr(reply.result, "domains")]  # noqa: B009
        assert listed == names, flags


def forget_reply(rig: Rig, command_id: str) -> None:
    """As if the agent died after acting and before recording the reply."""
    rig.store.db.execute("DELETE FROM replies WHERE id = ?", (command_id,))
    rig.store.attempt(command_id)


@pytest.mark.parametrize(
    ("setup", "op", "target"),
    [
        (["domain.define"], "domain.create", {"name": "web"}),
        (["domain.define", "domain.create"], "domain.destroy", {"name": "web"}),
        (["domain.define", "domain.create"], "domain.shutdown", {"name": "web"}),
        (["domain.define"], "domain.undefine", {"name": "web"}),
        (["domain.create_xml"], "domain.destroy", {"name": "web"}),
        ([], "domain.define", None),
    ],
    ids=["start", "destroy", "shutdown", "undefine", "destroy-transient", "define"],
)
async def test_retried_command_whose_effect_happened_answers_success(
    rig: Rig, setup: list[str], op: str, target: dict[str, Any] | None
) -> None:
    for step in setup:
        if step in ("domain.define", "domain.create_xml"):
            assert (await rig.call(step, args={"spec": SPEC})).ok
        else:
            assert (await rig.call(step, {"name": "web"})).ok
    args = {"spec": SPEC} if op == "domain.define" else None
    first = await rig.call(op, target, args, id="retried")
    assert first.ok, first
    calls = list(rig.driver.calls)
    forget_reply(rig, "retried")
    again = await rig.call(op, target, args, id="retried")
    assert again.ok, again
    assert again.result == first.result
    assert [c for c in rig.driver.calls[len(calls) :] if c != "default_command"] == []


async def test_fresh_command_gets_the_ordinary_refusal(rig: Rig) -> None:
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    assert (await rig.call("domain.create", {"name": "web"})).ok
    assert error_code(await rig.call("domain.create", {"name": "web"})) == "OPERATION_INVALID"


async def test_command_delivered_too_often_is_abandoned(rig: Rig) -> None:
    for _ in range(5):
        rig.store.attempt("poison")
    body = json.dumps({"id": "poison", "op": "host.ping"}).encode()
    delivered_again = Envelope(body, message_id="poison", redelivered=True)
    outcome = await rig.dispatcher.submit(body, "poison", delivered_again)
    assert not outcome.accepted
    assert error_code(outcome.reply) == "OPERATION_ABORTED"
    assert "6 times" in (outcome.reply.error.message if outcome.reply.error else "")
    again = await rig.dispatcher.submit(body, "poison", delivered_again)
    assert again.reply == outcome.reply


async def test_a_read_is_counted_only_once_it_is_delivered_again(rig: Rig) -> None:
    web = {"name": "web"}
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    assert (await rig.call("domain.create", web)).ok
    rig.driver.gates["usage"] = asyncio.Event()
    first = rig.submit("domain.get_info", web, id="read-1")
    await rig.driver.wait_calls("usage", 1)
    assert rig.store.attempted("read-1") is None
    rig.driver.gates["usage"].set()
    assert (await asyncio.wait_for(first, 5)).ok
    assert rig.store.recorded_reply("read-1") is not None

    body = json.dumps({"id": "read-2", "op": "domain.get_info", "target": web}).encode()
    rig.driver.gates["usage"].clear()
    again = rig.dispatcher.submit(body, None, Envelope(body, redelivered=True))
    await rig.driver.wait_calls("usage", 2)
    assert rig.store.attempted("read-2") == fingerprint_of(parse_command(body, None))
    counted = rig.store.db.execute("SELECT count FROM attempts WHERE id = 'read-2'").fetchone()
    assert counted == (2,)
    rig.driver.gates["usage"].set()
    assert (await asyncio.wait_for(again, 5)).reply.ok
    assert rig.store.attempted("read-2") is None


async def test_a_read_sent_again_gets_its_first_reply_and_does_not_run_again(rig: Rig) -> None:
    web = {"name": "web"}
    assert (await rig.call("domain.define", args={"spec": SPEC})).ok
    assert (await rig.call("domain.create", web)).ok
    first = await rig.call("domain.get_state", web, id="read-3")
    assert (await rig.call("domain.suspend", web)).ok
    again = await rig.call("domain.get_state", web, id="read-3")
    assert again == first
    fresh = await rig.call("domain.get_state", web)
    assert fresh.result != first.result
