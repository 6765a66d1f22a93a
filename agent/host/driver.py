"""The only module that knows Docker: domain operations over aiodocker.

A domain is one container named ``<host>.<name>`` and labelled ``virtbus.host`` and
``virtbus.uuid``; the driver lists, watches and touches only containers with its own
host label, so a command can never reach anything else on the engine. ``Driver`` is the
seam: the agent depends on the protocol, tests put a fake behind it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import aiodocker
import aiodocker.stream
import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

from agent.errors import VirtError
from schemas.codes import ErrorCode
from schemas.domain import DomainSpec

HOST_LABEL = "virtbus.host"
UUID_LABEL = "virtbus.uuid"
CALL_TIMEOUT = aiohttp.ClientTimeout(total=300.0, sock_connect=30.0)
"""The bound on one call to the engine (aiohttp's default, which aiodocker lifts for the
calls that wait on a container)."""
DROPPED_CAPABILITIES = ("AUDIT_WRITE", "MKNOD", "NET_RAW")
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
    memory_kib: int | None
    vcpus: int | None
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


class Driver(Protocol):
    async def observe_all(self) -> list[Observed]: ...
    async def observe(self, handle: str) -> Observed | None: ...
    async def paused(self, handle: str, pid: int) -> bool | None:
        """Whether the container (whose init has host PID ``pid``, 0 if unknown) is
        paused now; None once it is gone."""
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
    async def update(self, handle: str, memory_kib: int | None, vcpus: int | None) -> None: ...
    async def forbid_restarts(self, handle: str) -> None:
        """Set the container's restart policy to ``no`` (an earlier agent set others)."""
        ...

    async def usage(self, handle: str) -> Usage: ...
    async def default_command(self, image: str, credentials: Credentials) -> list[str] | None:
        """The image's own command; pulls the image first when the host lacks it."""
        ...

    async def engine(self) -> EngineFacts: ...
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
    NanoCpus: int = 0
    Mounts: list[_Bind] | None = None
    RestartPolicy: _RestartPolicy = _RestartPolicy()


class _Inspect(_Edge):
    Id: str
    Name: str
    State: _State
    Config: _Config
    HostConfig: _HostConfig


class _ImageInspect(_Edge):
    Config: _Config | None = None


class _Info(_Edge):
    NCPU: int
    MemTotal: int
    ServerVersion: str


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
    ``pids_limit`` applies to a domain whose spec sets none."""

    def __init__(
        self,
        host: str,
        url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        pids_limit: int,
    ) -> None:
        self.host = host
        self._pids_limit = pids_limit
        self._url = url
        self._ssl_context = ssl_context
        self._docker: aiodocker.Docker | None = None

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self._url, ssl_context=self._ssl_context)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    def container_name(self, name: str) -> str:
        return f"{self.host}.{name}"

    def domain_name(self, container_name: str) -> str:
        bare = container_name.lstrip("/")
        return bare.removeprefix(f"{self.host}.")

    async def _call(self, coroutine: Any) -> Any:
        try:
            return await coroutine
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as error:
            raise virt_error(error) from None

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
        frozen = _frozen(handle, pid) if pid > 0 else None
        if frozen is not None:
            return frozen
        observed = await self.observe(handle)
        return None if observed is None else observed.status == "paused"

    def _container(self, handle: str) -> aiodocker.containers.DockerContainer:
        return self.docker.containers.container(handle)

    async def observe(self, handle: str) -> Observed | None:
        try:
            raw = await self._container(handle).show()
        except aiodocker.DockerError as error:
            if error.status == 404:
                return None
            raise virt_error(error) from None
        except (aiohttp.ClientError, OSError) as error:
            raise virt_error(error) from None
        facts = _Inspect.model_validate(raw)
        labels = facts.Config.Labels or {}
        if labels.get(HOST_LABEL) != self.host or UUID_LABEL not in labels:
            return None
        return Observed(
            handle=facts.Id,
            uuid=UUID(labels[UUID_LABEL]),
            name=self.domain_name(facts.Name),
            status=facts.State.Status,
            pid=facts.State.Pid,
            exit_code=facts.State.ExitCode,
            oom_killed=facts.State.OOMKilled,
            memory_kib=facts.HostConfig.Memory // 1024 or None,
            vcpus=facts.HostConfig.NanoCpus // 1_000_000_000 or None,
            mounts={bind.Target: bind.Source for bind in facts.HostConfig.Mounts or []},
            restart_policy=facts.HostConfig.RestartPolicy.Name or "no",
        )

    async def create(self, name: str, uuid: UUID, spec: DomainSpec) -> str:
        """The container runs unprivileged whatever the engine's defaults: no added
        capabilities and three of Docker's defaults dropped, no new privileges through
        setuid, no host namespace, no device, a process limit. Docker never restarts it:
        the agent does, after checking the policy again (``on_crash: restart``)."""
        host_config: dict[str, Any] = {
            "Init": spec.init,
            "NetworkMode": spec.network,
            "RestartPolicy": {"Name": "no"},
            # Type bind: a missing source is an error, never a directory made as root
            "Mounts": [
                {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.readonly}
                for m in spec.mounts
            ],
            **unprivileged(spec.pids_limit or self._pids_limit),
        }
        host_config.update(_limits(spec.memory_kib, spec.vcpus))
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
        return str(container.id)

    async def remove(self, handle: str) -> None:
        await self._call(self._container(handle).delete(force=True, v=True, timeout=CALL_TIMEOUT))

    async def start(self, handle: str) -> None:
        await self._call(self._container(handle).start())

    async def stop(self, handle: str, timeout_s: int) -> None:
        await self._call(self._container(handle).stop(t=timeout_s, timeout=CALL_TIMEOUT))

    async def kill(self, handle: str) -> None:
        await self._call(self._container(handle).kill(signal="KILL", timeout=CALL_TIMEOUT))

    async def restart(self, handle: str, timeout_s: int = 10) -> None:
        timeout = CALL_TIMEOUT if timeout_s >= 0 else aiohttp.ClientTimeout(total=None)
        await self._call(self._container(handle).restart(t=timeout_s, timeout=timeout))

    async def signal(self, handle: str, signal: str) -> None:
        await self._call(self._container(handle).kill(signal=signal, timeout=CALL_TIMEOUT))

    async def wait_stopped(self, handle: str) -> None:
        forever = aiohttp.ClientTimeout(total=None)
        await self._call(self._container(handle).wait(timeout=forever))

    async def output(self, handle: str, max_bytes: int) -> tuple[bytes, bool]:
        # Docker cannot bound logs in bytes: lines, then the tail of their bytes
        lines = await self._call(
            self._container(handle).log(stdout=True, stderr=True, tail=str(max_bytes))
        )
        text = "".join(lines).encode(errors="surrogateescape")
        return text[-max_bytes:], len(text) > max_bytes

    async def attach(self, handle: str) -> Terminal:
        stream = self._container(handle).attach(stdin=True, stdout=True, stderr=True)
        try:
            await stream.__aenter__()
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as error:
            raise virt_error(error) from None
        return _AttachedTerminal(stream)

    async def pause(self, handle: str) -> None:
        await self._call(self._container(handle).pause())

    async def unpause(self, handle: str) -> None:
        await self._call(self._container(handle).unpause())

    async def rename(self, handle: str, name: str) -> None:
        await self._call(self._container(handle).rename(self.container_name(name)))

    async def update(self, handle: str, memory_kib: int | None, vcpus: int | None) -> None:
        # aiodocker has no update
        await self._call(
            self.docker._query_json(
                f"containers/{handle}/update",
                method="POST",
                data=json.dumps(_limits(memory_kib, vcpus)),
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

    async def default_command(self, image: str, credentials: Credentials) -> list[str] | None:
        try:
            raw = await self.docker.images.inspect(image)
        except aiodocker.DockerError as error:
            if error.status != 404:
                raise virt_error(error) from None
            await self._pull(image, credentials)
            raw = await self._call(self.docker.images.inspect(image))
        config = _ImageInspect.model_validate(raw).Config
        if config is None:
            return None
        return config.Cmd or config.Entrypoint or None

    async def _pull(self, image: str, credentials: Credentials) -> None:
        registry = registry_of(image)
        auth = None
        if registry in credentials:
            username, password = credentials[registry]
            auth = {"username": username, "password": password, "serveraddress": registry}
        # aiodocker sends credentials only with a reference that names its registry
        reference = image if "/" in image else f"docker.io/library/{image}"
        try:
            await self.docker.images.pull(reference, auth=auth)
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as error:
            message = error.message if isinstance(error, aiodocker.DockerError) else str(error)
            # the engine's own words can hide a refused login (an HTTP fallback's error)
            login = "with the host.login" if auth else "without a host.login"
            raise VirtError(
                ErrorCode.OPERATION_FAILED,
                f"cannot pull image '{image}' {login} for registry '{registry}': {message}",
            ) from None

    async def engine(self) -> EngineFacts:
        info = _Info.model_validate(await self._call(self.docker.system.info()))
        return EngineFacts(
            cpus=info.NCPU, memory_kib=info.MemTotal // 1024, version=info.ServerVersion
        )

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


def _limits(memory_kib: int | None, vcpus: int | None) -> dict[str, int]:
    limits: dict[str, int] = {}
    if memory_kib is not None:
        limits["Memory"] = limits["MemorySwap"] = memory_kib * 1024
    if vcpus is not None:
        limits["NanoCpus"] = vcpus * 1_000_000_000
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


def virt_error(error: aiodocker.DockerError | aiohttp.ClientError | OSError) -> VirtError:
    """The one translation of a failed Docker call into the error a command answers:
    Docker's answers by ``DOCKER_ERRORS`` with Docker's own message, an engine that
    cannot be reached (or does not answer in time) as OPERATION_FAILED."""
    if not isinstance(error, aiodocker.DockerError):
        return VirtError(ErrorCode.OPERATION_FAILED, f"cannot reach the Docker engine: {error}")
    message = str(error.message)
    for rule in DOCKER_ERRORS:
        if rule.matches(error):
            return VirtError(rule.code, message)
    return VirtError(ErrorCode.OPERATION_FAILED, message)


def _frozen(
    handle: str, pid: int, proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")
) -> bool | None:
    """The freezer state of the cgroup of host process ``pid``, if that cgroup is the
    container's (cgroup v1 freezer or v2 ``cgroup.events``); None when it cannot be read."""
    try:
        memberships = (proc / str(pid) / "cgroup").read_text().splitlines()
        for line in memberships:
            _, controllers, path = line.split(":", 2)
            if handle not in path:
                continue
            if controllers == "freezer":
                state = (cgroups / "freezer" / path.lstrip("/") / "freezer.state").read_text()
                return state.strip() != "THAWED"
            if controllers == "":
                events = (cgroups / path.lstrip("/") / "cgroup.events").read_text()
                return "frozen 1" in events.splitlines()
    except (OSError, ValueError):
        return None
    return None
