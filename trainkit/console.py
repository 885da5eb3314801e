"""What a run prints: a live progress bar on a terminal, periodic plain lines in logs.

The training loop reports events (epoch start, a batch done, a logged step, epoch end); a
reporter decides how they look. Everything a run reports goes to stdout, so `trainkit
train x > log` keeps it all, down to the final scores; warnings and errors go to
stderr, --quiet or not. A stdout that closes early (`trainkit train x | head`) ends the
printing, never the training.
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
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

stderr = Console(stderr=True, soft_wrap=True)
_quiet = [False]  # --quiet, for the status lines printed before a run's reporter exists


def is_rank_zero() -> bool:
    """In a multi-process run only rank 0 prints, so each message shows once."""
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def quiet_output(quiet: bool) -> Iterator[None]:
    """Within the block, status lines and start-up progress are silent when `quiet`
    (--quiet); the setting before it comes back afterwards."""
    before = _quiet[0]
    _quiet[0] = quiet
    try:
        yield
    finally:
        _quiet[0] = before


def print_line(text: str) -> None:
    """A line on stdout (the command line keeps a closed stdout from failing a command:
    see `cli.app.ReaderMayLeave`)."""
    print(text, flush=True)


def print_status(text: str) -> None:
    """A line about what start-up is doing (scanning, decoding), unless --quiet."""
    if is_rank_zero() and not _quiet[0]:
        print_line(text)


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Report a long start-up step: a bar on a terminal, one line elsewhere, nothing with
    --quiet. Yields `advance(n)`."""
    if not is_rank_zero() or _quiet[0]:
        yield lambda n: None
        return
    if not sys.stdout.isatty():
        print_line(f"{description} ...")
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
    if is_rank_zero():
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
        print_line(text)

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        self.epoch_label = f"epoch {epoch + 1}/{epochs}"
        self.batches = batches

    def log_step(self, step: int, batch: int, metrics: dict[str, float]) -> None:
        line = f"{self.epoch_label}  batch {batch}/{self.batches}  step {step}  "
        print_line(line + format_metrics(metrics))

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        print_line(f"epoch {epoch + 1}/{epochs} done  {format_metrics(metrics)}")


def clock(seconds: float) -> str:
    """4:05, or 1:02:03 from an hour up."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _TimeLeft(ProgressColumn):
    """Time left in the epoch and in the whole run, at the epoch's current speed."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed or task.remaining is None:
            return Text("eta -", style="progress.remaining")
        epoch = task.remaining / speed
        run = (task.remaining + task.fields["later"]) / speed
        return Text(f"eta {clock(epoch)}, run {clock(run)}", style="progress.remaining")


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float], width: int) -> str:
    """An epoch's summary for a terminal: the most telling figures that fit `width`."""

    def scores(split: str) -> str:
        found = [
            f"{short} {metrics[f'{split}/{name}']:.4f}"
            for name, short in (("loss", "loss"), ("accuracy", "acc"))
            if f"{split}/{name}" in metrics
        ]
        return f"{split} {' '.join(found)}" if found else ""

    parts = [f"epoch {epoch + 1}/{epochs}", scores("train"), scores("val")]
    if "lr" in metrics:
        parts.append(f"lr {metrics['lr']:.3g}")
    if "epoch_time" in metrics:
        parts.append(f"{metrics['epoch_time']:.1f}s")
    if "samples_per_sec" in metrics:
        parts.append(f"{metrics['samples_per_sec']:,.0f}/s")
    parts = [part for part in parts if part]
    while len(parts) > 2 and len("  ".join(parts)) > width:
        parts.pop()
    return "  ".join(parts)


class RichReporter(QuietReporter):
    """A terminal: one live bar per epoch with the loss, throughput and the time left in
    the epoch and the run, kept within the terminal's width."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            _TimeLeft(),
            console=self.console,
            transient=True,
            expand=True,
        )
        self.task: int | None = None

    def info(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        self.progress.start()
        later = batches * (epochs - epoch - 1)  # batches of the epochs after this one
        self.task = self.progress.add_task(
            f"epoch {epoch + 1}/{epochs}", total=batches, completed=done, status="", later=later
        )

    def advance(self) -> None:
        self.progress.advance(self.task)  # type: ignore[arg-type]

    def log_step(self, step: int, batch: int, metrics: dict[str, float]) -> None:
        status = f"loss {metrics['train/loss']:.4f}" if "train/loss" in metrics else ""
        if "samples_per_sec" in metrics:
            status += f" {metrics['samples_per_sec']:,.0f}/s"
        self.progress.update(self.task, status=status)  # type: ignore[arg-type]

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.progress.stop()
        self.console.print(epoch_line(epoch, epochs, metrics, self.console.width), highlight=False)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(quiet: bool) -> Reporter:
    if quiet:
        return QuietReporter()
    if sys.stdout.isatty():
        return RichReporter()
    return PlainReporter()
