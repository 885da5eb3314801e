"""What a run prints: a live progress bar on a terminal, periodic plain lines in logs.

The engine reports events (epoch start, a batch done, a logged step, epoch end); a
reporter decides how they look. Warnings and errors always go to stderr, --quiet or not.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True, soft_wrap=True)
_quiet = [False]  # --quiet, for what is printed before a run's reporter exists


def speaks() -> bool:
    """In a multi-process run only rank 0 prints, so each message shows once."""
    return os.environ.get("RANK", "0") == "0"


def set_quiet(quiet: bool) -> None:
    _quiet[0] = quiet


def note(text: str) -> None:
    """A line about what start-up is doing (scanning, decoding), unless --quiet."""
    if speaks() and not _quiet[0]:
        print(text, flush=True)


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Report a long start-up step: a bar on a terminal, one line elsewhere, nothing with
    --quiet. Yields `advance(n)`."""
    if not speaks() or _quiet[0]:
        yield lambda n: None
        return
    if not sys.stdout.isatty():
        print(f"{description} ...", flush=True)
        yield lambda n: None
        return
    bar = Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = bar.add_task("", total=total)
    with bar:
        yield lambda n: bar.advance(task, n)


def warn(text: str) -> None:
    if speaks():
        stderr.print(f"[yellow]warning:[/] {text}", highlight=False)


def format_metrics(metrics: dict[str, float]) -> str:
    parts = []
    for key, value in metrics.items():
        if key.endswith("samples_per_sec"):
            parts.append(f"{value:,.0f} samples/s")
        elif key.endswith("time"):
            parts.append(f"{key} {value:.2f}s")
        elif key == "lr":
            parts.append(f"lr {value:.4g}")
        else:
            parts.append(f"{key} {value:.4f}")
    return "  ".join(parts)


class Reporter(Protocol):
    def info(self, text: str) -> None: ...
    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None: ...
    def advance(self) -> None: ...
    def log_step(self, step: int, batch: int, metrics: dict[str, float]) -> None: ...
    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class QuietReporter:
    """--quiet: nothing but warnings and errors."""

    def info(self, text: str) -> None:
        pass

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        pass

    def advance(self) -> None:
        pass

    def log_step(self, step: int, batch: int, metrics: dict[str, float]) -> None:
        pass

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class PlainReporter(QuietReporter):
    """Not a terminal (CI logs, files): a line every log interval and one per epoch."""

    def __init__(self) -> None:
        self.epoch_label = ""
        self.batches = 0

    def info(self, text: str) -> None:
        print(text, flush=True)

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        self.epoch_label = f"epoch {epoch + 1}/{epochs}"
        self.batches = batches

    def log_step(self, step: int, batch: int, metrics: dict[str, float]) -> None:
        line = f"{self.epoch_label}  batch {batch}/{self.batches}  step {step}  "
        print(line + format_metrics(metrics), flush=True)

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        print(f"epoch {epoch + 1}/{epochs} done  {format_metrics(metrics)}", flush=True)


class RichReporter(QuietReporter):
    """A terminal: one live bar per epoch with loss, throughput and time left."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task: int | None = None

    def info(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(
            f"epoch {epoch + 1}/{epochs}", total=batches, completed=done, status=""
        )

    def advance(self) -> None:
        self.progress.advance(self.task)  # type: ignore[arg-type]

    def log_step(self, step: int, batch: int, metrics: dict[str, float]) -> None:
        self.progress.update(self.task, status=format_metrics(metrics))  # type: ignore[arg-type]

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.progress.stop()
        self.console.print(
            f"epoch {epoch + 1}/{epochs}  {format_metrics(metrics)}", highlight=False
        )

    def close(self) -> None:
        self.progress.stop()


def make_reporter(quiet: bool) -> Reporter:
    if quiet:
        return QuietReporter()
    if sys.stdout.isatty():
        return RichReporter()
    return PlainReporter()
