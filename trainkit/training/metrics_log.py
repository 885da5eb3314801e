"""A run's metric history: `metrics.jsonl` and TensorBoard, holding the same scalars.

Each record has a scope: `interval` (the training loss, learning rate and throughput
of the last `log_every_steps` steps), `epoch` (an epoch's means, its validation
figures and timing) or `test` (the final weights on the test split). metrics.jsonl
keeps the names the config speaks of (`train/loss`, `val/accuracy`); TensorBoard gets
tags arranged for its dashboard, which sorts groups by name: `accuracy/` and `loss/`
(train, val and test side by side) come first, then `lr`, then `timing/`. The interval
training loss has a tag of its own (`loss/train_steps`), so epoch means never draw
spikes into it. The run's settings go to the HParams tab only.

On resume, records newer than the checkpoint leave both (TensorBoard through its own
purge_step; metrics.jsonl moves them to metrics.abandoned.jsonl), so the history reads
as if the run had never been interrupted, and nothing is lost without a word.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from trainkit.config.loading import dotted
from trainkit.console import warn
from trainkit.errors import write_failed
from trainkit.files import atomic_write_bytes

METRICS_FILE = "metrics.jsonl"
ABANDONED_FILE = "metrics.abandoned.jsonl"  # records a resume replayed, kept aside
OLD_TB_DIR = "tb"  # where runs before 0.2 kept their events; they keep them there
Scope = Literal["interval", "epoch", "test"]
TIMING = ("epoch_time", "samples_per_sec")


def tensorboard_tag(key: str, scope: Scope) -> str:
    """`val/accuracy` -> `accuracy/val`; an interval's `train/loss` -> `loss/train_steps`;
    `lr` stays; timing goes under `timing/`."""
    if "/" in key:
        split, quantity = key.split("/", 1)
        return f"{quantity}/{split}_steps" if scope == "interval" else f"{quantity}/{split}"
    if key == "samples_per_sec" and scope == "epoch":
        return "timing/epoch_samples_per_sec"  # an epoch's mean, beside the intervals'
    return f"timing/{key}" if key in TIMING else key


class MetricsLog:
    """Appends records to metrics.jsonl and TensorBoard. A write that fails (a full disk)
    becomes one RunFailed paragraph; `resumable` says whether a checkpoint exists to
    continue from, which the paragraph tells the user."""

    def __init__(
        self,
        run_dir: Path,
        *,
        tensorboard: bool,
        resume_step: int | None = None,
        resumable: Callable[[], bool] = lambda: False,
    ) -> None:
        self.run_dir = run_dir
        self.path = run_dir / METRICS_FILE
        self.resumable = resumable
        self.writer = None
        with self._reporting_failures():
            if resume_step is not None and self.path.exists():
                self._set_aside_after(resume_step)
            self.file = self.path.open("a")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                _quiet_writer_threads()
                purge = resume_step + 1 if resume_step is not None else None
                self.writer = SummaryWriter(str(events_dir(run_dir)), purge_step=purge)

    @contextlib.contextmanager
    def _reporting_failures(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise write_failed(
                "the metrics (metrics.jsonl, TensorBoard events)",
                self.run_dir,
                exc,
                resumable=self.resumable(),
            ) from None

    def _set_aside_after(self, step: int) -> None:
        """Keep the records up to `step` (the checkpoint a resume starts from). The ones
        after it are replayed by the resume; they move to metrics.abandoned.jsonl, with
        a warning, rather than vanish. TensorBoard drops them through purge_step."""
        kept, later = [], []
        for line in self.path.read_text().splitlines(keepends=True):
            if line.strip():
                (kept if _step_of(line) <= step else later).append(line)
        if not later:
            return
        with (self.run_dir / ABANDONED_FILE).open("a") as aside:
            aside.writelines(line if line.endswith("\n") else line + "\n" for line in later)
        atomic_write_bytes(self.path, "".join(kept).encode())
        warn(
            f"{len(later)} metric record(s) logged after step {step}, the checkpoint this run "
            f"continues from, are replayed by it: they moved to {ABANDONED_FILE}."
        )

    def log(self, step: int, epoch: int, scalars: dict[str, float], scope: Scope) -> None:
        record = {"step": step, "epoch": epoch, "scope": scope, **scalars}
        with self._reporting_failures():
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            if self.writer is not None:
                for key, value in scalars.items():
                    self.writer.add_scalar(tensorboard_tag(key, scope), value, step)

    def hparams(self, config: dict[str, Any], final: dict[str, float]) -> None:
        """The run's settings (the resolved config, flattened to dotted keys) for the
        HParams tab, which shows them beside the final value of each tag in `final`."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        metrics = {
            tensorboard_tag(key, "test" if key.startswith("test/") else "epoch"): value
            for key, value in final.items()
            if math.isfinite(value)
        }
        with self._reporting_failures():
            for summary in hparams(_hparams(config), metrics):
                self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        with self._reporting_failures():
            self.file.close()
            if self.writer is not None:
                self.writer.close()


def events_dir(run_dir: Path) -> Path:
    """Where a run's TensorBoard events go: the run directory itself, so that
    `tensorboard --logdir checkpoints` names each run by its name and id; a run written
    before that keeps its tb/ folder when resumed, one history in one place."""
    old = run_dir / OLD_TB_DIR
    return old if old.is_dir() else run_dir


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread keeps a failed write for the main thread, which
    reports it as one paragraph, and then dies with its own traceback on stderr; this
    hook keeps that traceback (and only that one) off the screen."""
    previous = threading.excepthook
    if getattr(previous, "trainkit", False):
        return

    def hook(args: Any) -> None:
        writer_thread = type(args.thread).__name__ == "_AsyncWriterThread"
        if not (writer_thread and isinstance(args.exc_value, OSError)):
            previous(args)

    hook.trainkit = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as dicts, each with its scope (inferred for files written before
    records had one); a line cut short by a crash is skipped."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            record.setdefault("scope", _scope_of(record))
            records.append(record)
    return records


def _scope_of(record: dict[str, Any]) -> Scope:
    if any(key.startswith("test/") for key in record):
        return "test"
    return "epoch" if "epoch_time" in record or "val/loss" in record else "interval"


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The config as TensorBoard's HParams tab takes it: dotted keys, plain values (a
    list becomes its text), unset ones left out."""
    return {
        key: value if isinstance(value, (int, float, str, bool)) else str(value)
        for key, value in dotted(config).items()
        if value is not None
    }


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a line cut short by a crash is dropped
