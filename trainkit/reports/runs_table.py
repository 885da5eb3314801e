"""`trainkit runs`: every run under a folder, summarized from its files.

A run is a folder with a config.yaml. Its status comes from run.json (a session still
marked running whose process is gone was stopped without a word: interrupted), its
progress, best monitored value and test scores from metrics.jsonl. A sweep is one
entry, summarized from its trials.csv (its trials are listed by `trainkit runs
SWEEP_DIR`), so the trials of two sweeps never mix. Nothing here imports torch, so the
table of a hundred runs appears at once.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from trainkit.config.schema import higher_is_better
from trainkit.files import FileLock
from trainkit.sweep.results import SWEEP_FILE, is_sweep, read_trials, trial_dir
from trainkit.training.metrics_log import read_records
from trainkit.training.run_dir import CONFIG_FILE, LOCK_FILE, read_status, session_status

SKIPPED = {"tb", "export", ".trainkit-cache"}  # folders inside a run, never runs themselves


@dataclass
class RunSummary:
    path: str
    name: str
    run_id: str
    status: str  # completed, early_stopped, interrupted, failed or running
    epochs_done: int | None  # None for a sweep
    epochs_planned: int | None
    monitor: str | None
    best: float | None  # the best value of `monitor` so far
    test_accuracy: float | None
    test_loss: float | None
    wall_seconds: float | None  # training time over every session (a sweep: its span)
    started: str | None  # ISO time the run first started
    kind: str = "run"  # or "sweep"
    trials_done: int | None = None  # a sweep's finished trials
    trials_planned: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_runs(root: Path) -> list[Path]:
    """Every run folder under `root` (or `root` itself), the trials of sweeps among
    them, in sorted order."""
    runs, _ = _walk(root, sweeps_whole=False)
    return runs


def _walk(root: Path, *, sweeps_whole: bool) -> tuple[list[Path], list[Path]]:
    """The runs and (with `sweeps_whole`) the sweeps under `root`: a sweep other than
    `root` itself is one entry, its trials not listed apart."""
    if (root / CONFIG_FILE).is_file():
        return [root], []
    runs, sweeps = [], []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        if sweeps_whole and here != root and SWEEP_FILE in files and is_sweep(here):
            sweeps.append(here)
            dirs[:] = []
        elif CONFIG_FILE in files:
            runs.append(here)
            dirs[:] = []  # a run's own folders hold no runs
    return sorted(runs), sorted(sweeps)


def list_runs(root: Path, pattern: str | None = None) -> list[RunSummary]:
    """The runs and sweeps under `root` whose name matches `pattern` (shell style:
    mnist_*), oldest first; a sweep given as `root` is the list of its trials."""
    found, sweeps = _walk(root, sweeps_whole=True)
    runs = [summarize(path) for path in found] + [summarize_sweep(path) for path in sweeps]
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


def summarize_sweep(directory: Path) -> RunSummary:
    """A sweep as one entry: its trials done of those planned, its best trial's score,
    and whether its coordinator still runs."""
    spec = yaml.safe_load((directory / SWEEP_FILE).read_text()) or {}
    metric = str(spec.get("metric", "val/loss"))
    rows = read_trials(directory)
    done = [r for r in rows if r["state"] in ("complete", "pruned", "fail")]
    complete = [r for r in rows if r["state"] == "complete" and r.get(metric)]
    maximize = spec.get("direction", "maximize" if higher_is_better(metric) else "minimize")
    pick = max if maximize == "maximize" else min
    best = pick(complete, key=lambda r: float(r[metric])) if complete else None
    summaries = {r["trial"]: summarize(trial_dir(directory, int(r["trial"]))) for r in rows}
    trials = [t for t in summaries.values() if t.started]
    planned = spec.get("trials")
    if FileLock.is_held(directory / LOCK_FILE):
        status = "running"
    elif planned is not None and len(done) >= planned and len(done) == len(rows):
        status = "completed" if complete else "failed"
    else:
        status = "interrupted"
    ends = [_ended(t) for t in trials]
    return RunSummary(
        path=str(directory),
        name=str(spec.get("name", directory.name)),
        run_id=directory.name,
        status=status,
        epochs_done=None,
        epochs_planned=None,
        monitor=metric,
        best=float(best[metric]) if best else None,
        test_accuracy=summaries[best["trial"]].test_accuracy if best else None,
        test_loss=None,
        wall_seconds=(max(ends) - min(_start(t) for t in trials)).total_seconds()
        if trials
        else None,
        started=min(str(t.started) for t in trials) if trials else None,
        kind="sweep",
        trials_done=len(done),
        trials_planned=planned,
    )


def _start(run: RunSummary) -> datetime:
    return datetime.fromisoformat(str(run.started))


def _ended(run: RunSummary) -> datetime:
    return _start(run) + timedelta(seconds=run.wall_seconds or 0.0)


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
