"""The host policy: which images may run, which host paths may be mounted, which
networks may be joined, and how much a domain may take.

The policy comes from a TOML file named by the agent's configuration and is validated
once, at start-up; without a file the safe defaults hold: any image, no host path,
network ``none`` only, 1024 processes per domain. A command outside the policy is
refused with OPERATION_DENIED before anything reaches Docker (no pull, no container).
"""

from __future__ import annotations

import os
import re
import tomllib
from fnmatch import fnmatchcase
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal

from docker_image.reference import Reference
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.errors import VirtbusError, VirtError
from schemas.codes import ErrorCode
from schemas.domain import MAX_PIDS, MIN_MEMORY_KIB, AbsolutePath, DomainSpec
from schemas.network import NetworkSpec

NEVER_MOUNTED = (
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/var/lib/docker",
    "/run/containerd",
    "/var/run/containerd",
)
"""Host paths no domain may mount, nor any path above or below them, whatever the
policy: the kernel's interfaces, the boot files, and the engine (its socket is root)."""
_IMAGE_ID = re.compile(r"[a-f0-9]+|sha256:.*")

Rule = Literal["image", "mount", "network", "memory", "vcpus", "pids", "volume"]
DEFAULT_PIDS = 1024


class Denied(VirtError):
    """OPERATION_DENIED by the host policy; ``rule`` names the rule that refused."""

    def __init__(self, rule: Rule, detail: str) -> None:
        super().__init__(ErrorCode.OPERATION_DENIED, f"{detail} (host policy)")
        self.rule = rule


class PolicyError(VirtbusError, ValueError):
    """A policy file that cannot be read or does not validate."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.INVALID_ARG, detail)

    def __str__(self) -> str:
        return self.detail


class MountRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: AbsolutePath
    """Host paths equal to or below this one may be mounted."""
    force_readonly: bool = True
    """Mounts below the prefix must ask for ``readonly``; a writable one is refused."""

    @field_validator("prefix")
    @classmethod
    def _not_root(cls, prefix: str) -> str:
        if prefix == "/":
            raise ValueError("prefix '/' would allow mounting the whole host")
        return prefix

    def covers(self, path: str) -> bool:
        """Whether ``path`` is the prefix or below it, as written or as the prefix
        resolves (an administrator's symbolic link in the prefix is trusted)."""
        return under(path, self.prefix) or under(path, os.path.realpath(self.prefix))


class VolumeRule(BaseModel):
    """Domains whose name matches ``domains`` may mount volumes whose name matches
    ``volumes`` (glob patterns), read-only unless ``writable``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    volumes: str = "*"
    domains: str = "*"
    writable: bool = True

    def covers(self, volume: str, domain: str) -> bool:
        return fnmatchcase(volume, self.volumes) and fnmatchcase(domain, self.domains)


class Policy(BaseModel):
    """What this host lets domains do. Every limit applies to define, to start (a
    definition made under an older policy is checked again) and to live changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    images: list[Annotated[str, Field(min_length=1)]] = ["*"]
    """Glob patterns (``*``, ``?``, ``[…]``); an image may run if one matches the
    reference as written with its tag (``busybox:latest``) or in full
    (``docker.io/library/busybox:latest``)."""
    mounts: list[MountRule] = []
    """Host path prefixes that may be mounted; none by default."""
    networks: list[Annotated[str, Field(min_length=1, max_length=63)]] = ["none"]
    """Names or glob patterns of the networks a domain may join (Docker's networks and
    this host's virtbus networks alike); ``host`` never, whatever a pattern says."""
    network_define: list[Annotated[str, Field(min_length=1, max_length=63)]] = []
    """Names or glob patterns of the virtbus networks that may be defined; none by default."""
    network_subnets: list[IPv4Network | IPv6Network] = []
    """With subnets listed, a defined network must name its subnets, each inside one of
    these; with none listed, any subnet."""
    network_forward: bool = False
    """Whether a defined network may reach outside the host (libvirt's ``<forward
    mode='nat'>``); by default every defined network is internal."""
    memory_kib_max: int | None = Field(default=None, ge=MIN_MEMORY_KIB)
    """With a ceiling, every domain must state ``memory_kib`` at or below it."""
    vcpus_max: int | None = Field(default=None, ge=1)
    """With a ceiling, every domain must state ``vcpus`` at or below it."""
    pids_max: int = Field(default=MAX_PIDS, ge=1, le=MAX_PIDS)
    pids_default: int | None = Field(default=None, ge=1, le=MAX_PIDS)
    """The process limit of a domain whose spec gives no ``pids_limit``; None: 1024, or
    ``pids_max`` if that is lower."""
    volumes_max: int | None = Field(default=None, ge=0)
    """With a ceiling, no more volumes than this may exist on the host."""
    volume_bytes_max: int | None = Field(default=None, ge=0)
    """With a ceiling, no volume may be created with a larger capacity."""
    volume_mounts: list[VolumeRule] = [VolumeRule()]
    """Who may mount what: the first rule that covers a volume and a domain decides;
    none covering it refuses. By default every domain may mount every volume."""

    @field_validator("networks")
    @classmethod
    def _no_host_network(cls, networks: list[str]) -> list[str]:
        if "host" in networks:
            raise ValueError("network 'host' cannot be allowed: it shares the host's namespace")
        return networks

    @model_validator(mode="after")
    def _default_within_ceiling(self) -> Policy:
        if self.pids_default is not None and self.pids_default > self.pids_max:
            raise ValueError(f"pids_default {self.pids_default} is above pids_max {self.pids_max}")
        return self

    @property
    def default_pids_limit(self) -> int:
        """The process limit a domain gets when its spec sets none."""
        return self.pids_default or min(DEFAULT_PIDS, self.pids_max)

    def admit(self, spec: DomainSpec) -> None:
        """Raise Denied unless the domain may run as ``spec`` says."""
        self._check_image(spec.image)
        for mount in spec.mounts:
            self._check_mount(mount.source, mount.readonly)
        for nic in [spec.network, *(i.network for i in spec.interfaces)]:
            self.check_network(nic)
        for volume in spec.volumes:
            self.check_volume_mount(volume.volume, spec.name, volume.readonly)
        self.check_limits(spec.memory_kib, spec.vcpus, required=True)
        if spec.pids_limit is not None and spec.pids_limit > self.pids_max:
            raise Denied(
                "pids", f"pids_limit {spec.pids_limit} is above the ceiling {self.pids_max}"
            )

    def check_network(self, network: str) -> None:
        """Raise Denied unless a domain may join ``network``."""
        if network == "host" or not any(fnmatchcase(network, p) for p in self.networks):
            raise Denied("network", f"network '{network}' is not allowed")

    def check_network_definition(self, spec: NetworkSpec) -> None:
        """Raise Denied unless ``spec`` may be defined (or started, under a newer policy)."""
        if not any(fnmatchcase(spec.name, pattern) for pattern in self.network_define):
            raise Denied("network", f"defining network '{spec.name}' is not allowed")
        if not spec.internal and not self.network_forward:
            raise Denied("network", f"network '{spec.name}' must be internal (no <forward>)")
        if not self.network_subnets:
            return
        subnets = spec.subnets()
        if not subnets:
            allowed = ", ".join(str(subnet) for subnet in self.network_subnets)
            raise Denied("network", f"network '{spec.name}' must name a subnet within {allowed}")
        for subnet in subnets:
            if not any(
                subnet.version == allowed.version and subnet.subnet_of(allowed)  # type: ignore[arg-type]
                for allowed in self.network_subnets
            ):
                raise Denied("network", f"subnet {subnet} is not allowed")

    def check_limits(
        self, memory_kib: int | None, vcpus: int | None, required: bool = False
    ) -> None:
        """Raise Denied if a limit is above its ceiling (or, ``required``, not given)."""
        if self.memory_kib_max is not None:
            _within("memory", "memory_kib", memory_kib, self.memory_kib_max, required, " KiB")
        if self.vcpus_max is not None:
            _within("vcpus", "vcpus", vcpus, self.vcpus_max, required)

    def check_volume_mount(self, volume: str, domain: str, readonly: bool) -> None:
        """Raise Denied unless domain ``domain`` may mount volume ``volume``."""
        rule = next((rule for rule in self.volume_mounts if rule.covers(volume, domain)), None)
        if rule is None:
            raise Denied("volume", f"domain '{domain}' may not mount volume '{volume}'")
        if not rule.writable and not readonly:
            raise Denied("volume", f"domain '{domain}' may mount volume '{volume}' read-only only")

    def check_volume_count(self, existing: int) -> None:
        """Raise Denied unless one more volume may join ``existing`` ones."""
        if self.volumes_max is not None and existing >= self.volumes_max:
            raise Denied(
                "volume", f"the host has {existing} volumes, the ceiling is {self.volumes_max}"
            )

    def check_volume_capacity(self, capacity: int) -> None:
        """Raise Denied unless a volume of ``capacity`` bytes may be created."""
        if self.volume_bytes_max is not None and capacity > self.volume_bytes_max:
            raise Denied(
                "volume",
                f"capacity {capacity} bytes is above the ceiling {self.volume_bytes_max} bytes",
            )

    def _check_image(self, image: str) -> None:
        # Docker takes these for image IDs when no image has that name: any local image
        # could answer, so only a policy that allows every image lets them through.
        if _IMAGE_ID.fullmatch(image) and "*" not in self.images:
            raise Denied("image", f"image '{image}' could name any image by its ID (give a tag)")
        reference = Reference.parse_normalized_named(image)
        tag, digest = reference["tag"], reference["digest"]
        suffix = (f":{tag}" if tag else "") + (f"@{digest}" if digest else "") or ":latest"
        forms = (_familiar(reference) + suffix, reference["name"] + suffix)
        if not any(fnmatchcase(form, pattern) for pattern in self.images for form in forms):
            raise Denied("image", f"image '{image}' is not allowed")

    def _check_mount(self, source: str, readonly: bool) -> None:
        self.check_host_path(source, readonly)
        # Docker follows symlinks: one below an allowed prefix must not lead out of it.
        try:
            resolved = os.path.realpath(source)
        except OSError as error:
            raise Denied("mount", f"host path '{source}' cannot be resolved: {error}") from None
        if resolved != source:
            self.check_host_path(resolved, readonly)

    def check_host_path(self, path: str, readonly: bool) -> None:
        """Raise Denied unless ``path`` (taken as written) may be mounted."""
        rule = next((rule for rule in self.mounts if rule.covers(path)), None)
        if rule is None:
            raise Denied("mount", f"mounting host path '{path}' is not allowed")
        for never in NEVER_MOUNTED:
            if under(path, never) or under(never, path):
                raise Denied("mount", f"host path '{path}' reaches '{never}'")
        if rule.force_readonly and not readonly:
            raise Denied("mount", f"host path '{path}' may only be mounted read-only")


def under(path: str, top: str) -> bool:
    """Whether ``path`` is ``top`` or below it, component by component."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def _familiar(reference: Reference) -> str:
    """The name as people write it: ``busybox`` for ``docker.io/library/busybox``."""
    domain, path = str(reference.domain()), str(reference.path())
    if domain != "docker.io":
        return f"{domain}/{path}"
    return path.removeprefix("library/") if path.count("/") == 1 else path


def _within(
    rule: Rule, key: str, value: int | None, ceiling: int, required: bool, unit: str = ""
) -> None:
    if value is None and required:
        raise Denied(rule, f"{key} must be given: the ceiling is {ceiling}{unit}")
    if value is not None and value > ceiling:
        raise Denied(rule, f"{key} {value}{unit} is above the ceiling {ceiling}{unit}")


def load_policy(path: Path | None) -> Policy:
    """The policy in the TOML file at ``path``; the safe defaults if ``path`` is None."""
    if path is None:
        return Policy()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        return Policy.model_validate(document)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PolicyError(f"cannot read policy file {path}: {error}") from None
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'file'}: {item['msg']}"
            for item in error.errors(include_url=False, include_input=False)
        )
        raise PolicyError(f"invalid policy file {path}: {problems}") from None
