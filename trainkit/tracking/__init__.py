"""Experiment trackers: a run mirrored, exactly, where a team compares runs.

`watchers_for` turns a config's `logging` section into the watchers a run reports to
(see `training.watchers`): each a `feed.TrackerFeed` around one tracker (MLflow, W&B).
`sweep_tracking` groups a sweep's trials; `attach` uploads what `export` and `plot`
write for a tracked run. The tracker libraries are imported only when a config turns
them on.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit.console import warn
from trainkit.errors import missing_extra

if TYPE_CHECKING:
    from trainkit.config.schema import Config
    from trainkit.training.watchers import RunWatcher


def watchers_for(config: Config) -> list[RunWatcher]:
    """The trackers `config` turns on, checked (installed, reachable) before any data
    is read: a tracker that cannot work stops the run here (unless it is not required)."""
    from trainkit.tracking.feed import TrackerFeed

    watchers: list[RunWatcher] = []
    if config.logging.mlflow is not None:
        _check_installed("mlflow")
        from trainkit.tracking.mlflow_tracker import MLflowTracker

        mlflow = MLflowTracker(config, config.logging.mlflow)
        if mlflow.check():
            watchers.append(TrackerFeed(mlflow))
    if config.logging.wandb is not None:
        _check_installed("wandb")
        from trainkit.tracking.wandb_tracker import WandbTracker

        wandb = WandbTracker(config, config.logging.wandb)
        if wandb.check():
            watchers.append(TrackerFeed(wandb))
    return watchers


def _check_installed(tracker: str) -> None:
    if importlib.util.find_spec(tracker) is None:
        raise missing_extra(f"logging.{tracker}", [tracker], tracker)


def attach(run_dir: Path, what: str, files: list[Path]) -> None:
    """Upload `files` that `export` or `plot` wrote for the run in `run_dir` to its
    tracker runs, where its config asks for them (log_exports, log_plots). A tracker
    that cannot take them is warned about; the files are on disk either way."""
    import yaml

    from trainkit.config.schema import LoggingConfig
    from trainkit.tracking.feed import TrackerUnavailable, read_tracking
    from trainkit.training.run_dir import CONFIG_FILE

    try:
        raw = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
        logging = LoggingConfig.model_validate(raw.get("logging") or {})
    except (OSError, ValueError):  # not a run of this version: nothing asked for
        return
    stored = read_tracking(run_dir)
    for key in ("mlflow", "wandb"):
        settings = getattr(logging, key)
        if settings is None or key not in stored or not getattr(settings, f"log_{what}"):
            continue
        _check_installed(key)
        module = importlib.import_module(f"trainkit.tracking.{key}_tracker")
        try:
            module.attach(run_dir, stored[key], what, files)
        except TrackerUnavailable as exc:
            warn(f"{key}: could not upload the {what} of {run_dir} ({exc}); they are on disk.")


class SweepEnd:
    """How a sweep ended, as the command that ran it saw it: the status its tracker run
    gets (FINISHED, KILLED when stopped, FAILED otherwise)."""

    status = "FAILED"


@contextlib.contextmanager
def sweep_tracking(base: Config, sweep_dir: Path, name: str) -> Iterator[SweepEnd]:
    """While a sweep runs, its trials are told (through the environment) what groups
    them: in MLflow, one run for the sweep under which theirs nest, in the store the
    trials use, continued when the sweep is; in W&B, a group named after the sweep.
    The caller sets the yielded SweepEnd's status."""
    end = SweepEnd()
    added: dict[str, str] = {}
    if base.logging.wandb is not None and base.logging.wandb.group is None:
        from trainkit.tracking.wandb_tracker import GROUP

        added[GROUP] = name
    parent = _open_sweep_run(base, sweep_dir, name, added)
    before = {key: os.environ.get(key) for key in added}
    os.environ.update(added)
    try:
        yield end
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if parent is not None:
            from trainkit.tracking.feed import TrackerUnavailable

            try:
                parent.end_sweep(end.status)
            except TrackerUnavailable as exc:
                warn(f"{parent.label}: could not record how the sweep ended ({exc}).")


def _open_sweep_run(base: Config, sweep_dir: Path, name: str, added: dict[str, str]) -> Any:
    """The sweep's MLflow run (None without MLflow, or when it cannot be opened), with
    what its trials need to nest under it put in `added`."""
    settings = base.logging.mlflow
    if settings is None:
        return None
    _check_installed("mlflow")
    from trainkit.tracking.feed import TrackerUnavailable, read_tracking, update
    from trainkit.tracking.mlflow_tracker import PARENT_RUN, MLflowTracker

    tracker = MLflowTracker(base, settings)
    if not tracker.check():
        return None
    try:
        identity = tracker.open_sweep(sweep_dir, name, read_tracking(sweep_dir).get("mlflow"))
    except TrackerUnavailable as exc:
        warn(f"{tracker.label}: could not open the sweep's run ({exc}); trials are not nested.")
        return None
    update(sweep_dir, "mlflow", identity)
    added[PARENT_RUN] = identity["run_id"]
    if not settings.tracking_uri:  # the trials' default store is the sweep's
        added["MLFLOW_TRACKING_URI"] = os.environ.get("MLFLOW_TRACKING_URI") or tracker.uri
    return tracker
