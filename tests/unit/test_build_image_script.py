"""``scripts/build-image.sh`` on a machine that has neither the base image nor its cached
root filesystem: it makes the root filesystem, imports it and ends well, with no scratch
directory left. ``debootstrap``, ``chroot`` and ``docker`` are stand-ins on ``PATH``
that log their calls (the real ones take minutes and a mirror; the image's integration
test runs them)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "build-image.sh"

STAND_INS = {
    # debootstrap [options] SUITE TARGET MIRROR: a root filesystem of one file
    "debootstrap": 'echo "debootstrap $*" >> "$CALLS"; mkdir -p "${@: -2:1}/etc"; '
    'echo bookworm > "${@: -2:1}/etc/debian_version"',
    "chroot": 'echo "chroot $*" >> "$CALLS"',
    # no image yet: inspect fails, import succeeds
    "docker": 'echo "docker $*" >> "$CALLS"; [ "$1" != image ]',
}


def test_a_base_built_from_nothing_ends_well_and_leaves_no_scratch_root(tmp_path: Path) -> None:
    bin_dir, cache, scratch = tmp_path / "bin", tmp_path / "cache", tmp_path / "tmp"
    bin_dir.mkdir()
    scratch.mkdir()
    for name, body in STAND_INS.items():
        tool = bin_dir / name
        tool.write_text(f"#!/usr/bin/env bash\n{body}\n")
        tool.chmod(0o755)
    calls = tmp_path / "calls.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALLS": str(calls),
        "TMPDIR": str(scratch),
        "VIRTBUS_CACHE_DIR": str(cache),
        "VIRTBUS_BASE_IMAGE": "virtbus-base:stand-in",
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), "--base-only"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    logged = calls.read_text().splitlines()
    assert [line.split()[0] for line in logged] == ["docker", "debootstrap", "chroot", "docker"]
    assert logged[-1].startswith("docker import")
    tarball = cache / "virtbus-base-stand-in.tar"
    listed = subprocess.run(["tar", "-tf", str(tarball)], capture_output=True, text=True)
    assert "./etc/debian_version" in listed.stdout.split()
    assert list(scratch.iterdir()) == []
