"""The agent's domain objects."""

from __future__ import annotations

from uuid import uuid4

from agent.host.domains import DomainObj
from agent.host.translate import Evidence
from schemas.codes import DomainState, RunningReason
from schemas.domain import DomainSpec

SPEC = DomainSpec(name="web", image="virtbus-test:latest")


def test_a_restored_domain_is_as_it_was_copied_evidence_included() -> None:
    domain = DomainObj(uuid=uuid4(), name="web", spec=SPEC, persistent=True, autostart=False)
    domain.evidence.observe("kill", 15)
    saved = domain.copy()
    domain.evidence.observe("kill", 9)
    domain.evidence.observe("oom", None)
    domain.state, domain.reason, domain.pid = DomainState.RUNNING, RunningReason.BOOTED, 42
    domain.spec = SPEC.model_copy(update={"memory_kib": 65536})
    domain.restore(saved)
    assert domain.evidence == Evidence(signals=[15], stopping=True)
    assert (domain.state, domain.pid, domain.spec) == (DomainState.SHUTOFF, 0, SPEC)


def test_a_copy_shares_the_frozen_definition() -> None:
    domain = DomainObj(uuid=uuid4(), name="web", spec=SPEC, persistent=True, autostart=False)
    assert domain.copy().spec is SPEC
