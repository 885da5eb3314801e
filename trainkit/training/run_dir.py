"""Run directories: `<checkpoint.runs_dir>/<name>/<run-id>/`, or one the user names.

A run directory holds config.yaml, the checkpoints, metrics.jsonl, TensorBoard's events
and run.json. It
is created only once the config is valid and every component has been built, so a bad
config leaves nothing behind, and an existing run is never written over.

run.json records each session of the run (the first training and every resume): when
it started and ended, the process and host, and how it ended. `trainkit runs` reads it
to tell a finished run from one still training or one that was stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from trainkit.console import warn
from trainkit.errors import UserError
from trainkit.files import FileLock, atomic_write_bytes

CONFIG_FILE = "config.yaml"
STATUS_FILE = "run.json"
LOCK_FILE = ".lock"
Status = Literal["running", "completed", "early_stopped", "interrupted", "failed", "pruned"]


def discard_run_dir(run_dir: Path, *, made_here: bool) -> None:
    """Undo a run directory that could not start: the folder itself if trainkit made it,
    else what trainkit put in it (an empty --run-dir is the user's own)."""
    if made_here:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        clear_run_dir(run_dir, keep=())


def clear_run_dir(run_dir: Path, keep: Sequence[str]) -> None:
    """Empty a run directory but for the entries named in `keep`: a run that never wrote
    a checkpoint, starting over."""
    for path in run_dir.iterdir():
        if path.name in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def check_new_run_dir(explicit: Path, keep: Sequence[str] = ()) -> None:
    """A --run-dir for a new run is a new or empty folder, but for the entries named in
    `keep` (checked before any work, and again when it is made)."""
    left = [p for p in explicit.iterdir() if p.name not in keep] if explicit.is_dir() else []
    if explicit.exists() and (not explicit.is_dir() or left):
        raise UserError(
            f"--run-dir {explicit} already exists and is not an empty folder. Pick a new "
            f"folder, or continue that run with `trainkit resume {explicit}`."
        )


def create_run_dir(
    root: Path, name: str, explicit: Path | None = None, keep: Sequence[str] = ()
) -> Path:
    if explicit is not None:
        check_new_run_dir(explicit, keep)
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


def session_status(run_dir: Path) -> str | None:
    """How the run's newest session stands: its recorded status, but `interrupted` for
    one recorded as running whose process is gone (killed without a word); None when
    run.json records no session."""
    sessions = read_status(run_dir)["sessions"]
    if not sessions:
        return None
    last = sessions[-1]
    status = str(last.get("status", "interrupted"))
    if status == "running" and not _alive(last):
        return "interrupted"
    return status


def _alive(session: dict[str, Any]) -> bool:
    """Whether the session's process still runs (taken as yes on another host)."""
    if session.get("host") != socket.gethostname():
        return True
    try:
        pid = int(session.get("pid", 0))
    except (TypeError, ValueError):
        return False
    if pid <= 0:  # no process recorded; os.kill(0, 0) would ask about our own group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def mark_started(run_dir: Path) -> None:
    """A new session of the run is training, in this process on this host."""
    status = read_status(run_dir)
    session = {"started": _now(), "pid": os.getpid(), "host": socket.gethostname()}
    status["sessions"].append({**session, "status": "running"})
    _write_status(run_dir, status)


def mark_ended(run_dir: Path, ended: Status, detail: str | None = None) -> None:
    """How the current session ended (and why, for a failure)."""
    status = read_status(run_dir)
    if not status["sessions"]:
        return
    extra = {"detail": detail} if detail else {}
    status["sessions"][-1].update(status=ended, ended=_now(), **extra)
    _write_status(run_dir, status)


def _write_status(run_dir: Path, status: dict[str, Any]) -> None:
    """Best effort: on a full disk the run's own error says what happened, and a stale
    status reads as interrupted once the process is gone."""
    with contextlib.suppress(OSError):
        atomic_write_bytes(run_dir / STATUS_FILE, (json.dumps(status, indent=2) + "\n").encode())


class RunLock:
    """One process writes a run at a time: a lock on `<run>/.lock` (see `files.FileLock`),
    which exists only while a process writes the run.

    The lock file names its holder (pid, host, since when), so a second writer is told
    who has the run; a holder that died without releasing it left its name behind, and
    the next one takes over with a warning.
    """

    def __init__(self, run_dir: Path) -> None:
        self.lock = FileLock(run_dir / LOCK_FILE)

    def acquire(self) -> RunLock:
        lock = self.lock
        if not lock.acquire(wait=False):
            holder = lock.read() or "another process"
            raise UserError(
                f"{lock.path.parent} is being written by {holder}. Two processes must not "
                "write one run: wait for it to finish, stop it (it saves last.pt), or write "
                "a new run with --run-dir."
            )
        assert lock.handle is not None
        lock.handle.seek(0)
        stale = lock.handle.read().strip()
        if stale:
            warn(f"{lock.path.parent} was left locked by {stale}, which is gone; taking it over.")
        try:
            lock.handle.seek(0)
            lock.handle.truncate()
            lock.handle.write(f"process {os.getpid()} on {socket.gethostname()} since {_now()}")
            lock.handle.flush()
        except OSError:
            lock.release()  # unlocked again: nothing half-held stays behind
            raise
        return self

    def release(self) -> None:
        """Unlock, leaving no lock file behind."""
        self.lock.release()
