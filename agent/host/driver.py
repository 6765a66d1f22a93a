"""The only module that knows Docker: domain operations over aiodocker.

A domain is one container named ``<host>.<name>`` and labelled ``virtbus.host`` and
``virtbus.uuid``; the driver lists, watches and touches only containers with its own
host label, so a command can never reach anything else on the engine. ``Driver`` is the
seam: the agent depends on the protocol, tests put a fake behind it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import aiodocker
import aiodocker.stream
import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

from agent.errors import VirtError
from agent.host.config import DOCKER_TIMEOUT_S
from schemas.codes import ErrorCode
from schemas.domain import TUNABLES, DomainSpec
from schemas.network import NetworkSpec

HOST_LABEL = "virtbus.host"
UUID_LABEL = "virtbus.uuid"
NETWORK_LABEL = "virtbus.network"
POOL_LABEL = "virtbus.pool"
CAPACITY_LABEL = "virtbus.capacity"
SNAPSHOT_LABEL = "virtbus.snapshot"
CREATED_LABEL = "virtbus.snapshot.created"
log = logging.getLogger(__name__)
SNAPSHOT_REPOSITORY = "virtbus-snapshot"
CONNECT_TIMEOUT_S = 30.0
UNBOUNDED = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
TOGGLE_SETTLE_S = 2.0
"""How long a pause or unpause that Docker refuses on a stale record of the container is
made again (see ``DockerDriver._toggle``)."""
TOGGLE_RETRY_S = 0.02
DROPPED_CAPABILITIES = ("AUDIT_WRITE", "MKNOD", "NET_RAW")
BRIDGE_OPTION = "com.docker.network.bridge.name"
"""Docker grants these by default; Podman does not, and neither does virtbus."""


@dataclass(frozen=True)
class RuntimeEvent:
    """One step Docker reported for a domain's container."""

    action: str
    handle: str
    uuid: UUID
    name: str
    time_ns: int
    exit_code: int | None = None
    signal: int | None = None
    pid: int = 0
    """Host PID after a ``start`` or ``restart``; 0 otherwise."""
    status: str | None = None
    """What follows the action's colon: ``healthy`` in ``health_status: healthy``."""


@dataclass(frozen=True)
class Observed:
    """A domain's container as Docker has it now."""

    handle: str
    uuid: UUID
    name: str
    status: str
    pid: int
    exit_code: int
    oom_killed: bool
    tunables: Mapping[str, int]
    """The container's controls as DomainSpec.tunables names them."""
    mounts: Mapping[str, str] = field(default_factory=dict)
    """Mount target → the host path Docker mounts there at each start."""
    restart_policy: str = "no"


@dataclass(frozen=True)
class Usage:
    memory_kib: int
    cpu_time_ns: int


@dataclass(frozen=True)
class EngineFacts:
    cpus: int
    memory_kib: int
    version: str
    controls: frozenset[str] = frozenset(TUNABLES)
    """The DomainSpec.tunables the host's kernel can apply."""


@dataclass(frozen=True)
class NetworkFacts:
    """A virtbus network as Docker has it: its ID and its Linux bridge."""

    id: str
    bridge: str


@dataclass(frozen=True)
class Endpoint:
    """A domain's place on one network, as Docker assigned it; ``network`` as the
    domain's spec names it."""

    network: str
    mac: str | None
    ipv4: str | None
    ipv4_prefix: int
    ipv6: str | None
    ipv6_prefix: int


@dataclass(frozen=True)
class EngineVolume:
    """One of this host's volumes, by its pool and its name in the pool."""

    pool: str
    name: str
    mountpoint: str
    capacity: int


@dataclass(frozen=True)
class SnapshotImage:
    """An image committed from one of this host's domains: ``tag`` names it in
    ``SNAPSHOT_REPOSITORY``; ``labels`` are the image's labels."""

    id: str
    tag: str
    labels: Mapping[str, str]


class Terminal(Protocol):
    """A container's attached terminal."""

    async def read(self) -> bytes | None:
        """The next output; None at its end."""
        ...

    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...


class _AttachedTerminal:
    def __init__(self, stream: aiodocker.stream.Stream) -> None:
        self._stream = stream

    async def read(self) -> bytes | None:
        try:
            message = await self._stream.read_out()
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as error:
            raise virt_error(error) from None
        return None if message is None else bytes(message.data)

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.write_in(data)
        except RuntimeError:
            raise VirtError(ErrorCode.OPERATION_FAILED, "the console is closed") from None
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as error:
            raise virt_error(error) from None

    async def close(self) -> None:
        await self._stream.close()


Credentials = Mapping[str, tuple[str, str]]
"""Registry → (username, password), for pulls."""


PULL_CAUSES = (
    (("no such host", "server misbehaving", "name resolution", "lookup "), "dns"),
    (("x509", "certificate", "tls:", "handshake"), "tls"),
    (
        ("unauthorized", "authentication required", "denied", "incorrect username"),
        "auth",
    ),
    (("manifest unknown", "not found", "name unknown", "does not exist"), "missing"),
    (("connection refused", "i/o timeout", "no route to host", "timeout"), "unreachable"),
)
"""Words of the engine's pull errors, by the cause they tell, most telling first: a
refused login behind an HTTP fallback still says "unauthorized"."""


@dataclass(frozen=True)
class PullProgress:
    """Where a pull stands: layers seen and finished, compressed bytes downloaded of the
    layers whose size is known so far."""

    layers: int
    layers_done: int
    bytes_done: int
    bytes_total: int


PullListener = Callable[[PullProgress], Awaitable[None]]
"""Told of each step of a pull, as the engine reports it."""

_LAYER_DONE = ("Pull complete", "Already exists")
_LAYER_DOWNLOADED = ("Download complete", "Verifying Checksum", "Extracting", *_LAYER_DONE)


class PullTally:
    """The engine's pull stream (one JSON object per layer step), added up."""

    def __init__(self) -> None:
        self._sizes: dict[str, tuple[int, int]] = {}
        self._layers: set[str] = set()
        self._done: set[str] = set()

    def add(self, item: Mapping[str, Any]) -> bool:
        """Count one item of the stream; True if it was about a layer."""
        layer, status = item.get("id"), item.get("status", "")
        # the engine's layer steps carry progressDetail ({} for most); its other lines
        # ("Pulling from …", "Digest: …") do not
        if not isinstance(layer, str) or "progressDetail" not in item:
            return False
        self._layers.add(layer)
        detail = item.get("progressDetail") or {}
        current, total = self._sizes.get(layer, (0, 0))
        if status == "Downloading":
            current, total = int(detail.get("current", 0)), int(detail.get("total", total))
        elif status in _LAYER_DOWNLOADED:
            current = total
        self._sizes[layer] = (current, total)
        if status in _LAYER_DONE:
            self._done.add(layer)
        return True

    @property
    def progress(self) -> PullProgress:
        return PullProgress(
            layers=len(self._layers),
            layers_done=len(self._done),
            bytes_done=sum(current for current, _ in self._sizes.values()),
            bytes_total=sum(total for _, total in self._sizes.values()),
        )


def pull_cause(message: str, registry: str, logged_in: bool) -> str:
    """The cause of a failed pull in words, from the engine's message."""
    lowered = message.lower()
    cause = next(
        (cause for words, cause in PULL_CAUSES if any(word in lowered for word in words)),
        None,
    )
    match cause:
        case "dns":
            return f"the registry's name '{registry}' does not resolve (DNS)"
        case "tls":
            return "the registry's TLS certificate is not trusted (TLS)"
        case "auth" if logged_in:
            return "the registry refused the host.login's credentials (auth)"
        case "auth":
            return "the registry wants a login and the host has no host.login for it (auth)"
        case "missing":
            return "the registry has no such image (not found)"
        case "unreachable":
            return f"the registry at '{registry}' cannot be reached (network)"
    # an HTTP fallback's error can hide a refused login: whether there was one helps
    return f"the engine could not pull it, {'with' if logged_in else 'without'} a host.login"


class Driver(Protocol):
    async def observe_all(self) -> list[Observed]: ...
    async def observe(self, handle: str) -> Observed | None: ...
    async def named(self, name: str) -> Observed | None:
        """The container Docker holds under the name of domain ``name``, if any."""
        ...

    async def paused(self, handle: str, pid: int) -> bool | None:
        """Whether the container (whose init has host PID ``pid``, 0 if unknown) is
        paused now; None once it is gone."""
        ...

    async def frozen(self, handle: str, pid: int) -> bool | None:
        """Whether the kernel has the container frozen now, without waiting for Docker;
        None when that cannot be told."""
        ...

    async def create(self, name: str, uuid: UUID, spec: DomainSpec) -> str:
        """Create the container (not started); returns its handle."""
        ...

    async def remove(self, handle: str) -> None: ...
    async def start(self, handle: str) -> None: ...
    async def stop(self, handle: str, timeout_s: int) -> None: ...
    async def kill(self, handle: str) -> None: ...
    async def restart(self, handle: str, timeout_s: int = 10) -> None:
        """Stop (killing after ``timeout_s``; never, for -1) and start again."""
        ...

    async def signal(self, handle: str, signal: str) -> None:
        """Send ``signal`` (``TERM``...) to the container's init."""
        ...

    async def wait_stopped(self, handle: str) -> None:
        """Return once the container is not running, however long that takes."""
        ...

    async def output(self, handle: str, max_bytes: int) -> tuple[bytes, bool]:
        """The last ``max_bytes`` of what the container wrote, and whether there was more."""
        ...

    async def attach(self, handle: str) -> Terminal:
        """The container's terminal: its output from now on, and its input."""
        ...

    async def pause(self, handle: str) -> None: ...
    async def unpause(self, handle: str) -> None: ...
    async def rename(self, handle: str, name: str) -> None: ...
    async def update(self, handle: str, spec: DomainSpec) -> None:
        """Give the container the controls of ``spec`` (DomainSpec.tunables)."""
        ...

    async def forbid_restarts(self, handle: str) -> None:
        """Set the container's restart policy to ``no`` (an earlier agent set others)."""
        ...

    async def usage(self, handle: str) -> Usage: ...
    async def create_network(self, uuid: UUID, spec: NetworkSpec) -> NetworkFacts:
        """Create the Docker network of a virtbus network."""
        ...

    async def network_facts(self, name: str) -> NetworkFacts | None:
        """The Docker network of virtbus network ``name``; None if there is none."""
        ...

    async def remove_network(self, name: str) -> None:
        """Remove the Docker network of virtbus network ``name``, if there is one."""
        ...

    async def connect(self, handle: str, network: str, mac: str | None) -> None: ...
    async def disconnect(self, handle: str, network: str) -> None: ...
    async def endpoints(self, handle: str) -> list[Endpoint]:
        """The domain's interfaces with the addresses Docker assigned, in Docker's order."""
        ...

    async def default_command(
        self, image: str, credentials: Credentials, listener: PullListener | None = None
    ) -> list[str] | None:
        """The image's own command; pulls the image first when the host lacks it,
        telling ``listener`` of each step of the pull."""
        ...

    async def engine(self) -> EngineFacts: ...
    async def volumes(self) -> list[EngineVolume]:
        """This host's volumes (the engine's volumes with its host label)."""
        ...

    async def create_volume(self, pool: str, name: str, capacity: int) -> EngineVolume: ...
    async def remove_volume(self, name: str) -> None: ...
    async def commit(self, handle: str, tag: str, labels: Mapping[str, str]) -> str:
        """Commit the container's filesystem into ``SNAPSHOT_REPOSITORY:tag`` carrying
        ``labels`` (and the host label); returns the image's ID."""
        ...

    async def snapshot_images(self) -> list[SnapshotImage]: ...
    async def remove_snapshot_image(self, tag: str) -> None:
        """Remove the tag; the image goes with it unless a container still uses it
        (then ``prune_snapshot_images`` removes it once none does)."""
        ...

    async def prune_snapshot_images(self) -> None:
        """Remove this host's snapshot images that no tag names and no container uses."""
        ...

    def events(self, since_ns: int, until_ns: int | None = None) -> AsyncIterator[RuntimeEvent]:
        """Docker's events for this host's domains from ``since_ns``: up to ``until_ns``
        (a replay of what the engine still holds), or for good; ends when the engine's
        stream ends."""
        ...

    async def close(self) -> None: ...


class _Edge(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Actor(_Edge):
    ID: str
    Attributes: dict[str, str] = {}


class _DockerEvent(_Edge):
    Type: str
    Action: str
    Actor: _Actor
    timeNano: int


class _State(_Edge):
    Status: str
    Pid: int = 0
    ExitCode: int = 0
    OOMKilled: bool = False


class _Config(_Edge):
    Labels: dict[str, str] | None = None
    Cmd: list[str] | None = None
    Entrypoint: list[str] | None = None


class _Bind(_Edge):
    Source: str
    Target: str


class _RestartPolicy(_Edge):
    Name: str = ""


class _HostConfig(_Edge):
    Memory: int = 0
    MemorySwap: int = 0
    MemoryReservation: int = 0
    NanoCpus: int = 0
    CpuShares: int = 0
    Mounts: list[_Bind] | None = None
    RestartPolicy: _RestartPolicy = _RestartPolicy()

    def tunables(self) -> dict[str, int]:
        """As DomainSpec.tunables names them. -1 (unlimited, which no spec gives) is left
        out, and so is a swap limit equal to the memory limit."""
        given = {
            "memory_kib": self.Memory // 1024,
            "soft_limit_kib": self.MemoryReservation // 1024,
            "swap_hard_limit_kib": self.MemorySwap // 1024 if self.MemorySwap > self.Memory else 0,
            "vcpus": self.NanoCpus // 1_000_000_000,
            "cpu_shares": self.CpuShares,
        }
        return {name: value for name, value in given.items() if value > 0}


class _EndpointSettings(_Edge):
    MacAddress: str = ""
    IPAddress: str = ""
    IPPrefixLen: int = 0
    GlobalIPv6Address: str = ""
    GlobalIPv6PrefixLen: int = 0


class _NetworkSettings(_Edge):
    Networks: dict[str, _EndpointSettings] | None = None


class _NetworkInspect(_Edge):
    Id: str
    Labels: dict[str, str] | None = None
    Options: dict[str, str] | None = None


class _Inspect(_Edge):
    Id: str
    Name: str
    State: _State
    Config: _Config
    HostConfig: _HostConfig
    NetworkSettings: _NetworkSettings = _NetworkSettings()


class _Volume(_Edge):
    Name: str
    Mountpoint: str = ""
    Labels: dict[str, str] | None = None


class _Volumes(_Edge):
    Volumes: list[_Volume] | None = None


class _ImageInspect(_Edge):
    Config: _Config | None = None


class _Info(_Edge):
    NCPU: int
    MemTotal: int
    ServerVersion: str
    MemoryLimit: bool = True
    SwapLimit: bool = True
    CPUShares: bool = True
    CpuCfsQuota: bool = True

    def controls(self) -> frozenset[str]:
        """The tunables whose kernel control Docker found."""
        found = {
            "memory_kib": self.MemoryLimit,
            "soft_limit_kib": self.MemoryLimit,
            "swap_hard_limit_kib": self.SwapLimit,
            "vcpus": self.CpuCfsQuota,
            "cpu_shares": self.CPUShares,
        }
        return frozenset(name for name, present in found.items() if present)


class _CpuUsage(_Edge):
    total_usage: int = 0


class _CpuStats(_Edge):
    cpu_usage: _CpuUsage = _CpuUsage()


class _MemoryStats(_Edge):
    usage: int = 0


class _Stats(_Edge):
    cpu_stats: _CpuStats = _CpuStats()
    memory_stats: _MemoryStats = _MemoryStats()


def registry_of(image: str) -> str:
    """The registry part of an image reference, as Docker decides it."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def unprivileged(pids_limit: int) -> dict[str, Any]:
    """The part of a container's HostConfig that keeps it unprivileged whatever the
    engine's defaults."""
    return {
        "Privileged": False,
        "CapAdd": [],
        "CapDrop": list(DROPPED_CAPABILITIES),
        "SecurityOpt": ["no-new-privileges:true"],
        "Devices": [],
        "IpcMode": "private",
        "PidMode": "",
        "UTSMode": "",
        "UsernsMode": "",
        "PidsLimit": pids_limit,
    }


class DockerDriver:
    """Driver over a real engine; ``url`` None means Docker's default socket.
    ``pids_limit`` applies to a domain whose spec sets none.

    A call the engine does not answer within ``call_timeout_s`` (plus a stop's grace
    period) fails with OPERATION_TIMEOUT; its effect may still come, and is then applied
    as Docker reports it. Calls that last as long as their work (pulls, a snapshot's
    commit, waits, consoles, the event stream) are not bounded."""

    def __init__(
        self,
        host: str,
        url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        pids_limit: int,
        call_timeout_s: float = DOCKER_TIMEOUT_S,
    ) -> None:
        self.host = host
        self._pids_limit = pids_limit
        self._timeout_s = call_timeout_s
        self._url = url
        self._ssl_context = ssl_context
        self._docker: aiodocker.Docker | None = None
        self._pruning = asyncio.Lock()
        self._cgroups = CgroupLayout()

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(
                url=self._url, ssl_context=self._ssl_context, timeout=self._bound()
            )
        return self._docker

    def _bound(self, longer_s: float = 0) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self._timeout_s + longer_s,
            sock_connect=min(CONNECT_TIMEOUT_S, self._timeout_s),
        )

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    def container_name(self, name: str) -> str:
        return f"{self.host}.{name}"

    def domain_name(self, container_name: str) -> str:
        bare = container_name.lstrip("/")
        return bare.removeprefix(f"{self.host}.")

    async def _call(self, coroutine: Any, longer_s: float = 0) -> Any:
        try:
            return await coroutine
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as error:
            raise self._error(error, longer_s) from None

    def _error(
        self, error: aiodocker.DockerError | aiohttp.ClientError | OSError, longer_s: float = 0
    ) -> VirtError:
        """``virt_error`` with this driver's bound (``longer_s`` more for a stop's grace)."""
        return virt_error(error, self._timeout_s + longer_s)

    async def observe_all(self) -> list[Observed]:
        entries = await self._call(
            self.docker.containers.list(
                all=True, filters=json.dumps({"label": [f"{HOST_LABEL}={self.host}"]})
            )
        )
        observed = await asyncio.gather(*(self.observe(entry.id) for entry in entries))
        return [item for item in observed if item is not None]

    async def paused(self, handle: str, pid: int) -> bool | None:
        """The kernel's freezer answers when this host's /proc and cgroup tree show the
        container's init: an inspect waits for the container's lock, which a pause in
        progress holds for milliseconds. Otherwise Docker's inspect answers."""
        frozen = await self.frozen(handle, pid)
        if frozen is not None:
            return frozen
        observed = await self.observe(handle)
        return None if observed is None else observed.status == "paused"

    async def frozen(self, handle: str, pid: int) -> bool | None:
        if pid <= 0:
            return None
        frozen = self._cgroups.frozen(handle)
        return _frozen(handle, pid) if frozen is None else frozen

    def _container(self, handle: str) -> aiodocker.containers.DockerContainer:
        return self.docker.containers.container(handle)

    async def observe(self, handle: str) -> Observed | None:
        try:
            raw = await self._container(handle).show()
        except aiodocker.DockerError as error:
            if error.status == 404:
                return None
            raise self._error(error) from None
        except (aiohttp.ClientError, OSError) as error:
            raise self._error(error) from None
        facts = _Inspect.model_validate(raw)
        labels = facts.Config.Labels or {}
        if labels.get(HOST_LABEL) != self.host or UUID_LABEL not in labels:
            return None
        status = facts.State.Status
        if status in ("running", "paused") and facts.State.Pid > 0:
            self._cgroups.learn(facts.Id, facts.State.Pid)
            # Docker's record of a pause can lag the kernel (see _toggle)
            frozen = _frozen(facts.Id, facts.State.Pid)
            if frozen is not None:
                status = "paused" if frozen else "running"
        return Observed(
            handle=facts.Id,
            uuid=UUID(labels[UUID_LABEL]),
            name=self.domain_name(facts.Name),
            status=status,
            pid=facts.State.Pid,
            exit_code=facts.State.ExitCode,
            oom_killed=facts.State.OOMKilled,
            tunables=facts.HostConfig.tunables(),
            mounts={bind.Target: bind.Source for bind in facts.HostConfig.Mounts or []},
            restart_policy=facts.HostConfig.RestartPolicy.Name or "no",
        )

    async def named(self, name: str) -> Observed | None:
        return await self.observe(self.container_name(name))

    async def create(self, name: str, uuid: UUID, spec: DomainSpec) -> str:
        """The container runs unprivileged whatever the engine's defaults: no added
        capabilities and three of Docker's defaults dropped, no new privileges through
        setuid, no host namespace, no device, a process limit. Docker never restarts it:
        the agent does, after checking the policy again (``on_crash: restart``)."""
        nics = spec.nics()
        networks = [await self._docker_network(nic.network) for nic in nics]
        host_config: dict[str, Any] = {
            "Init": spec.init,
            "NetworkMode": networks[0] if networks else "none",
            "RestartPolicy": {"Name": "no"},
            # Type bind: a missing source is an error, never a directory made as root
            "Mounts": [
                {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.readonly}
                for m in spec.mounts
            ]
            + [
                # NoCopy: the image's files at the target never land in a shared volume
                {
                    "Type": "volume",
                    "Source": self.volume_name(v.volume),
                    "Target": v.target,
                    "ReadOnly": v.readonly,
                    "VolumeOptions": {"NoCopy": True},
                }
                for v in spec.volumes
            ],
            **unprivileged(spec.pids_limit or self._pids_limit),
        }
        host_config.update(_limits(spec))
        # Docker makes a missing named volume at create: only this host's may be mounted
        mine = {(v.pool, v.name) for v in await self.volumes()} if spec.volumes else set()
        for wanted in spec.volumes:
            if (wanted.pool, wanted.volume) not in mine:
                raise VirtError(
                    ErrorCode.NO_STORAGE_VOL,
                    f"no storage vol with matching name '{wanted.volume}' in pool '{wanted.pool}'",
                )
        config: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{key}={value}" for key, value in spec.env.items()],
            "Labels": {HOST_LABEL: self.host, UUID_LABEL: str(uuid)},
            "HostConfig": host_config,
        }
        if spec.command is not None:
            config["Cmd"] = spec.command
        if spec.workdir is not None:
            config["WorkingDir"] = spec.workdir
        if spec.user is not None:
            config["User"] = spec.user
        if nics and nics[0].mac is not None:
            config["MacAddress"] = nics[0].mac
        if spec.console:
            config.update(Tty=True, OpenStdin=True, StdinOnce=False, AttachStdin=True)
        if spec.healthcheck is not None:
            check = spec.healthcheck
            config["Healthcheck"] = {
                "Test": ["CMD", *check.command],
                "Interval": check.interval_s * 1_000_000_000,
                "Timeout": check.timeout_s * 1_000_000_000,
                "Retries": check.retries,
            }
        container = await self._call(
            self.docker.containers.create(config, name=self.container_name(name))
        )
        try:
            for nic, network in zip(nics[1:], networks[1:], strict=True):
                await self._connect(container.id, network, nic.mac)
        except VirtError:
            await self.remove(container.id)
            raise
        return str(container.id)

    def network_name(self, name: str) -> str:
        """The Docker network of virtbus network ``name``."""
        return f"{self.host}.{name}"

    async def _docker_network(self, name: str) -> str:
        """The Docker network a domain's ``network`` names: this host's virtbus network
        of that name if there is one, else the Docker network of that name."""
        if name == "none":
            return name
        return self.network_name(name) if await self.network_facts(name) else name

    async def network_facts(self, name: str) -> NetworkFacts | None:
        try:
            raw = await self.docker.networks.get(self.network_name(name))
            facts = _NetworkInspect.model_validate(await raw.show())
        except aiodocker.DockerError as error:
            if error.status == 404:
                return None
            raise self._error(error) from None
        except (aiohttp.ClientError, OSError) as error:
            raise self._error(error) from None
        if (facts.Labels or {}).get(HOST_LABEL) != self.host:
            return None
        bridge = (facts.Options or {}).get(BRIDGE_OPTION) or f"br-{facts.Id[:12]}"
        return NetworkFacts(id=facts.Id, bridge=bridge)

    async def create_network(self, uuid: UUID, spec: NetworkSpec) -> NetworkFacts:
        """An internal network unless the spec says otherwise; Docker's IPAM gives the
        domains their addresses from the spec's subnets and ranges."""
        pools = []
        for ip in (spec.ipv4, spec.ipv6):
            if ip is None:
                continue
            pool = {"Subnet": str(ip.subnet)}
            if ip.gateway is not None:
                pool["Gateway"] = str(ip.gateway)
            if ip.dhcp_range is not None:
                pool["IPRange"] = str(ip.dhcp_range)
            pools.append(pool)
        options = {BRIDGE_OPTION: spec.bridge} if spec.bridge else {}
        config: dict[str, Any] = {
            "Name": self.network_name(spec.name),
            "Driver": "bridge",
            "CheckDuplicate": True,
            "Internal": spec.internal,
            "EnableIPv6": spec.ipv6 is not None,
            "IPAM": {"Driver": "default", "Config": pools},
            "Options": options,
            "Labels": {HOST_LABEL: self.host, UUID_LABEL: str(uuid), NETWORK_LABEL: spec.name},
        }
        created = await self._call(self.docker.networks.create(config))
        bridge = spec.bridge or f"br-{created.id[:12]}"
        return NetworkFacts(id=str(created.id), bridge=bridge)

    async def remove_network(self, name: str) -> None:
        facts = await self.network_facts(name)
        if facts is not None:
            await self._call(self.docker._query_json(f"networks/{facts.id}", method="DELETE"))

    async def _connect(self, handle: str, network: str, mac: str | None) -> None:
        # the engine keeps the MAC address from API 1.44 on; an older one chooses its own
        endpoint = {"MacAddress": mac} if mac else {}
        await self._call(
            self.docker._query_json(
                f"networks/{network}/connect",
                method="POST",
                data=json.dumps({"Container": handle, "EndpointConfig": endpoint}),
            )
        )

    async def connect(self, handle: str, network: str, mac: str | None) -> None:
        await self._connect(handle, await self._docker_network(network), mac)

    async def disconnect(self, handle: str, network: str) -> None:
        await self._call(
            self.docker._query_json(
                f"networks/{await self._docker_network(network)}/disconnect",
                method="POST",
                data=json.dumps({"Container": handle, "Force": False}),
            )
        )

    async def endpoints(self, handle: str) -> list[Endpoint]:
        raw = await self._call(self._container(handle).show())
        networks = _Inspect.model_validate(raw).NetworkSettings.Networks or {}
        prefix = f"{self.host}."
        return [
            Endpoint(
                network=name.removeprefix(prefix),
                mac=settings.MacAddress or None,
                ipv4=settings.IPAddress or None,
                ipv4_prefix=settings.IPPrefixLen,
                ipv6=settings.GlobalIPv6Address or None,
                ipv6_prefix=settings.GlobalIPv6PrefixLen,
            )
            for name, settings in networks.items()
            if name != "none"
        ]

    async def remove(self, handle: str) -> None:
        await self._call(self._container(handle).delete(force=True, v=True, timeout=self._bound()))

    async def start(self, handle: str) -> None:
        await self._call(self._container(handle).start())

    async def stop(self, handle: str, timeout_s: int) -> None:
        await self._call(
            self._container(handle).stop(t=timeout_s, timeout=self._bound(timeout_s)), timeout_s
        )

    async def kill(self, handle: str) -> None:
        await self._call(self._container(handle).kill(signal="KILL", timeout=self._bound()))

    async def restart(self, handle: str, timeout_s: int = 10) -> None:
        timeout = self._bound(timeout_s) if timeout_s >= 0 else UNBOUNDED
        await self._call(
            self._container(handle).restart(t=timeout_s, timeout=timeout), max(timeout_s, 0)
        )

    async def signal(self, handle: str, signal: str) -> None:
        await self._call(self._container(handle).kill(signal=signal, timeout=self._bound()))

    async def wait_stopped(self, handle: str) -> None:
        await self._call(self._container(handle).wait(timeout=UNBOUNDED))

    async def output(self, handle: str, max_bytes: int) -> tuple[bytes, bool]:
        # Docker cannot bound logs in bytes: lines, then the tail of their bytes
        lines = await self._call(
            self._container(handle).log(
                stdout=True, stderr=True, tail=str(max_bytes), timeout=self._bound()
            )
        )
        text = "".join(lines).encode(errors="surrogateescape")
        return text[-max_bytes:], len(text) > max_bytes

    async def attach(self, handle: str) -> Terminal:
        stream = self._container(handle).attach(stdin=True, stdout=True, stderr=True)
        try:
            # the handshake only: the stream itself lasts as long as the session
            async with asyncio.timeout(self._timeout_s):
                await stream.__aenter__()
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as error:
            raise self._error(error) from None
        return _AttachedTerminal(stream)

    async def pause(self, handle: str) -> None:
        await self._toggle(handle, pause=True)

    async def unpause(self, handle: str) -> None:
        await self._toggle(handle, pause=False)

    async def _toggle(self, handle: str, pause: bool) -> None:
        """Docker 20.10 applies containerd's own report of each pause and unpause to its
        record of the container late, after the call has answered and sometimes after
        the next call: a correctly ordered next call then meets a record one step behind
        ("is already paused", "is not paused") and Docker reports the stale step again.
        While the kernel shows the container still needs the change, such a refusal is
        Docker's record catching up: the call is made again, for up to TOGGLE_SETTLE_S."""
        container = self._container(handle)
        deadline = asyncio.get_running_loop().time() + TOGGLE_SETTLE_S
        while True:
            try:
                await (container.pause() if pause else container.unpause())
                return
            except aiodocker.DockerError as error:
                if asyncio.get_running_loop().time() >= deadline:
                    raise self._error(error) from None
                observed = await self.observe(handle)
                if observed is None or observed.status != ("running" if pause else "paused"):
                    raise self._error(error) from None
            except (aiohttp.ClientError, OSError) as error:
                raise self._error(error) from None
            await asyncio.sleep(TOGGLE_RETRY_S)

    async def rename(self, handle: str, name: str) -> None:
        await self._call(self._container(handle).rename(self.container_name(name)))

    async def update(self, handle: str, spec: DomainSpec) -> None:
        # aiodocker has no update
        await self._call(
            self.docker._query_json(
                f"containers/{handle}/update",
                method="POST",
                data=json.dumps(_limits(spec)),
            )
        )

    async def forbid_restarts(self, handle: str) -> None:
        await self._call(
            self.docker._query_json(
                f"containers/{handle}/update",
                method="POST",
                data=json.dumps({"RestartPolicy": {"Name": "no"}}),
            )
        )

    async def usage(self, handle: str) -> Usage:
        # aiodocker's stats() cannot ask for one-shot, without which the engine waits a
        # second for a second CPU sample
        raw = await self._call(
            self.docker._query_json(
                f"containers/{handle}/stats", params={"stream": "0", "one-shot": "1"}
            )
        )
        stats = _Stats.model_validate(raw)
        return Usage(
            memory_kib=stats.memory_stats.usage // 1024,
            cpu_time_ns=stats.cpu_stats.cpu_usage.total_usage,
        )

    async def default_command(
        self, image: str, credentials: Credentials, listener: PullListener | None = None
    ) -> list[str] | None:
        try:
            raw = await self.docker.images.inspect(image)
        except aiodocker.DockerError as error:
            if error.status != 404:
                raise self._error(error) from None
            await self._pull(image, credentials, listener)
            raw = await self._call(self.docker.images.inspect(image))
        except (aiohttp.ClientError, OSError) as error:
            raise self._error(error) from None
        config = _ImageInspect.model_validate(raw).Config
        if config is None:
            return None
        return config.Cmd or config.Entrypoint or None

    async def _pull(
        self, image: str, credentials: Credentials, listener: PullListener | None = None
    ) -> None:
        registry = registry_of(image)
        auth = None
        if registry in credentials:
            username, password = credentials[registry]
            auth = {"username": username, "password": password, "serveraddress": registry}
        # aiodocker sends credentials only with a reference that names its registry
        reference = image if "/" in image else f"docker.io/library/{image}"
        try:
            tally = PullTally()
            async for item in self.docker.images.pull(reference, auth=auth, stream=True):
                if tally.add(item) and listener is not None:
                    await listener(tally.progress)
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as error:
            message = error.message if isinstance(error, aiodocker.DockerError) else str(error)
            raise VirtError(
                ErrorCode.OPERATION_FAILED,
                f"cannot pull image '{image}' from registry '{registry}': "
                f"{pull_cause(message, registry, auth is not None)} (engine: {message})",
            ) from None

    async def engine(self) -> EngineFacts:
        info = _Info.model_validate(await self._call(self.docker.system.info()))
        return EngineFacts(
            cpus=info.NCPU,
            memory_kib=info.MemTotal // 1024,
            version=info.ServerVersion,
            controls=info.controls(),
        )

    def volume_name(self, name: str) -> str:
        return f"{self.host}.{name}"

    async def volumes(self) -> list[EngineVolume]:
        raw = await self._call(
            self.docker._query_json(
                "volumes", params={"filters": json.dumps({"label": [f"{HOST_LABEL}={self.host}"]})}
            )
        )
        found = []
        for entry in _Volumes.model_validate(raw).Volumes or []:
            labels = entry.Labels or {}
            if labels.get(HOST_LABEL) != self.host or POOL_LABEL not in labels:
                continue
            found.append(self._volume(entry))
        return found

    def _volume(self, entry: _Volume) -> EngineVolume:
        labels = entry.Labels or {}
        return EngineVolume(
            pool=labels.get(POOL_LABEL, ""),
            name=entry.Name.removeprefix(f"{self.host}."),
            mountpoint=entry.Mountpoint,
            capacity=_int_or_none(labels.get(CAPACITY_LABEL)) or 0,
        )

    async def create_volume(self, pool: str, name: str, capacity: int) -> EngineVolume:
        config = {
            "Name": self.volume_name(name),
            "Driver": "local",
            "Labels": {HOST_LABEL: self.host, POOL_LABEL: pool, CAPACITY_LABEL: str(capacity)},
        }
        raw = await self._call(
            self.docker._query_json("volumes/create", method="POST", data=json.dumps(config))
        )
        return self._volume(_Volume.model_validate(raw))

    async def remove_volume(self, name: str) -> None:
        await self._call(
            self.docker._query_json(f"volumes/{self.volume_name(name)}", method="DELETE")
        )

    async def commit(self, handle: str, tag: str, labels: Mapping[str, str]) -> str:
        # aiodocker's commit sends no body: the labels go in the config it posts here
        raw = await self._call(
            self.docker._query_json(
                "commit",
                method="POST",
                params={"container": handle, "repo": SNAPSHOT_REPOSITORY, "tag": tag, "pause": "1"},
                data=json.dumps({"Labels": {**labels, HOST_LABEL: self.host}}),
                timeout=UNBOUNDED,
            )
        )
        return str(raw["Id"])

    async def snapshot_images(self) -> list[SnapshotImage]:
        filters = {"label": [f"{HOST_LABEL}={self.host}", SNAPSHOT_LABEL]}
        raw = await self._call(self.docker.images.list(filters=filters))
        found = []
        for entry in raw:
            labels = entry.get("Labels") or {}
            for reference in entry.get("RepoTags") or []:
                repository, _, tag = reference.rpartition(":")
                if repository == SNAPSHOT_REPOSITORY:
                    found.append(SnapshotImage(id=str(entry["Id"]), tag=tag, labels=labels))
        return found

    async def remove_snapshot_image(self, tag: str) -> None:
        reference = f"{SNAPSHOT_REPOSITORY}:{tag}"
        try:
            await self.docker.images.delete(reference)
        except aiodocker.DockerError as error:
            if error.status != 409:
                raise self._error(error) from None
            # used by a container: untag it, the prune removes the image after
            await self._call(self.docker.images.delete(reference, force=True))
        except (aiohttp.ClientError, OSError) as error:
            raise self._error(error) from None

    async def prune_snapshot_images(self) -> None:
        """Garbage collection of this host's snapshot images that nothing names any more:
        one prune at a time (Docker refuses a second while one runs), and never an error
        for the operation that asked; what one prune leaves, the next takes."""
        filters = {"dangling": ["true"], "label": [f"{HOST_LABEL}={self.host}", SNAPSHOT_LABEL]}
        async with self._pruning:
            try:
                await self._call(
                    self.docker._query_json(
                        "images/prune", method="POST", params={"filters": json.dumps(filters)}
                    )
                )
            except VirtError as error:
                log.warning("snapshot images not pruned: %s", error)

    async def events(
        self, since_ns: int, until_ns: int | None = None
    ) -> AsyncIterator[RuntimeEvent]:
        params = {
            "since": _docker_time(since_ns),
            "filters": json.dumps({"type": ["container"], "label": [f"{HOST_LABEL}={self.host}"]}),
        }
        if until_ns is not None:
            params["until"] = _docker_time(until_ns)
        # not aiodocker's DockerEvents: that is one stream per client, run in a task of
        # its own; a replay up to ``until_ns`` beside the live stream needs two
        try:
            async with self.docker._query(
                "events", params=params, timeout=aiohttp.ClientTimeout(total=None)
            ) as response:
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = await self._runtime_event(line)
                    if event is not None:
                        yield event
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as error:
            raise VirtError(
                ErrorCode.OPERATION_FAILED, f"Docker event stream failed: {error}"
            ) from None

    async def _runtime_event(self, line: bytes) -> RuntimeEvent | None:
        try:
            raw = _DockerEvent.model_validate_json(line)
        except ValidationError:
            return None
        labels = raw.Actor.Attributes
        if raw.Type != "container" or UUID_LABEL not in labels:
            return None
        action, _, status = raw.Action.partition(":")
        pid = 0
        if action in ("start", "restart"):
            # the kernel names the new init at once; Docker's inspect would wait for the
            # container's lock, which the start holds until its call answers
            pid = self._cgroups.init_pid(raw.Actor.ID)
            if not pid:
                observed = await self.observe(raw.Actor.ID)
                pid = observed.pid if observed else 0
        return RuntimeEvent(
            action=action,
            handle=raw.Actor.ID,
            uuid=UUID(labels[UUID_LABEL]),
            name=self.domain_name(labels.get("name", "")),
            time_ns=raw.timeNano,
            exit_code=_int_or_none(labels.get("exitCode")),
            signal=_int_or_none(labels.get("signal")),
            pid=pid,
            status=status.strip() or None,
        )


def _docker_time(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return f"{seconds}.{nanos:09d}"


def _limits(spec: DomainSpec) -> dict[str, int]:
    """The HostConfig fields of the spec's controls. Docker leaves a field of 0 as it is,
    so a control once given stays until the container is made again."""
    limits: dict[str, int] = {}
    if spec.memory_kib is not None:
        limits["Memory"] = spec.memory_kib * 1024
        limits["MemorySwap"] = (spec.swap_hard_limit_kib or spec.memory_kib) * 1024
    if spec.soft_limit_kib is not None:
        limits["MemoryReservation"] = spec.soft_limit_kib * 1024
    if spec.vcpus is not None:
        limits["NanoCpus"] = spec.vcpus * 1_000_000_000
    if spec.cpu_shares is not None:
        limits["CpuShares"] = spec.cpu_shares
    return limits


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class DockerErrorRule:
    """Docker's answer ``status`` (any if None) whose message contains ``says`` (any if
    None) is the libvirt error ``code``."""

    code: ErrorCode
    status: int | None = None
    says: str | None = None

    def matches(self, error: aiodocker.DockerError) -> bool:
        return (self.status is None or error.status == self.status) and (
            self.says is None or self.says in str(error.message)
        )


DOCKER_ERRORS = (
    # a conflict with the container's state: already paused, a name in use, ...
    DockerErrorRule(ErrorCode.OPERATION_INVALID, status=409),
    DockerErrorRule(ErrorCode.OPERATION_INVALID, says="is not running"),
    DockerErrorRule(ErrorCode.OPERATION_INVALID, says="is paused"),
    DockerErrorRule(ErrorCode.INVALID_ARG, status=400),
)
"""Docker's errors as libvirt's, first match wins; anything else is OPERATION_FAILED."""


def virt_error(
    error: aiodocker.DockerError | aiohttp.ClientError | OSError, bound_s: float | None = None
) -> VirtError:
    """The one translation of a failed Docker call into the error a command answers:
    Docker's answers by ``DOCKER_ERRORS`` with Docker's own message, an engine that does
    not answer within ``bound_s`` as OPERATION_TIMEOUT, one that cannot be reached as
    OPERATION_FAILED."""
    if isinstance(error, TimeoutError):
        within = f" within {bound_s:g} s" if bound_s is not None else " in time"
        return VirtError(
            ErrorCode.OPERATION_TIMEOUT,
            f"the Docker engine did not answer{within}; the call may still take effect",
        )
    if not isinstance(error, aiodocker.DockerError):
        return VirtError(ErrorCode.OPERATION_FAILED, f"cannot reach the Docker engine: {error}")
    message = str(error.message)
    for rule in DOCKER_ERRORS:
        if rule.matches(error):
            return VirtError(rule.code, message)
    return VirtError(ErrorCode.OPERATION_FAILED, message)


class CgroupLayout:
    """Where the engine puts a container's cgroup, learned from the first container seen
    running (``learn``: the line of its init's ``/proc/PID/cgroup`` that names the
    container, for the v1 freezer or the v2 hierarchy), so that the init of another
    container of the same engine can be read from the kernel (``init_pid``)."""

    def __init__(self, proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")) -> None:
        self._proc = proc
        self._cgroups = cgroups
        self._template: tuple[str, str, str] | None = None
        """A container's cgroup directory is ``<prefix><handle><suffix>``; then the file
        that tells whether it is frozen. Strings, not paths: pathlib's joins cost more
        than the read, on the path of every pause and unpause event."""

    def learn(self, handle: str, pid: int) -> None:
        if self._template is not None:
            return
        try:
            for line in (self._proc / str(pid) / "cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                before, found, after = path.lstrip("/").partition(handle)
                if not found:
                    continue
                if controllers == "freezer":
                    root = self._cgroups / "freezer"
                    self._template = (f"{root}/{before}", after, "freezer.state")
                    return
                if controllers == "":
                    unified = (self._cgroups / "cgroup.controllers").exists()
                    root = self._cgroups if unified else self._cgroups / "unified"
                    self._template = (f"{root}/{before}", after, "cgroup.events")
        except (OSError, ValueError):
            return

    def frozen(self, handle: str) -> bool | None:
        """The container's freezer state, read from its cgroup directly; None when the
        layout is not known yet or the kernel does not tell."""
        if self._template is None:
            return None
        prefix, suffix, state_file = self._template
        try:
            state = _kernel_file(f"{prefix}{handle}{suffix}/{state_file}")
        except OSError:
            return None
        if state_file == "freezer.state":
            return state.strip() != "THAWED"
        return "frozen 1" in state.splitlines()

    def init_pid(self, handle: str) -> int:
        """The host PID of the container's init (PID 1 of its PID namespace, the
        ``State.Pid`` Docker reports), read from its cgroup's processes; 0 when the
        layout is not known yet or the kernel does not tell."""
        if self._template is None:
            return 0
        prefix, suffix, _ = self._template
        try:
            members = _kernel_file(f"{prefix}{handle}{suffix}/cgroup.procs").split()
            for member in members:
                for line in _kernel_file(f"{self._proc}/{member}/status").splitlines():
                    if line.startswith("NSpid:"):
                        if line.split()[-1] == "1":
                            return int(member)
                        break
        except (OSError, ValueError):
            return 0
        return 0


def _kernel_file(path: str | Path) -> str:
    """A small file of /proc or /sys, read with one open and plain reads: pathlib's
    ``read_text`` costs four times as much, on the path of every pause, unpause and start
    event."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(descriptor, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(descriptor)


def _frozen(
    handle: str, pid: int, proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")
) -> bool | None:
    """The freezer state of the cgroup of host process ``pid``, if that cgroup is the
    container's (cgroup v1 freezer or v2 ``cgroup.events``); None when it cannot be read."""
    try:
        memberships = _kernel_file(proc / str(pid) / "cgroup").splitlines()
        for line in memberships:
            _, controllers, path = line.split(":", 2)
            if handle not in path:
                continue
            if controllers == "freezer":
                state = _kernel_file(cgroups / "freezer" / path.lstrip("/") / "freezer.state")
                return state.strip() != "THAWED"
            if controllers == "":
                events = _kernel_file(cgroups / path.lstrip("/") / "cgroup.events")
                return "frozen 1" in events.splitlines()
    except (OSError, ValueError):
        return None
    return None
