"""The Docker-side baseline: the same operations as bare aiodocker calls, on containers
configured as the agent's driver configures a domain's (init, no network, labels)."""

from __future__ import annotations

import uuid
from typing import Any

import aiodocker

from agent.host.driver import HOST_LABEL, UUID_LABEL, unprivileged
from agent.host.policy import DEFAULT_PIDS
from bench.core import IMAGE

OPS = ("start", "suspend", "resume", "lookup", "shutdown", "destroy")
"""The B1/B7 operations, in libvirt's words."""

CYCLE = ("start", "suspend", "resume", "lookup", "shutdown", "start", "destroy")
"""One round of a domain's life that leaves it shut off, as it began."""

AGENT_OPS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "start": ("domain.create", None),
    "suspend": ("domain.suspend", None),
    "resume": ("domain.resume", None),
    "lookup": ("domain.lookup", None),
    "shutdown": ("domain.shutdown", {"timeout_s": 10}),
    "destroy": ("domain.destroy", None),
}


class RawDocker:
    """Containers of one (agent-less) host label, driven by bare aiodocker calls."""

    def __init__(self, docker: aiodocker.Docker, host: str) -> None:
        self.docker = docker
        self.host = host

    def config(self, command: list[str] | None = None) -> dict[str, Any]:
        return {
            "Image": IMAGE,
            "Cmd": command or ["sleep", "3600"],
            "Env": [],
            "Labels": {HOST_LABEL: self.host, UUID_LABEL: str(uuid.uuid4())},
            # the container the agent asks for (agent/host/driver.py), so both sides ask
            # Docker for the same work
            "HostConfig": {
                "Init": True,
                "NetworkMode": "none",
                "RestartPolicy": {"Name": "no"},
                "Mounts": [],
                **unprivileged(DEFAULT_PIDS),
            },
        }

    def name(self, domain: str) -> str:
        return f"{self.host}.{domain}"

    async def create(self, domain: str) -> str:
        answer = await self.docker._query_json(
            "containers/create",
            method="POST",
            params={"name": self.name(domain)},
            data=self.config(),
        )
        return str(answer["Id"])

    async def start(self, handle: str) -> None:
        await self.docker._query_json(f"containers/{handle}/start", method="POST")

    async def kill(self, handle: str) -> None:
        # Docker waits for the container to exit on SIGKILL before it answers
        await self.docker._query_json(
            f"containers/{handle}/kill", method="POST", params={"signal": "KILL"}
        )

    async def remove(self, handle: str) -> None:
        await self.docker._query_json(
            f"containers/{handle}", method="DELETE", params={"force": "1", "v": "1"}
        )

    async def op(self, handle: str, op: str) -> None:
        """One of ``OPS`` as the single Docker call that does it."""
        if op == "start":
            await self.start(handle)
        elif op == "suspend":
            await self.docker._query_json(f"containers/{handle}/pause", method="POST")
        elif op == "resume":
            await self.docker._query_json(f"containers/{handle}/unpause", method="POST")
        elif op == "lookup":
            await self.docker._query_json(f"containers/{handle}/json")
        elif op == "shutdown":
            await self.docker._query_json(
                f"containers/{handle}/stop", method="POST", params={"t": "10"}
            )
        elif op == "destroy":
            await self.kill(handle)
        else:
            raise ValueError(op)
