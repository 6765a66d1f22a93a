"""The processes a benchmark runs: agents (``virtbus agent``), bare echo servers and
fleet workers. Each is registered with the run's cleanup as soon as it exists."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any, Literal

from bench.core import BenchError, Context
from bench.rpc import EventTap, RpcClient

REPO = Path(__file__).resolve().parent.parent
VIRTBUS = Path(sys.executable).parent / "virtbus"
READY_TIMEOUT_S = 120.0
Responder = Literal["agent", "bare"]
"""What a fleet worker's hosts are: agents over the fake driver, or bare hosts."""
STOP_TIMEOUT_S = 60.0


def child_env(ctx: Context) -> dict[str, str]:
    """The environment of a child: ours without ``VIRTBUS_*``, plus the broker URL."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VIRTBUS_")}
    env["VIRTBUS_AMQP_URL"] = ctx.amqp_url
    return env


def log_file(ctx: Context, name: str) -> IO[bytes]:
    directory = ctx.workdir / "logs"
    directory.mkdir(parents=True, exist_ok=True)
    return (directory / f"{name}.log").open("ab")


def log_tail(ctx: Context, name: str, lines: int = 15) -> str:
    path = ctx.workdir / "logs" / f"{name}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None while it does not exist."""
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return document


async def wait_file(path: Path, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (summary := read_json(path)) is None:
        if time.monotonic() > deadline:
            raise BenchError(f"profile {path} was not written")
        await asyncio.sleep(0.05)
    return summary


async def terminate(process: asyncio.subprocess.Process, timeout_s: float) -> int:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return await process.wait()


class AgentProcess:
    """One ``virtbus agent`` with the real Docker driver. Under profiling it runs as
    ``python -m bench.agentproc`` (the same CLI, plus pyinstrument windows)."""

    def __init__(
        self,
        ctx: Context,
        client: RpcClient,
        host: str,
        queue_type: str = "quorum",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.host = host
        self.queue_type = queue_type
        self.extra = extra
        self.process: asyncio.subprocess.Process | None = None
        self._spawns = 0
        self._windows = 0
        self._prefix = ""

    @property
    def argv(self) -> list[str]:
        args = [
            "agent",
            "--host",
            self.host,
            "--queue-type",
            self.queue_type,
            "--state-dir",
            str(self.ctx.workdir / "state"),
            "--heartbeat-s",
            "3600",
            "--drain-s",
            "10",
            "--log-level",
            "warning",
            *self.extra,
        ]
        if self.ctx.profiling:
            return [sys.executable, "-m", "bench.agentproc", *args]
        return [str(VIRTBUS), *args]

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("agent is not running")
        return self.process.pid

    async def start(
        self, timeout_s: float = READY_TIMEOUT_S, profile_startup: bool = False
    ) -> float:
        """Spawn the agent; returns the seconds from spawn to its ``agent.online``. With
        ``profile_startup`` (in profile runs) start-up up to ``agent.online`` is profiled."""
        tap = await EventTap(self.client.channel, [f"{self.host}.agent.online"]).start()
        env = child_env(self.ctx)
        self._spawns += 1
        self._windows = 0
        self._prefix = str(self.ctx.profile_dir / f"{self.ctx.current}-{self.host}-{self._spawns}")
        profile_startup = profile_startup and self.ctx.profiling
        if self.ctx.profiling:
            self.ctx.profile_dir.mkdir(parents=True, exist_ok=True)
            env["BENCH_PROFILE_OUT"] = self._prefix
            if profile_startup:
                env["BENCH_PROFILE_STARTUP"] = "1"
        with log_file(self.ctx, self.host) as log:
            spawned_ns = time.time_ns()
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=REPO,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.ctx.cleanup.processes.append(self.process)
        online = asyncio.create_task(tap.wait_for(lambda a: True, timeout_s))
        died = asyncio.create_task(self.process.wait())
        try:
            done, _ = await asyncio.wait({online, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            died.cancel()
            if not online.done():
                online.cancel()
            await tap.stop()
        if online not in done:
            raise BenchError(
                f"agent {self.host} exited ({self.process.returncode}) before it was ready:\n"
                + log_tail(self.ctx, self.host)
            )
        startup_s = (online.result().received_ns - spawned_ns) / 1e9
        if profile_startup:
            await self._collect(self.process.pid, "start-up to agent.online")
        return startup_s

    async def _collect(self, pid: int, label: str) -> None:
        path = Path(f"{self._prefix}-{self._windows}.json")
        self._windows += 1
        os.kill(pid, signal.SIGUSR2)
        summary = await wait_file(path, 60)
        self.ctx.profiles.append(
            {
                "process": f"agent {self.host} (pid {pid})",
                "window": label,
                "call_tree": str(path.with_suffix(".txt")),
                **summary,
            }
        )

    async def stop(self) -> int:
        if self.process is None:
            return 0
        code = await terminate(self.process, STOP_TIMEOUT_S)
        self.process = None
        return code

    @contextlib.asynccontextmanager
    async def window(self, label: str) -> AsyncIterator[None]:
        """Profile the agent for the duration of the block (only in profile runs)."""
        if not self.ctx.profiling or self.process is None:
            yield
            return
        pid = self.process.pid
        os.kill(pid, signal.SIGUSR1)
        await asyncio.sleep(0.05)
        try:
            yield
        finally:
            await self._collect(pid, label)


class EchoProcess:
    """``python -m bench.echo``: the bare RPC echo server on a host queue of its own."""

    def __init__(self, ctx: Context, host: str, queue_type: str) -> None:
        self.ctx = ctx
        self.host = host
        self.queue_type = queue_type
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with log_file(self.ctx, self.host) as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.echo",
                "--amqp-url",
                self.ctx.amqp_url,
                "--host",
                self.host,
                "--queue-type",
                self.queue_type,
                cwd=REPO,
                env=child_env(self.ctx),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        self.ctx.cleanup.processes.append(self.process)
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), READY_TIMEOUT_S)
        if line.strip() != b"ready":
            raise BenchError("echo server did not start:\n" + log_tail(self.ctx, self.host))

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("echo server is not running")
        return self.process.pid

    async def stop(self) -> None:
        if self.process is not None:
            await terminate(self.process, STOP_TIMEOUT_S)
            self.process = None


class FleetProcess:
    """``python -m bench.fleet``: many in-process agents over the fake driver."""

    def __init__(
        self,
        ctx: Context,
        name: str,
        hosts: list[str],
        group: str,
        queue_type: str,
        shared_connection: bool,
        heartbeat_s: float | None = None,
        responder: Responder = "agent",
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.responder = responder
        """``agent``: real agents over the fake driver; ``bare``: ``bench.echo.BareHost``."""
        self.heartbeat_s = heartbeat_s
        """None: the worker's own (no heartbeats during a run)."""
        self.hosts = hosts
        self.group = group
        self.queue_type = queue_type
        self.shared_connection = shared_connection
        self.process: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}

    async def start(self, timeout_s: float = 300.0) -> dict[str, Any]:
        config = {
            "amqp_url": self.ctx.amqp_url,
            "hosts": self.hosts,
            "group": self.group,
            "queue_type": self.queue_type,
            "state_dir": str(self.ctx.workdir / "state"),
            "shared_connection": self.shared_connection,
            "heartbeat_s": self.heartbeat_s,
            "responder": self.responder,
            "profile_out": (
                str(self.ctx.profile_dir / f"{self.ctx.current}-{self.name}")
                if self.ctx.profiling
                else None
            ),
        }
        if self.ctx.profiling:
            self.ctx.profile_dir.mkdir(parents=True, exist_ok=True)
        with log_file(self.ctx, self.name) as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.fleet",
                json.dumps(config),
                cwd=REPO,
                env=child_env(self.ctx),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        self.ctx.cleanup.processes.append(self.process)
        self.ready = await self._read(timeout_s)
        return self.ready

    async def _read(self, timeout_s: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise BenchError(f"fleet worker {self.name} ended:\n" + log_tail(self.ctx, self.name))
        answer: dict[str, Any] = json.loads(line)
        return answer

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("fleet worker is not running")
        return self.process.pid

    async def request(self, command: dict[str, Any], timeout_s: float = 300.0) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        return await self._read(timeout_s)

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(BenchError, TimeoutError, ConnectionError):
                await self.request({"cmd": "stop"}, timeout_s=STOP_TIMEOUT_S)
        await terminate(self.process, STOP_TIMEOUT_S)
        self.process = None

    @contextlib.asynccontextmanager
    async def window(self, label: str) -> AsyncIterator[None]:
        if not self.ctx.profiling or self.process is None:
            yield
            return
        await self.request({"cmd": "profile_start"})
        try:
            yield
        finally:
            answer = await self.request({"cmd": "profile_stop"})
            if answer.get("profile"):
                path = Path(answer["profile"])
                self.ctx.profiles.append(
                    {
                        "process": f"fleet worker {self.name} ({len(self.hosts)} agents)",
                        "window": label,
                        "call_tree": str(path.with_suffix(".txt")),
                        **(read_json(path) or {}),
                    }
                )
