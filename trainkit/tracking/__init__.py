"""Experiment trackers: a run mirrored, exactly, where a team compares runs.

`watchers_for` turns a config's `logging` section into the watchers a run reports to
(see `training.watchers`): each a `feed.TrackerFeed` around one tracker. The tracker
libraries are imported only when a config turns them on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

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
        if importlib.util.find_spec("mlflow") is None:
            raise missing_extra("logging.mlflow", ["mlflow"], "mlflow")
        from trainkit.tracking.mlflow_tracker import MLflowTracker

        tracker = MLflowTracker(config, config.logging.mlflow)
        if tracker.check():
            watchers.append(TrackerFeed(tracker))
    return watchers


class SweepEnd:
    """How a sweep ended, as the command that ran it saw it: the status its tracker run
    gets (FINISHED, KILLED when stopped, FAILED otherwise)."""

    status = "FAILED"


@contextlib.contextmanager
def sweep_tracking(base: Config, sweep_dir: Path, name: str) -> Iterator[SweepEnd]:
    """While a sweep runs: one MLflow run for the sweep, under which its trials' runs
    nest (they find it in the environment), in the store the trials use; continued
    when the sweep is. The caller sets the yielded SweepEnd's status."""
    end = SweepEnd()
    settings = base.logging.mlflow
    if settings is None:
        yield end
        return
    if importlib.util.find_spec("mlflow") is None:
        raise missing_extra("logging.mlflow", ["mlflow"], "mlflow")
    from trainkit.tracking.feed import TrackerUnavailable, read_tracking, update
    from trainkit.tracking.mlflow_tracker import PARENT_RUN, MLflowTracker

    tracker = MLflowTracker(base, settings)
    if not tracker.check():
        yield end
        return
    try:
        identity = tracker.open_sweep(sweep_dir, name, read_tracking(sweep_dir).get("mlflow"))
    except TrackerUnavailable as exc:
        warn(f"{tracker.label}: could not open the sweep's run ({exc}); trials are not nested.")
        yield end
        return
    update(sweep_dir, "mlflow", identity)
    added = {PARENT_RUN: identity["run_id"]}
    if not settings.tracking_uri:  # the trials' default store is the sweep's
        added["MLFLOW_TRACKING_URI"] = os.environ.get("MLFLOW_TRACKING_URI") or tracker.uri
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
        try:
            tracker.end_sweep(end.status)
        except TrackerUnavailable as exc:
            warn(f"{tracker.label}: could not record how the sweep ended ({exc}).")
