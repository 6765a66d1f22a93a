"""The store keeps what the agent must know after a crash."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from uuid import uuid4

from agent.domains import DomainObj
from agent.store import Store
from agent.translate import Evidence
from schemas.domain import DomainSpec

SPEC = DomainSpec(name="web", image="virtbus-test:latest")


def test_what_docker_reported_before_a_crash_survives_it(tmp_path: Path) -> None:
    domain = DomainObj(uuid=uuid4(), name="web", spec=SPEC, persistent=True, autostart=False)
    domain.evidence.observe("kill", 15)
    with Store(tmp_path) as store, store.transaction() as tx:
        tx.save(domain)
    with Store(tmp_path) as store:
        (restored,) = store.domains()
    assert restored.evidence == Evidence(signals=[15], stopping=True)


def test_a_store_from_before_evidence_was_kept_opens(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute(
            "CREATE TABLE domains (uuid TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "persistent INTEGER NOT NULL, autostart INTEGER NOT NULL, spec TEXT NOT NULL, "
            "pending TEXT, handle TEXT, state INTEGER NOT NULL, reason INTEGER NOT NULL)"
        )
        db.execute(
            "INSERT INTO domains VALUES (?, 'web', 1, 0, ?, NULL, NULL, 5, 0)",
            (str(uuid4()), SPEC.model_dump_json()),
        )
    with Store(tmp_path) as store:
        (restored,) = store.domains()
    assert restored.name == "web" and restored.evidence == Evidence()
