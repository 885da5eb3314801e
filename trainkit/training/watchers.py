"""What a run tells the code that watches it (an experiment tracker, say), and when.

A watcher is told three things, on rank 0 only: the run started (or resumed) in its
directory; a checkpoint was written, which now covers every record in metrics.jsonl
(a resume from it keeps them all); the run ended, and how. That is all an integration
needs to mirror a run exactly: it forwards the records a checkpoint covers, so a kill
and a resume never show it records the resumed run replays. The loop knows nothing of
watchers; `training.run` calls them around it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from trainkit.config.schema import Config
    from trainkit.training.run_dir import Status


class RunWatcher(Protocol):
    def started(self, run_dir: Path, *, resumed: bool) -> None:
        """The run's directory exists and training is about to start (or continue)."""
        ...

    def saved(self, run_dir: Path) -> None:
        """A checkpoint was written: every record now in metrics.jsonl is covered by it."""
        ...

    def ended(self, run_dir: Path, status: Status, *, discarded: bool) -> None:
        """The session ended with `status`; `discarded`: the run left no directory
        (stopped before its first checkpoint)."""
        ...


# How a command says who watches a run: called with the run's config once it is known,
# before any data is read, so a watcher that cannot work stops the run before training.
Watch = Callable[["Config"], Sequence[RunWatcher]]
