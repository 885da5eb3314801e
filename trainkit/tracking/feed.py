"""Forwarding a run's metric records to an experiment tracker: each one once, and only
records no resume will take back.

A record of metrics.jsonl goes to the tracker once a checkpoint covers it. A run
killed between two checkpoints is resumed from the older one and replays the records
after it (`training.metrics_log` moves the first copies aside); a tracker cannot take
points back (MLflow has no way to delete a metric), so it must never have been sent
them. The price is a delay: a point appears in the tracker when the next checkpoint is
written (after every epoch, and every `checkpoint.every_steps` steps when set), and the
records of a finished run all arrive at its end.

`tracking.json` in the run directory holds, for each tracker, what identifies its run
there (written before training, so a resume continues the same tracker run, never a
second one) and how many records it holds. A tracker that cannot be reached is warned
about once; its records wait, and go at the first checkpoint RETRY_SECONDS later (so a
lost server does not cost every checkpoint a timeout), or at the end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainkit.console import warn
from trainkit.errors import UserError
from trainkit.files import atomic_write_bytes
from trainkit.training.metrics_log import read_records

if TYPE_CHECKING:
    from trainkit.training.run_dir import Status

TRACKING_FILE = "tracking.json"
RETRY_SECONDS = 30.0  # after a failed send, checkpoints go by without trying for this long
METADATA = ("step", "epoch", "scope")  # record fields that are not metrics


class TrackerUnavailable(Exception):
    """The tracker could not take the records now; they are sent later."""


class Tracker(Protocol):
    key: str  # its section in tracking.json: "mlflow"
    label: str  # how messages name it: "MLflow at http://..."

    def open(self, run_dir: Path, stored: dict[str, Any] | None) -> dict[str, Any]:
        """Start the tracker's run (or, with what `stored` says, continue it); return
        what identifies it, to be stored."""
        ...

    def held(self, records: list[dict[str, Any]]) -> int | None:
        """How many of `records` (from the first) the tracker already holds; None if it
        cannot tell, and the count in tracking.json is trusted."""
        ...

    def send(self, records: list[dict[str, Any]], start: int) -> None:
        """Send records, the first being record number `start` of metrics.jsonl
        (TrackerUnavailable if it cannot now)."""
        ...

    def close(self, run_dir: Path, status: Status, *, discarded: bool) -> None:
        """Record how the session ended (and upload what was asked for at the end)."""
        ...


def unusable(message: str, *, key: str, name: str, required: bool) -> bool:
    """A tracker that cannot be used at the start: a UserError when it is required, else
    one warning and False (the run trains without it)."""
    if required:
        raise UserError(
            f"{message}; or set logging.{key}.required: false to train without it."
        ) from None
    warn(f"{message}; training goes on without {name} (required: false).")
    return False


def metrics_of(record: dict[str, Any]) -> dict[str, float]:
    """A record's metrics: its numbers, by their metrics.jsonl names."""
    return {
        key: float(value)
        for key, value in record.items()
        if key not in METADATA and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class TrackerFeed:
    """Watches a run (see `training.watchers`) and feeds one tracker its records."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.sent = 0
        self.warned = False
        self.retry_at = 0.0  # time.monotonic() before which no send is tried
        self.unsure = False  # a send failed: the tracker may hold part of what it was sent
        self.off = False  # the tracker's run could not be opened: this session is untracked

    def started(self, run_dir: Path, *, resumed: bool) -> None:
        stored = read_tracking(run_dir).get(self.tracker.key)
        try:
            identity = self.tracker.open(run_dir, stored)
            records = read_records(run_dir)
            held = self.tracker.held(records)
        except TrackerUnavailable as exc:  # it answered a moment ago, at the check
            warn(
                f"{self.tracker.label}: could not open the run there ({exc}); this session "
                "trains without it, and a resume tries again."
            )
            self.off = True
            return
        self.sent = held if held is not None else min((stored or {}).get("sent", 0), len(records))
        update(run_dir, self.tracker.key, {**identity, "sent": self.sent})

    def saved(self, run_dir: Path) -> None:
        if not self.off:
            self._send(run_dir)

    def ended(self, run_dir: Path, status: Status, *, discarded: bool) -> None:
        if self.off:
            return
        if not discarded and status in ("completed", "early_stopped", "interrupted"):
            self._send(run_dir, final=True)  # every record is final: a checkpoint covers them
        try:
            self.tracker.close(run_dir, status, discarded=discarded)
        except TrackerUnavailable as exc:
            warn(f"{self.tracker.label}: could not record how the run ended ({exc}).")
        unsent = 0 if discarded else len(read_records(run_dir)) - self.sent
        if unsent > 0 and status != "failed":
            warn(
                f"{self.tracker.label} did not take {unsent} metric record(s) of this run; "
                f"they are in {run_dir / 'metrics.jsonl'}, and {TRACKING_FILE} says how many "
                "it holds."
            )

    def _send(self, run_dir: Path, *, final: bool = False) -> None:
        if not final and time.monotonic() < self.retry_at:
            return
        records = read_records(run_dir)
        try:
            if self.unsure:  # a request cut off mid-way may have been stored after all
                held = self.tracker.held(records)
                self.sent = self.sent if held is None else held
                self.unsure = False
            pending = records[self.sent :]
            if not pending:
                return
            self.tracker.send(pending, self.sent)
        except TrackerUnavailable as exc:
            self.unsure = True
            self.retry_at = time.monotonic() + RETRY_SECONDS
            if not self.warned:
                warn(
                    f"{self.tracker.label} cannot be reached ({exc}); training goes on, and "
                    "its records are sent when it is back, or at the end."
                )
                self.warned = True
            return
        if self.warned:
            warn(f"{self.tracker.label} is back: {len(pending)} record(s) sent.")
            self.warned = False
        self.sent = len(records)
        update(run_dir, self.tracker.key, {"sent": self.sent})


def read_tracking(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update(run_dir: Path, key: str, values: dict[str, Any]) -> None:
    data = read_tracking(run_dir)
    data[key] = {**data.get(key, {}), **values}
    try:
        atomic_write_bytes(run_dir / TRACKING_FILE, (json.dumps(data, indent=2) + "\n").encode())
    except OSError as exc:  # the run's own files come first; the next write tries again
        warn(f"could not write {run_dir / TRACKING_FILE} ({exc.strerror or exc}).")
