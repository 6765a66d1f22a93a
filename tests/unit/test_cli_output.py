"""`virtbus events` prints every kind of event the bus carries, one line each, in
virsh's words where virsh has them."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from agent.cli.output import event_text
from schemas.events import EVENT_ADAPTER, Event

UUID = "8c4d37a0-6f0e-4c4a-9a37-0d3b6c1e2f10"
COMMON = {"host": "h1", "time": "2026-12-06T08:00:00Z"}
DOMAIN = {"seq": 4, "domain": {"name": "web", "uuid": UUID, "id": 3}, "origin": "agent"}

SAMPLES: dict[str, tuple[dict[str, Any], str]] = {
    "lifecycle": (
        {**DOMAIN, "event": "started", "event_code": 2, "detail": "booted", "detail_code": 0},
        "event 'lifecycle' for domain 'web' on host 'h1': Started Booted",
    ),
    "reboot": (DOMAIN, "event 'reboot' for domain 'web' on host 'h1'"),
    "tunable": (
        {**DOMAIN, "params": {"vcpus": 2}},
        "event 'tunable' for domain 'web' on host 'h1':\n\tvcpus: 2",
    ),
    "device": (
        {**DOMAIN, "event": "removed", "event_id": 15, "alias": "net1"},
        "event 'device-removed' for domain 'web' on host 'h1': net1",
    ),
    "network": (
        {
            "seq": 5,
            "network": {"name": "lan", "uuid": UUID},
            "event": "started",
            "event_code": 2,
        },
        "event 'lifecycle' for network 'lan' on host 'h1': Started",
    ),
    "metadata_change": (
        {**DOMAIN, "type": "title", "type_code": 1},
        "event 'metadata-change' for domain 'web' on host 'h1': type title, uri <null>",
    ),
    "health": (
        {**DOMAIN, "status": "unhealthy"},
        "event 'health' for domain 'web' on host 'h1': unhealthy",
    ),
    "agent": (
        {
            "state": "online",
            "agent_version": "1.0",
            "groups": [],
            "capabilities": [],
            "heartbeat_s": 5.0,
            "domains": 0,
        },
        "event 'agent' for host 'h1': online",
    ),
    "image": (
        {
            "image": "web:1",
            "status": "complete",
            "layers": 1,
            "layers_done": 1,
            "bytes_done": 9,
            "bytes_total": 9,
        },
        "event 'image' for host 'h1': pull of 'web:1' complete, 1/1 layers, 9/9 bytes",
    ),
}


def test_every_event_kind_has_a_sample() -> None:
    kinds = {model.model_fields["kind"].default for model in get_args(get_args(Event)[0])}
    assert kinds == set(SAMPLES)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_event_is_printed_in_one_line(kind: str) -> None:
    fields, text = SAMPLES[kind]
    event = EVENT_ADAPTER.validate_python({**COMMON, "kind": kind, **fields})
    assert event_text(event) == text
