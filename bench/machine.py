"""The machine a run measured: CPU, cores, memory, kernel, Docker, RabbitMQ, Python."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import aiodocker

from agent import __version__
from bench.core import run_tool
from bench.rpc import RpcClient

PACKAGES = ("aio-pika", "aiormq", "aiodocker", "pydantic", "pyinstrument")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def describe(docker: aiodocker.Docker, client: RpcClient) -> dict[str, Any]:
    engine = await docker.version()
    info = await docker.system.info()
    server = client.server_properties
    commit = await run_tool("git", "rev-parse", "--short", "HEAD")
    dirty = await run_tool("git", "status", "--porcelain", "--", "agent", "schemas")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_memory_gib(), 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "docker": f"{engine.get('Version')} (API {engine.get('ApiVersion')}, "
        f"{info.get('Driver')} storage, cgroup {info.get('CgroupVersion', '?')})",
        "rabbitmq": f"{_text(server.get('version', '?'))} ({_text(server.get('platform', '?'))})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {package: _version(package) for package in PACKAGES},
        "virtbus": __version__,
        "commit": (commit or "?").strip() + (" (work tree modified)" if dirty else ""),
        "executable": sys.executable,
    }


def one_line(machine: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v != "-")
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB RAM, "
        f"{machine['kernel']}; Docker {machine['docker']}; RabbitMQ {machine['rabbitmq']}; "
        f"{machine['python']} ({packages}); virtbus {machine['virtbus']} at {machine['commit']}"
    )
