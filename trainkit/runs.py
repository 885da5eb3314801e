"""Run directories: `<checkpoint.root>/<name>/<run-id>/`, or one the user names.

A run directory holds config.yaml, the checkpoints, metrics.jsonl, tb/ and run.json. It
is created only once the config is valid and every component has been built, so a bad
config leaves nothing behind, and an existing run is never written over.

run.json records each session of the run (the first training and every resume): when
it started and ended, the process and host, and how it ended. `trainkit runs` reads it
to tell a finished run from one still training or one that was stopped.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from trainkit.errors import UserError
from trainkit.files import atomic_write_bytes

CONFIG_FILE = "config.yaml"
STATUS_FILE = "run.json"
Status = Literal["running", "completed", "early_stopped", "interrupted", "failed"]


def create_run_dir(root: Path, name: str, explicit: Path | None = None) -> Path:
    if explicit is not None:
        if explicit.exists() and (not explicit.is_dir() or any(explicit.iterdir())):
            raise UserError(
                f"--run-dir {explicit} already exists and is not an empty folder. Pick a new "
                f"folder, or continue that run with `trainkit resume {explicit}`."
            )
        explicit.mkdir(parents=True, exist_ok=True)
        return explicit
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        run_dir = root / name / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            continue
        return run_dir
    raise UserError(f"could not create a new run directory under {root / name}.")


def write_config(run_dir: Path, text: str) -> None:
    atomic_write_bytes(run_dir / CONFIG_FILE, text.encode())


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def read_status(run_dir: Path) -> dict[str, Any]:
    """run.json as a dict ({"sessions": []} when there is none, or it is unreadable)."""
    try:
        status = json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {"sessions": []}
    return status if isinstance(status, dict) and "sessions" in status else {"sessions": []}


def mark_started(run_dir: Path) -> None:
    """A new session of the run is training, in this process on this host."""
    status = read_status(run_dir)
    session = {"started": _now(), "pid": os.getpid(), "host": socket.gethostname()}
    status["sessions"].append({**session, "status": "running"})
    atomic_write_bytes(run_dir / STATUS_FILE, (json.dumps(status, indent=2) + "\n").encode())


def mark_ended(run_dir: Path, ended: Status, detail: str | None = None) -> None:
    """How the current session ended (and why, for a failure)."""
    status = read_status(run_dir)
    if not status["sessions"]:
        return
    status["sessions"][-1].update(
        status=ended, ended=_now(), **({"detail": detail} if detail else {})
    )
    atomic_write_bytes(run_dir / STATUS_FILE, (json.dumps(status, indent=2) + "\n").encode())
