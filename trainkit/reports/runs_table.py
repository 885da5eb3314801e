"""`trainkit runs`: every run under a folder, summarized from its files.

A run is a folder with a config.yaml. Its status comes from run.json (a session still
marked running whose process is gone was stopped without a word: interrupted), its
progress, best monitored value and test scores from metrics.jsonl. Nothing here imports
torch, so the table of a hundred runs appears at once.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from trainkit.config.schema import higher_is_better
from trainkit.training.metrics_log import read_records
from trainkit.training.run_dir import CONFIG_FILE, read_status, session_status

SKIPPED = {"tb", "export", ".trainkit-cache"}  # folders inside a run, never runs themselves


@dataclass
class RunSummary:
    path: str
    name: str
    run_id: str
    status: str  # completed, early_stopped, interrupted, failed or running
    epochs_done: int
    epochs_planned: int | None
    monitor: str | None
    best: float | None  # the best value of `monitor` so far
    test_accuracy: float | None
    test_loss: float | None
    wall_seconds: float | None  # training time over every session
    started: str | None  # ISO time the run first started

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_runs(root: Path) -> list[Path]:
    """Every run folder under `root` (or `root` itself), in sorted order."""
    if (root / CONFIG_FILE).is_file():
        return [root]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        if CONFIG_FILE in files:
            found.append(Path(folder))
            dirs[:] = []  # a run's own folders hold no runs
    return sorted(found)


def list_runs(root: Path, pattern: str | None = None) -> list[RunSummary]:
    """The runs under `root` whose name matches `pattern` (shell style: mnist_*), oldest
    first."""
    runs = [summarize(path) for path in find_runs(root)]
    if pattern:
        runs = [run for run in runs if fnmatch.fnmatch(run.name, pattern)]
    return sorted(runs, key=lambda run: (run.started or "", run.path))


def summarize(run_dir: Path) -> RunSummary:
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    trainer = config.get("trainer") or {}
    checkpoint = config.get("checkpoint") or {}
    monitor = checkpoint.get("monitor", "val/loss")
    records = read_records(run_dir)
    epochs = [r for r in records if r["scope"] == "epoch"]
    tests = [r for r in records if r["scope"] == "test"]
    values = [r[monitor] for r in epochs if isinstance(r.get(monitor), (int, float))]
    mode = checkpoint.get("mode")
    maximize = mode == "max" if mode else higher_is_better(monitor)
    sessions = read_status(run_dir)["sessions"]
    return RunSummary(
        path=str(run_dir),
        name=str(config.get("name", run_dir.parent.name)),
        run_id=run_dir.name,
        status=session_status(run_dir) or _status_of_old_run(bool(tests), len(epochs), trainer),
        epochs_done=max((int(r["epoch"]) for r in epochs), default=0),
        epochs_planned=trainer.get("epochs"),
        monitor=monitor,
        best=(max(values) if maximize else min(values)) if values else None,
        test_accuracy=tests[-1].get("test/accuracy") if tests else None,
        test_loss=tests[-1].get("test/loss") if tests else None,
        wall_seconds=_wall_seconds(sessions),
        started=sessions[0].get("started") if sessions else None,
    )


def _status_of_old_run(tested: bool, epochs: int, trainer: dict[str, Any]) -> str:
    """A run from before run.json existed, judged by what it logged."""
    planned = trainer.get("epochs")
    return "completed" if tested or (planned and epochs >= planned) else "interrupted"


def _wall_seconds(sessions: list[dict[str, Any]]) -> float | None:
    total = 0.0
    for session in sessions:
        try:
            start = datetime.fromisoformat(session["started"])
            end = datetime.fromisoformat(session["ended"]) if "ended" in session else None
        except (KeyError, TypeError, ValueError):
            continue
        total += ((end or datetime.now().astimezone()) - start).total_seconds()
    return total if sessions else None
