"""Experiment trackers: a run mirrored, exactly, where a team compares runs.

`watchers_for` turns a config's `logging` section into the watchers a run reports to
(see `training.watchers`): each a `feed.TrackerFeed` around one tracker. The tracker
libraries are imported only when a config turns them on.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

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
