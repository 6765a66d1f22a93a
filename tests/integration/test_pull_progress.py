"""A pull that takes longer than the CLI's reply timeout: the host reports its progress
on ``<host>.image.pull`` (rate-limited, then ``complete``), the CLI draws it and keeps
waiting while progress comes, and ``define`` answers once, after the pull. The registry
is tests/support/registry.py's, on loopback, sending the image's fresh layer slowly."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator

import aiodocker
import pytest

from schemas.events import PULL_EVENT_INTERVAL_S, ImagePullEvent
from tests.support.fleet import CLI, Host
from tests.support.registry import FakeRegistry
from tests.support.services import IMAGE

pytestmark = pytest.mark.integration

REPLY_TIMEOUT_S = 1.5
PULL_S = 4.0
"""How long the registry takes to send the fresh layer: well beyond the reply timeout."""


@pytest.fixture
async def registry(services: None, docker: aiodocker.Docker) -> AsyncIterator[FakeRegistry]:
    layer_bytes = 2 * 1024 * 1024
    async with FakeRegistry(IMAGE, layer_bytes, rate=int(layer_bytes / PULL_S)) as registry:
        try:
            yield registry
        finally:
            with contextlib.suppress(aiodocker.DockerError):
                await docker.images.delete(registry.image, force=True)


async def test_define_waits_for_a_long_pull_and_shows_its_progress(
    host: Host, registry: FakeRegistry, cli: CLI
) -> None:
    definition = cli.spec_file("pulled", image=registry.image)
    cli.env["COLUMNS"] = "200"  # stderr is a pipe: rich would draw 80 columns
    started = time.monotonic()
    ran = await cli(
        "define",
        definition,
        "--host",
        host.name,
        "--timeout",
        str(REPLY_TIMEOUT_S),
        "--progress",
        "always",
        timeout_s=60,
    )
    took = time.monotonic() - started
    # the pull's end first: whatever the CLI said, the image is there to remove after
    final = await host.events.wait_for(
        lambda e: isinstance(e, ImagePullEvent) and e.status != "pulling"
    )
    assert ran.status == 0, ran.err
    assert "Domain 'pulled' defined" in ran.out
    assert took > PULL_S * 0.8 > REPLY_TIMEOUT_S
    assert f"pulling {registry.image}" in ran.err
    assert "2/2 layers complete" in ran.err and "MB" in ran.err

    pulls = [e for e in host.events.events if isinstance(e, ImagePullEvent)]
    assert isinstance(final, ImagePullEvent) and final.status == "complete"
    assert {e.image for e in pulls} == {registry.image}
    assert len({e.cause for e in pulls}) == 1 and final.cause is not None
    progress = [e for e in pulls if e.status == "pulling"]
    assert len(progress) >= PULL_S / 2 / PULL_EVENT_INTERVAL_S
    gaps = [(b.time - a.time).total_seconds() for a, b in itertools.pairwise(progress)]
    assert min(gaps) >= PULL_EVENT_INTERVAL_S * 0.9
    done = [e.bytes_done for e in progress]
    assert done == sorted(done) and done[0] < done[-1]
    assert final.bytes_done == final.bytes_total >= registry.fresh_bytes
    assert final.layers == final.layers_done >= 2


async def test_a_pull_the_registry_refuses_says_why_and_ends_with_a_failed_event(
    host: Host, registry: FakeRegistry, cli: CLI
) -> None:
    missing = registry.image.replace(":1", ":2")
    ran = await cli(
        "define", cli.spec_file("missing", image=missing), "--host", host.name, timeout_s=60
    )
    assert ran.status == 1
    assert f"cannot pull image '{missing}'" in ran.err
    assert "the registry has no such image (not found)" in ran.err
    final = await host.events.wait_for(lambda e: isinstance(e, ImagePullEvent))
    assert isinstance(final, ImagePullEvent) and final.status == "failed"
    assert final.image == missing
