"""Mount sources pinned and checked again before every mount, and kept out of every
domain's writable tree (agent/host/mounts.py), on real directories and links."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from agent.host.domains import DomainObj, DomainTable
from agent.host.mounts import MountGuard, no_link
from agent.host.policy import Denied, MountRule, Policy
from schemas.domain import DomainSpec


def spec(name: str, *mounts: tuple[Path, str, bool]) -> DomainSpec:
    return DomainSpec.model_validate(
        {
            "name": name,
            "image": "virtbus-test:latest",
            "mounts": [
                {"source": str(source), "target": target, "readonly": readonly}
                for source, target, readonly in mounts
            ],
        }
    )


def add(domains: DomainTable, definition: DomainSpec, **fields: Any) -> DomainObj:
    domain = DomainObj(uuid4(), definition.name, definition, persistent=True, autostart=False)
    for key, value in fields.items():
        setattr(domain, key, value)
    domains.add(domain)
    return domain


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    path = tmp_path / "allowed"
    for sub in ("a/x", "b", "c"):
        (path / sub).mkdir(parents=True)
    return path


@pytest.fixture
def guard(allowed: Path) -> tuple[MountGuard, DomainTable]:
    domains = DomainTable()
    policy = Policy(mounts=[MountRule(prefix=str(allowed), force_readonly=False)])
    return MountGuard(policy, domains), domains


def refused(guard: MountGuard, definition: DomainSpec, words: str) -> None:
    with pytest.raises(Denied, match=words) as caught:
        guard.admit(definition)
    assert caught.value.rule == "mount"
    assert caught.value.message.startswith("operation forbidden: ")


def test_a_writable_mount_may_not_hold_another_mount_of_the_same_domain(
    guard: tuple[MountGuard, DomainTable], allowed: Path
) -> None:
    check, _ = guard
    nested = spec("d", (allowed / "a", "/w", False), (allowed / "a" / "x", "/x", True))
    refused(check, nested, "of another mount of this domain")
    reversed_order = spec("d", (allowed / "a" / "x", "/x", True), (allowed / "a", "/w", False))
    refused(check, reversed_order, "of another mount of this domain")
    same = spec("d", (allowed / "b", "/1", False), (allowed / "b", "/2", True))
    refused(check, same, "of another mount of this domain")
    check.admit(spec("d", (allowed / "a", "/1", True), (allowed / "a" / "x", "/2", True)))
    check.admit(spec("d", (allowed / "a", "/1", False), (allowed / "b", "/2", False)))


def test_a_writable_tree_may_not_hold_another_domains_source(
    guard: tuple[MountGuard, DomainTable], allowed: Path
) -> None:
    check, domains = guard
    add(domains, spec("reader", (allowed / "a" / "x", "/x", True)))
    refused(
        check,
        spec("writer", (allowed, "/w", False)),
        f"writable host path '{allowed}' overlaps host path '{allowed / 'a' / 'x'}' "
        "of a mount of domain 'reader'",
    )
    refused(check, spec("writer", (allowed / "a" / "x", "/w", False)), "domain 'reader'")
    check.admit(spec("writer", (allowed / "b", "/w", False)))
    check.admit(spec("other", (allowed / "a", "/r", True)))


def test_a_source_may_not_lie_in_another_domains_writable_tree(
    guard: tuple[MountGuard, DomainTable], allowed: Path
) -> None:
    check, domains = guard
    writer = add(domains, spec("writer", (allowed / "a", "/w", False)))
    refused(check, spec("reader", (allowed / "a" / "x", "/x", True)), "domain 'writer'")
    check.admit(spec("reader", (allowed / "b", "/x", True)))
    # the domain itself is left out: its redefinition is checked against the others only
    check.admit(writer.spec, writer.uuid)
    add(domains, spec("later", (allowed / "c", "/c", True)), pending=spec("later"))
    writer.pending = spec("writer", (allowed / "c", "/w", False))
    refused(check, spec("reader", (allowed / "c", "/x", True)), "domain 'writer'")


def test_links_are_followed_to_compare_trees(
    guard: tuple[MountGuard, DomainTable], allowed: Path
) -> None:
    check, domains = guard
    (allowed / "link").symlink_to(allowed / "a")
    add(domains, spec("reader", (allowed / "a" / "x", "/x", True)))
    refused(check, spec("writer", (allowed / "link", "/w", False)), "domain 'reader'")


def test_docker_is_given_the_resolved_path(allowed: Path) -> None:
    (allowed / "link").symlink_to(allowed / "a")
    pinned = MountGuard.pinned(spec("d", (allowed / "link" / "x", "/x", True)))
    assert pinned.mounts[0].source == str(allowed / "a" / "x")
    assert MountGuard.pinned(spec("d")) == spec("d")


def test_a_source_is_checked_again_before_each_mount(
    guard: tuple[MountGuard, DomainTable], allowed: Path, tmp_path: Path
) -> None:
    check, domains = guard
    definition = spec("d", (allowed / "a" / "x", "/x", True))
    domain = add(domains, definition)
    held = {"/x": str(allowed / "a" / "x")}
    check.verify(definition, domain.uuid, held)

    (allowed / "a" / "x").rename(allowed / "a" / "x.old")
    (allowed / "a" / "x").symlink_to(allowed / "b")
    with pytest.raises(Denied, match=f"now leads to '{allowed / 'b'}', not to '{held['/x']}'"):
        check.verify(definition, domain.uuid, held)

    outside = tmp_path / "outside"
    (outside / "x").mkdir(parents=True)
    (allowed / "a" / "x").unlink()
    (allowed / "a").rename(allowed / "a.old")
    (allowed / "a").symlink_to(outside)
    with pytest.raises(Denied, match=f"mounting host path '{outside / 'x'}' is not allowed"):
        check.verify(definition, domain.uuid, held)

    (allowed / "a").unlink()
    with pytest.raises(Denied, match="cannot be resolved: No such file or directory"):
        check.verify(definition, domain.uuid, {"/x": str(allowed / "a" / "x")})
    with pytest.raises(Denied, match="mount target '/x' has no source pinned"):
        check.verify(definition, domain.uuid, {})


def test_a_link_in_the_path_docker_holds_is_refused(
    guard: tuple[MountGuard, DomainTable], allowed: Path
) -> None:
    check, domains = guard
    (allowed / "link").symlink_to(allowed / "a")
    with pytest.raises(Denied, match=f"has a symbolic link at '{allowed / 'link'}' now"):
        no_link(str(allowed / "link" / "x"))
    no_link(str(allowed / "a" / "x"))
    definition = spec("d", (allowed / "link" / "x", "/x", True))
    domain = add(domains, definition)
    with pytest.raises(Denied, match="now leads to"):
        check.verify(definition, domain.uuid, {"/x": str(allowed / "link" / "x")})
    check.verify(definition, domain.uuid, {"/x": os.path.realpath(allowed / "link" / "x")})


def test_a_prefix_written_through_a_link_covers_what_it_resolves_to(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "x").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(real)
    rule = MountRule(prefix=str(tmp_path / "alias"))
    assert rule.covers(str(real / "x"))
    assert rule.covers(str(tmp_path / "alias" / "x"))
    assert not rule.covers(str(tmp_path / "realx"))
