"""Pull progress: the engine's pull stream added up, events rate-limited and closed by
their outcome, credited to the command that pulled, and drawn by the CLI only when
asked or on a terminal."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.output import event_text
from agent.cli.pullbar import PullBar
from agent.host.driver import PullProgress, PullTally
from agent.host.pulls import PullReporter
from agent.host.store import Store
from schemas.commands import Define
from schemas.events import PULL_EVENT_INTERVAL_S, ImagePullEvent
from tests.fakes import fake_host
from tests.unit.test_operations import Rig, command

STREAM: list[dict[str, Any]] = [
    {"status": "Pulling from virtbus/pull", "id": "1"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "a"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "b"},
    {"status": "Waiting", "progressDetail": {}, "id": "b"},
    {"status": "Downloading", "progressDetail": {"current": 100, "total": 300}, "id": "a"},
    {"status": "Downloading", "progressDetail": {"current": 50, "total": 1000}, "id": "b"},
    {"status": "Download complete", "progressDetail": {}, "id": "a"},
    {"status": "Extracting", "progressDetail": {"current": 10, "total": 300}, "id": "a"},
    {"status": "Pull complete", "progressDetail": {}, "id": "a"},
    {"status": "Downloading", "progressDetail": {"current": 900, "total": 1000}, "id": "b"},
    {"status": "Verifying Checksum", "progressDetail": {}, "id": "b"},
    {"status": "Pull complete", "progressDetail": {}, "id": "b"},
    {"status": "Digest: sha256:0123"},
    {"status": "Status: Downloaded newer image for 127.0.0.1:5000/virtbus/pull:1"},
]


def test_the_tally_adds_up_layers_and_downloaded_bytes() -> None:
    tally = PullTally()
    seen = [tally.progress for item in STREAM if tally.add(item)]
    assert len(seen) == len(STREAM) - 3
    assert seen[0] == PullProgress(layers=1, layers_done=0, bytes_done=0, bytes_total=0)
    assert seen[4] == PullProgress(layers=2, layers_done=0, bytes_done=150, bytes_total=1300)
    assert seen[5] == PullProgress(layers=2, layers_done=0, bytes_done=350, bytes_total=1300)
    assert seen[6] == PullProgress(layers=2, layers_done=0, bytes_done=350, bytes_total=1300)
    assert seen[-1] == PullProgress(layers=2, layers_done=2, bytes_done=1300, bytes_total=1300)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Published:
    def __init__(self) -> None:
        self.events: list[ImagePullEvent] = []

    async def __call__(self, routing_key: str, body: bytes) -> None:
        event = ImagePullEvent.model_validate_json(body)
        assert routing_key == event.routing_key == "h1.image.pull"
        self.events.append(event)


async def test_progress_is_rate_limited_and_ends_with_the_outcome() -> None:
    published = Published()
    clock = Clock()
    reporter = PullReporter("h1", published, clock)
    async with reporter.pull("img:1", "cmd-1") as listener:
        for step in range(10):
            await listener(PullProgress(1, 0, step, 10))
            clock.now += PULL_EVENT_INTERVAL_S / 4
    assert [(e.status, e.bytes_done) for e in published.events] == [
        ("pulling", 0),
        ("pulling", 4),
        ("pulling", 8),
        ("complete", 9),
    ]
    assert {(e.image, e.cause) for e in published.events} == {("img:1", "cmd-1")}

    published.events.clear()
    with pytest.raises(RuntimeError):
        async with reporter.pull("img:2", "cmd-2"):
            raise RuntimeError("dns")
    assert [(e.status, e.image) for e in published.events] == [("failed", "img:2")]

    published.events.clear()
    async with reporter.pull("img:3", "cmd-3"):
        pass  # the image was on the host: nothing pulled, nothing said
    assert published.events == []


async def test_a_progress_event_the_broker_refuses_does_not_fail_the_pull() -> None:
    async def refuse(routing_key: str, body: bytes) -> None:
        raise ConnectionError("broker gone")

    async with PullReporter("h1", refuse).pull("img:1", "cmd-1") as listener:
        await listener(PullProgress(1, 0, 1, 2))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    with Store(tmp_path / "h1") as store:
        async with fake_host(store, tmp_path) as host:
            yield Rig(host, host.operations())


async def test_a_define_that_pulls_credits_its_progress_to_the_command(rig: Rig) -> None:
    published = Published()
    rig.operations.pulls = PullReporter("h1", published)
    rig.host.driver.pullable["remote:1"] = [PullProgress(1, 0, 5, 10), PullProgress(1, 1, 10, 10)]
    define = command(Define, spec={"name": "web", "image": "remote:1", "command": ["sleep", "60"]})
    await rig.run(define)
    assert [(e.status, e.cause) for e in published.events] == [
        ("pulling", define.id),
        ("complete", define.id),
    ]
    assert published.events[-1].bytes_done == 10


def _event(status: str, done: int) -> ImagePullEvent:
    return ImagePullEvent.model_validate(
        {
            "host": "h1",
            "time": "2026-12-06T06:00:00Z",
            "image": "registry.example.org/web:1",
            "cause": "c1",
            "status": status,
            "layers": 2,
            "layers_done": 2 if status == "complete" else 0,
            "bytes_done": done,
            "bytes_total": 4_000_000,
        }
    )


@pytest.mark.parametrize(("mode", "drawn"), [("auto", False), ("never", False), ("always", True)])
def test_the_bar_is_drawn_when_asked_or_on_a_terminal(
    mode: str, drawn: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # not a terminal: rich would draw 80 columns
    stream = io.StringIO()  # not a terminal
    with PullBar(stream, mode) as bar:
        bar.update(_event("pulling", 1_000_000))
        bar.update(_event("complete", 4_000_000))
    text = stream.getvalue()
    assert bool(text) is drawn
    if drawn:
        assert "h1: pulling registry.example.org/web:1" in text
        assert "4.0/4.0 MB" in text and "2/2 layers complete" in text


def test_event_prints_a_pull_in_one_line() -> None:
    assert event_text(_event("pulling", 1_000_000)) == (
        "event 'image' for host 'h1': pull of 'registry.example.org/web:1' pulling, "
        "0/2 layers, 1000000/4000000 bytes"
    )
