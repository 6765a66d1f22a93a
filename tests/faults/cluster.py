"""A three-node RabbitMQ cluster on this machine, for the fault suite.

Nodes ``vbf1..3@localhost`` listen on 127.0.0.1 ports 5701-5703 (the soak's, ``vbs1..3``,
on 5711-5713), keep their data in a directory of their own and run as the ``rabbitmq``
user next to the default node.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BASE_PORT = 5700
TIMEOUT_S = 120


def rabbitmqctl(node: str, *argv: str, timeout_s: float = TIMEOUT_S) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", "-n", node, *argv],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl -n {node} {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Node:
    index: int
    root: Path
    prefix: str = "vbf"
    base_port: int = BASE_PORT

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.index}@localhost"

    @property
    def port(self) -> int:
        return self.base_port + self.index

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def directory(self) -> Path:
        return self.root / f"{self.prefix}{self.index}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "enabled_plugins").write_text("[].\n")
        shutil.chown(self.directory, "rabbitmq", "rabbitmq")
        for path in self.directory.iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")
        environment = {
            "HOME": "/var/lib/rabbitmq",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 20000),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_PID_FILE": str(self.directory / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.directory / "plugins-expand"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq"),
        }
        subprocess.run(
            [
                "runuser",
                "-u",
                "rabbitmq",
                "--",
                "env",
                *(f"{key}={value}" for key, value in environment.items()),
                "/usr/lib/rabbitmq/bin/rabbitmq-server",
                "-detached",
            ],
            check=True,
            timeout=TIMEOUT_S,
            cwd="/var/lib/rabbitmq",
        )
        rabbitmqctl(self.name, "wait", str(self.directory / "pid"), "--timeout", str(TIMEOUT_S))
        rabbitmqctl(self.name, "await_startup")

    def stop(self) -> None:
        rabbitmqctl(self.name, "stop")

    def kill(self) -> None:
        """SIGKILL the node's VM: no goodbye to its peers or clients."""
        pid = int((self.directory / "pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + TIMEOUT_S
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


class Cluster:
    def __init__(
        self, root: Path, size: int = 3, prefix: str = "vbf", base_port: int = BASE_PORT
    ) -> None:
        self.nodes = [Node(index, root, prefix, base_port) for index in range(1, size + 1)]
        self.root = root

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "rabbitmq", "rabbitmq")
        first, *others = self.nodes
        # the nodes boot side by side (each on its own), then join the first in turn
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            for booted in [pool.submit(node.start) for node in self.nodes]:
                booted.result()
        for node in others:
            rabbitmqctl(node.name, "stop_app")
            rabbitmqctl(node.name, "reset")
            rabbitmqctl(node.name, "join_cluster", first.name)
            rabbitmqctl(node.name, "start_app")
            rabbitmqctl(node.name, "await_startup")

    def leader(self, queue: str) -> Node:
        """The node that leads a quorum queue now, as a running node sees it."""
        for line in self._ask("list_queues", "name", "leader").splitlines():
            name, _, leader = line.partition("\t")
            if name == queue:
                return self._node(leader)
        raise LookupError(f"no queue {queue} in the cluster")

    def serving(self, connection_name: str) -> Node:
        """The node that holds the client connection of that name."""
        for line in self._ask("list_connections", "pid", "client_properties").splitlines():
            if f'{{"connection_name","{connection_name}"}}' in line:
                return self._node(line.removeprefix("<").partition(".")[0])
        raise LookupError(f"no connection {connection_name} in the cluster")

    def _ask(self, *argv: str) -> str:
        return rabbitmqctl(self.nodes[-1].name, *argv, "--no-table-headers")

    def _node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def stop(self, keep: bool = False) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
