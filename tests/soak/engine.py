"""A Docker engine of the soak's own, beside the machine's: its own socket, data root,
exec root (hence its own managed containerd) and pid file, no bridge and no iptables.
Restarting it restarts nothing anybody else uses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

START_S = 60.0


class Engine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.pidfile = root / "docker.pid"
        self.log = root / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def docker(self, *argv: str, timeout_s: float = START_S) -> str:
        done = subprocess.run(
            ["docker", "-H", self.url, *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "dockerd",
                    "-H",
                    self.url,
                    "--data-root",
                    str(self.root / "data"),
                    "--exec-root",
                    str(self.root / "exec"),
                    "--pidfile",
                    str(self.pidfile),
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_S
        while True:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.docker("version", timeout_s=5)
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the soak's dockerd did not start; see {self.log}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, as an init system stops it: Docker stops its containers on the way."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(START_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(START_S)

    def restart(self) -> None:
        self.stop()
        self.start()

    def start_with(self, image: str) -> None:
        """Start the engine and copy ``image`` into it."""
        self.start()
        self.load(image)

    def load(self, image: str) -> None:
        """Copy an image from the machine's engine (read only there) into this one."""
        saved = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        assert saved.stdout is not None
        loaded = subprocess.run(
            ["docker", "-H", self.url, "load", "-q"],
            stdin=saved.stdout,
            capture_output=True,
            timeout=START_S,
            check=False,
        )
        saved.stdout.close()
        if saved.wait(START_S) != 0 or loaded.returncode != 0:
            raise RuntimeError(f"could not load {image}: {loaded.stderr.decode().strip()}")

    def destroy(self) -> None:
        """Remove every container, stop the engine, unmount what it left and delete its
        directories; safe to call on a half-started engine."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                ids = self.docker("ps", "-aq").split()
                if ids:
                    self.docker("rm", "-f", *ids)
        self.stop()
        self._kill_leftovers()
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        for point in sorted((line.split()[1] for line in mounts), reverse=True):
            if point.startswith(str(self.root) + "/"):
                subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """Container shims a dockerd stopped mid-restart can leave behind: any process
        whose command line names this engine's root."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError, ProcessLookupError):
                if str(self.root).encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
