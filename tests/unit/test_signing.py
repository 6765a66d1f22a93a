"""Signed commands without a broker: the signed bytes, both algorithms, every reason a
command is refused, the replay cache in the store, key files, configuration, and the
dispatcher's refusal (AUTH_FAILED, logged, counted, never recorded)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from pydantic import ValidationError

from agent.cli import build_parser, config_from
from agent.host.config import Config
from agent.host.dispatch import Dispatcher
from agent.host.metrics import Metrics
from agent.host.store import Store
from agent.signing import (
    KEY_ID,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Refused,
    SigningKey,
    TrustedKey,
    Verifier,
    signed_bytes,
)
from schemas.asyncapi import asyncapi_document
from tests.fakes import Envelope, fake_host

SECRET = b"0123456789abcdef0123456789abcdef-orch1"
NOW = 1_800_000_000.0
WINDOW_S = 60.0


PING = b'{"op":"host.ping","id":"c1"}'


def signed(key: SigningKey, body: bytes = PING, at: float = NOW) -> Envelope:
    """The envelope of ``body`` as ``key`` signs it at ``at``."""
    envelope = Envelope(body)
    headers = key.headers(
        envelope.body,
        envelope.exchange,
        envelope.routing_key,
        envelope.message_id,
        envelope.correlation_id,
        now=at,
    )
    return replace(envelope, headers=headers)


@dataclass
class Keys:
    hmac: SigningKey
    ed25519: SigningKey
    trusted: dict[str, TrustedKey]
    files: dict[str, Path]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    private = Ed25519PrivateKey.generate()
    files = {
        "secret": _write(tmp_path / "orch1.secret", SECRET + b"\n"),
        "private": _write(
            tmp_path / "orch2.pem",
            private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        ),
        "public": _write(
            tmp_path / "orch2.pub",
            private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        ),
    }
    return Keys(
        hmac=SigningKey.load("orch1", "hmac-sha256", files["secret"]),
        ed25519=SigningKey.parse(f"orch2=ed25519:{files['private']}"),
        trusted={
            "orch1": TrustedKey.parse(f"orch1=hmac-sha256:{files['secret']}"),
            "orch2": TrustedKey.load("orch2", "ed25519", files["public"]),
        },
        files=files,
    )


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "h1") as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(keys: Keys, store: Store, clock: Clock) -> Verifier:
    return Verifier(keys.trusted, WINDOW_S, store, clock)


def refusal(verifier: Verifier, delivery: Envelope | None) -> Refused:
    with pytest.raises(Refused) as raised:
        verifier.check(delivery)
    return raised.value


def test_signed_bytes_are_the_documented_lines_then_the_body() -> None:
    data = signed_bytes("orch1", 1700000000, "virtbus.commands", "h1", "c1", None, b"{}\n")
    assert data == b"virtbus-command-v1\norch1\n1700000000\nvirtbus.commands\nh1\nc1\n\n{}\n"
    with pytest.raises(ValueError, match="line feed"):
        signed_bytes("orch1", 1, "x", "h1", "c1\nforged", None, b"{}")


@pytest.mark.parametrize("algorithm", ["hmac", "ed25519"])
def test_a_signed_command_is_accepted_under_its_key(
    keys: Keys, verifier: Verifier, algorithm: str
) -> None:
    key = keys.hmac if algorithm == "hmac" else keys.ed25519
    delivery = signed(key)
    assert verifier.check(delivery) == key.key_id
    signature = base64.b64decode(str(delivery.headers[SIGNATURE_HEADER]))
    assert len(signature) == (32 if algorithm == "hmac" else 64)


def test_hmac_signature_is_checkable_by_hand(keys: Keys) -> None:
    """What another language's client must compute: HMAC-SHA256 of the documented bytes."""
    import hashlib
    import hmac

    delivery = signed(keys.hmac)
    data = signed_bytes("orch1", int(NOW), "virtbus.commands", "h1", "c1", "c1", delivery.body)
    expected = base64.b64encode(hmac.digest(SECRET, data, hashlib.sha256)).decode()
    assert delivery.headers[SIGNATURE_HEADER] == expected
    assert delivery.headers[TIMESTAMP_HEADER] == int(NOW)


@pytest.mark.parametrize(
    "drop", [(KEY_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER), (SIGNATURE_HEADER,)]
)
def test_unsigned_is_refused(keys: Keys, verifier: Verifier, drop: tuple[str, ...]) -> None:
    delivery = signed(keys.hmac)
    headers = {k: v for k, v in delivery.headers.items() if k not in drop}
    assert refusal(verifier, replace(delivery, headers=headers)).reason == "unsigned"
    assert refusal(verifier, None).reason == "unsigned"


def test_unknown_key_is_refused(keys: Keys, verifier: Verifier) -> None:
    stranger = SigningKey.hmac_sha256("orch9", SECRET)
    refused = refusal(verifier, signed(stranger))
    assert (refused.reason, refused.key_id) == ("unknown_key", "orch9")


@pytest.mark.parametrize("algorithm", ["hmac", "ed25519"])
@pytest.mark.parametrize(
    "tamper",
    [
        {"body": b'{"op":"domain.destroy","id":"c1"}'},
        {"routing_key": "h2"},
        {"exchange": "virtbus.broadcast"},
        {"message_id": "c2"},
        {"correlation_id": "other"},
    ],
    ids=["body", "routing-key", "exchange", "message-id", "correlation-id"],
)
def test_anything_changed_after_signing_is_a_bad_signature(
    keys: Keys, verifier: Verifier, algorithm: str, tamper: dict[str, object]
) -> None:
    key = keys.hmac if algorithm == "hmac" else keys.ed25519
    forged = replace(signed(key), **tamper)  # type: ignore[arg-type]
    refused = refusal(verifier, forged)
    assert (refused.reason, refused.key_id) == ("bad_signature", key.key_id)


@pytest.mark.parametrize("algorithm", ["hmac", "ed25519"])
def test_a_wrong_key_under_a_trusted_id_is_a_bad_signature(
    verifier: Verifier, algorithm: str
) -> None:
    if algorithm == "hmac":
        impostor = SigningKey.hmac_sha256("orch1", b"x" * 40)
    else:
        impostor = SigningKey("orch2", "ed25519", Ed25519PrivateKey.generate())
    assert refusal(verifier, signed(impostor)).reason == "bad_signature"


@pytest.mark.parametrize(
    "headers",
    [
        {SIGNATURE_HEADER: "not base64!"},
        {TIMESTAMP_HEADER: "yesterday"},
        {TIMESTAMP_HEADER: -5},
        {TIMESTAMP_HEADER: True},
        {KEY_ID_HEADER: 12},
    ],
    ids=["signature", "timestamp-text", "timestamp-negative", "timestamp-bool", "key-id-type"],
)
def test_malformed_headers_are_a_bad_signature(
    keys: Keys, verifier: Verifier, headers: dict[str, object]
) -> None:
    delivery = signed(keys.hmac)
    broken = replace(delivery, headers={**delivery.headers, **headers})
    assert refusal(verifier, broken).reason == "bad_signature"


def test_timestamp_as_text_and_headers_as_bytes_are_accepted(
    keys: Keys, verifier: Verifier
) -> None:
    delivery = signed(keys.ed25519)
    as_bytes = {k: str(v).encode() for k, v in delivery.headers.items()}
    assert verifier.check(replace(delivery, headers=as_bytes)) == "orch2"


@pytest.mark.parametrize("algorithm", ["hmac", "ed25519"])
@pytest.mark.parametrize("offset_s", [-61.0, 61.0, -3600.0])
def test_outside_the_window_is_stale(
    keys: Keys, verifier: Verifier, clock: Clock, algorithm: str, offset_s: float
) -> None:
    key = keys.hmac if algorithm == "hmac" else keys.ed25519
    clock.now = NOW + offset_s
    refused = refusal(verifier, signed(key))
    assert refused.reason == "stale"
    side = "ahead of" if offset_s < 0 else "behind"
    assert f"is {abs(offset_s):.0f} s {side} the agent's clock, outside ±60 s" in str(refused)


@pytest.mark.parametrize("offset_s", [-60.0, 59.0])
def test_inside_the_window_is_fresh(
    keys: Keys, verifier: Verifier, clock: Clock, offset_s: float
) -> None:
    clock.now = NOW + offset_s
    assert verifier.check(signed(keys.hmac)) == "orch1"


@pytest.mark.parametrize("algorithm", ["hmac", "ed25519"])
def test_a_copy_is_a_replay(keys: Keys, verifier: Verifier, algorithm: str) -> None:
    key = keys.hmac if algorithm == "hmac" else keys.ed25519
    delivery = signed(key)
    verifier.check(delivery)
    refused = refusal(verifier, delivery)
    assert (refused.reason, refused.key_id) == ("replayed", key.key_id)
    # the signature, not the whole message, is what was seen: headers the signature does
    # not cover make no fresh command of a copy
    recopied = replace(delivery, headers={**delivery.headers, "x-resent-by": "mallory"})
    assert refusal(verifier, recopied).reason == "replayed"


def test_a_broker_redelivery_is_not_a_replay(keys: Keys, verifier: Verifier) -> None:
    delivery = signed(keys.hmac)
    verifier.check(delivery)
    assert verifier.check(replace(delivery, redelivered=True)) == "orch1"


def test_the_same_command_signed_again_is_no_replay(keys: Keys, verifier: Verifier) -> None:
    verifier.check(signed(keys.hmac))
    assert verifier.check(signed(keys.hmac, at=NOW + 1)) == "orch1"


def test_replays_are_remembered_across_a_restart(keys: Keys, tmp_path: Path, clock: Clock) -> None:
    delivery = signed(keys.ed25519)
    with Store(tmp_path / "h1") as first:
        Verifier(keys.trusted, WINDOW_S, first, clock).check(delivery)
    with Store(tmp_path / "h1") as second:
        again = Verifier(keys.trusted, WINDOW_S, second, clock)
        assert refusal(again, delivery).reason == "replayed"


def test_the_replay_cache_keeps_only_what_is_still_in_the_window(
    keys: Keys, verifier: Verifier, store: Store, clock: Clock
) -> None:
    for second in range(5):
        verifier.check(signed(keys.hmac, at=NOW + second))
    assert store.db.execute("SELECT count(*) FROM signatures").fetchone()[0] == 5
    clock.now = NOW + WINDOW_S + 2.5  # the first three have run out
    verifier.check(signed(keys.hmac, at=clock.now))
    assert store.db.execute("SELECT count(*) FROM signatures").fetchone()[0] == 3


def test_keys_never_show_in_reprs(keys: Keys) -> None:
    shown = " ".join(repr(k) for k in (keys.hmac, keys.ed25519, *keys.trusted.values()))
    assert "orch1" in shown
    assert "orch2" in shown
    assert SECRET.decode() not in shown
    assert "PRIVATE" not in shown


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("orch1", "ID=ALGORITHM:PATH"),
        ("orch1=hmac-sha256", "ID=ALGORITHM:PATH"),
        ("bad id=hmac-sha256:/x", "does not match"),
        ("orch1=rsa:/x", "algorithm 'rsa'"),
        ("orch1=hmac-sha256:/nonexistent/secret", "cannot read"),
    ],
)
def test_bad_key_references_say_what_is_wrong(reference: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TrustedKey.parse(reference)


def test_key_files_of_the_wrong_kind_are_refused(keys: Keys, tmp_path: Path) -> None:
    short = _write(tmp_path / "short", b"too short\n")
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        TrustedKey.load("k", "hmac-sha256", short)
    with pytest.raises(ValueError, match="not a PEM public key"):
        TrustedKey.load("k", "ed25519", keys.files["private"])
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        SigningKey.load("k", "ed25519", keys.files["public"])
    with pytest.raises(ValueError, match="not a PEM public key"):
        TrustedKey.load("k", "ed25519", keys.files["secret"])


def test_agent_config_loads_trusted_keys_from_flags_and_environment(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "VIRTBUS_TRUSTED_KEYS",
        f"orch1=hmac-sha256:{keys.files['secret']}, orch2=ed25519:{keys.files['public']}",
    )
    from_env = Config(host="h1")
    assert sorted(from_env.trusted_keys) == ["orch1", "orch2"]
    assert from_env.trusted_keys["orch2"].algorithm == "ed25519"
    assert from_env.signing_window_s == 60
    args = build_parser().parse_args(
        [
            "agent",
            "--trusted-key",
            f"orch1=hmac-sha256:{keys.files['secret']}",
            "--signing-window-s",
            "15",
        ]
    )
    from_flags = config_from(args)
    assert list(from_flags.trusted_keys) == ["orch1"]
    assert from_flags.signing_window_s == 15
    assert SECRET.decode() not in repr(from_flags)
    assert Config(host="h1", trusted_keys="").trusted_keys == {}


def test_agent_config_refuses_unloadable_keys(keys: Keys) -> None:
    with pytest.raises(ValidationError, match="not a PEM public key"):
        Config(host="h1", trusted_keys=[f"orch2=ed25519:{keys.files['secret']}"])
    twice = f"orch1=hmac-sha256:{keys.files['secret']}"
    with pytest.raises(ValidationError, match="given twice"):
        Config(host="h1", trusted_keys=[twice, twice])


def test_client_signing_key_comes_from_flag_or_environment(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIRTBUS_SIGNING_KEY", f"orch2=ed25519:{keys.files['private']}")
    args = build_parser().parse_args(["list", "--host", "h1"])
    assert args.signing_key.key_id == "orch2"
    args = build_parser().parse_args(
        ["list", "--host", "h1", "--signing-key", f"orch1=hmac-sha256:{keys.files['secret']}"]
    )
    assert args.signing_key.algorithm == "hmac-sha256"


def test_a_client_signing_key_that_cannot_load_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["list", "--signing-key", "orch1=ed25519:/nonexistent.pem"])
    assert exited.value.code == 2
    assert "cannot read /nonexistent.pem" in capsys.readouterr().err


@dataclass
class SignedRig:
    dispatcher: Dispatcher
    metrics: Metrics
    store: Store


@pytest.fixture
async def signed_rig(
    tmp_path: Path, keys: Keys, store: Store, clock: Clock
) -> AsyncIterator[SignedRig]:
    async with fake_host(store, tmp_path) as host:
        metrics = Metrics()
        verifier = Verifier(keys.trusted, WINDOW_S, store, clock)
        dispatcher = Dispatcher(
            "h1",
            host.operations(),
            host.domains,
            store,
            concurrency=2,
            metrics=metrics,
            verifier=verifier,
        )
        yield SignedRig(dispatcher, metrics, store)


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_dispatcher_refuses_unauthentic_commands_with_auth_failed(
    signed_rig: SignedRig, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    ping: Callable[[str], bytes] = lambda i: json.dumps({"id": i, "op": "host.ping"}).encode()  # noqa: E731
    caplog.set_level(logging.WARNING, logger="agent.host.dispatch")
    unsigned = await signed_rig.dispatcher.submit(ping("c1"), "c1", Envelope(ping("c1")))
    assert not unsigned.accepted
    assert unsigned.reply.error is not None
    assert (unsigned.reply.error.code, unsigned.reply.error.vir_error) == ("AUTH_FAILED", 45)
    assert unsigned.reply.error.message.startswith("authentication failed: unsigned: ")
    assert unsigned.reply.id == "c1"
    assert signed_rig.store.recorded_reply("c1") is None

    delivery = signed(keys.ed25519, ping("c1"))
    first = await signed_rig.dispatcher.submit(delivery.body, "c1", delivery)
    assert first.accepted
    assert first.reply.ok
    replayed = await signed_rig.dispatcher.submit(delivery.body, "c1", delivery)
    assert not replayed.accepted
    assert replayed.reply.error is not None
    assert replayed.reply.error.message.startswith("authentication failed: replayed: ")

    assert _count(signed_rig.metrics, "virtbus_auth_failures_total", reason="unsigned") == 1
    assert _count(signed_rig.metrics, "virtbus_auth_failures_total", reason="replayed") == 1
    assert _count(signed_rig.metrics, "virtbus_auth_failures_total", reason="stale") == 0
    assert (
        _count(signed_rig.metrics, "virtbus_commands_total", op="invalid", outcome="AUTH_FAILED")
        == 2
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "authentication failed for command 'c1' (key None): unsigned: no "
        f"{KEY_ID_HEADER} and no {SIGNATURE_HEADER} header",
        "authentication failed for command 'c1' (key 'orch2'): replayed: "
        "this signature by key 'orch2' was accepted before",
    ]
    assert SECRET.decode() not in caplog.text


async def test_dispatcher_without_a_verifier_ignores_signatures(
    keys: Keys, tmp_path: Path, store: Store
) -> None:
    async with fake_host(store, tmp_path) as host:
        dispatcher = Dispatcher("h1", host.operations(), host.domains, store, concurrency=1)
        body = json.dumps({"id": "c9", "op": "host.ping"}).encode()
        assert (await dispatcher.submit(body, "c9")).reply.ok


def test_asyncapi_documents_the_signature_headers() -> None:
    command = asyncapi_document()["components"]["messages"]["Command"]
    headers = command["headers"]["schema"]["properties"]
    assert set(headers) == {KEY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER}
    assert headers[KEY_ID_HEADER]["pattern"] == KEY_ID.pattern
