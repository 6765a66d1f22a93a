"""The progress bar of an image pull that ``define`` or ``create`` started on a host,
drawn on stderr from the host's ``<host>.image.pull`` events."""

from __future__ import annotations

import argparse
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from schemas.events import ImagePullEvent

PROGRESS_CHOICES = ("auto", "always", "never")


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=PROGRESS_CHOICES,
        default="auto",
        help="show the host's image pull as a progress bar on stderr: auto (default) "
        "when stderr is a terminal",
    )


class PullBar:
    """``with PullBar(stream, mode) as bar``: ``bar.update`` is the ``on_pull`` of a
    command; draws nothing unless a pull is reported, and nothing at all unless ``mode``
    is ``always``, or ``auto`` with ``stream`` a terminal (rich is imported only then)."""

    def __init__(self, stream: TextIO, mode: str = "auto") -> None:
        self._stream = stream
        self._shown = mode == "always" or (mode == "auto" and stream.isatty())
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> PullBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, event: ImagePullEvent) -> None:
        if not self._shown:
            return
        if self._progress is None or self._task is None:
            self._progress, self._task = self._start(event)
        self._progress.update(
            self._task,
            completed=event.bytes_done,
            total=event.bytes_total or None,
            layers=f"{event.layers_done}/{event.layers} layers",
            status=event.status,
        )

    def _start(self, event: ImagePullEvent) -> tuple[Progress, TaskID]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[layers]} {task.fields[status]}"),
            # not a terminal (--progress always): one line per refresh, no colours
            console=Console(file=self._stream, force_terminal=self._stream.isatty() or None),
            transient=False,
        )
        progress.start()
        task = progress.add_task(
            f"{event.host}: pulling {event.image}", total=None, layers="", status=""
        )
        return progress, task
