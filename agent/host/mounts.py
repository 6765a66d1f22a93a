"""Mount sources pinned and checked at every (re)start, so that none can be swapped
between the host policy's check and Docker's mount.

- At define, each source is resolved (``realpath``) and Docker is given the resolved
  path, which has no symbolic link in it.
- At every start, reboot and crash restart, the source still has to resolve to the path
  Docker holds, that path must still have no symbolic link in any component (walked with
  ``O_NOFOLLOW``), and the policy must still allow it.
- No domain may write where another mount source lives: a writable mount whose tree
  holds another mount source of any domain of this host (the same path included, and
  the domain's own other mounts included) is refused, at define and at start. So no
  running domain can replace a component of a source that is about to be mounted.

Every refusal is OPERATION_DENIED, rule ``mount``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from uuid import UUID

from agent.host.domains import DomainTable
from agent.host.policy import Denied, Policy, under
from schemas.domain import DomainSpec, Mount


class MountGuard:
    """The host policy's mount rules applied with this host's domains in view."""

    def __init__(self, policy: Policy, domains: DomainTable) -> None:
        self._policy = policy
        self._domains = domains

    def admit(self, spec: DomainSpec, uuid: UUID | None = None) -> None:
        """Raise Denied unless ``spec`` may run (the whole policy) beside the other
        domains of this host (all but ``uuid``)."""
        self._policy.admit(spec)
        self._no_overlap(spec, uuid)

    @staticmethod
    def pinned(spec: DomainSpec) -> DomainSpec:
        """``spec`` with each mount source replaced by the path it resolves to now: what
        Docker is given, so that Docker follows no symbolic link."""
        if not spec.mounts:
            return spec
        mounts = [m.model_copy(update={"source": os.path.realpath(m.source)}) for m in spec.mounts]
        return spec.model_copy(update={"mounts": mounts})

    def verify(self, spec: DomainSpec, uuid: UUID, held: Mapping[str, str]) -> None:
        """Raise Denied unless every mount of ``spec`` may be mounted now: ``held`` maps
        each mount target to the source Docker holds for it."""
        self.admit(spec, uuid)
        for mount in spec.mounts:
            pinned = held.get(mount.target)
            if pinned is None:
                raise Denied("mount", f"mount target '{mount.target}' has no source pinned")
            resolved = os.path.realpath(mount.source)
            if resolved != pinned:
                raise Denied(
                    "mount",
                    f"host path '{mount.source}' now leads to '{resolved}', "
                    f"not to '{pinned}' as when it was checked",
                )
            no_link(pinned)
            self._policy.check_host_path(pinned, mount.readonly)

    def _no_overlap(self, spec: DomainSpec, uuid: UUID | None) -> None:
        others = [
            (domain.name, mount)
            for domain in self._domains
            if domain.uuid != uuid
            for mount in _mounts_of(domain.spec, domain.pending)
        ]
        for index, mount in enumerate(spec.mounts):
            for other in spec.mounts[index + 1 :]:
                _apart(mount, other, "another mount of this domain")
                _apart(other, mount, "another mount of this domain")
            for name, other in others:
                _apart(mount, other, f"a mount of domain '{name}'")
                _apart(other, mount, f"a mount of domain '{name}'")


def _mounts_of(spec: DomainSpec, pending: DomainSpec | None) -> Iterable[Mount]:
    yield from spec.mounts
    if pending is not None:
        yield from pending.mounts


def _paths(mount: Mount) -> set[str]:
    return {mount.source, os.path.realpath(mount.source)}


def _apart(writer: Mount, other: Mount, whose: str) -> None:
    """Raise Denied if ``writer`` is writable and its tree holds ``other``'s source."""
    if writer.readonly:
        return
    for top in _paths(writer):
        for path in _paths(other):
            if under(path, top):
                raise Denied(
                    "mount",
                    f"writable host path '{writer.source}' overlaps host path "
                    f"'{other.source}' of {whose}",
                )


def no_link(path: str) -> None:
    """Raise Denied unless every component of ``path`` exists and none is a symbolic
    link, walking from ``/`` one component at a time without following any."""
    directory = os.open("/", os.O_PATH | os.O_DIRECTORY)
    walked = ""
    try:
        for part in path.strip("/").split("/"):
            walked += "/" + part
            try:
                entry = os.open(part, os.O_PATH | os.O_NOFOLLOW, dir_fd=directory)
            except OSError as error:
                raise Denied(
                    "mount", f"host path '{path}' cannot be resolved: {error.strerror}"
                ) from None
            os.close(directory)
            directory = entry
            if stat.S_ISLNK(os.fstat(entry).st_mode):
                raise Denied("mount", f"host path '{path}' has a symbolic link at '{walked}' now")
    finally:
        os.close(directory)
