"""Reading back what W&B's offline mode writes, session by session, with the record
reader trainkit counts rows with (trainkit.tracking.wandb_files)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainkit.tracking.wandb_files import records, session_files


@dataclass
class Session:
    """One offline session of a W&B run: what its file holds."""

    run: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    artifacts: list[Any] = field(default_factory=list)
    exit_code: int | None = None
    preempting: bool = False


def sessions(run_dir: Path, run_id: str) -> list[Session]:
    """The offline sessions of W&B run `run_id` in `run_dir`/wandb, oldest first (by the
    folder's name, offline-run-YYYYMMDD_HHMMSS-ID or ...-ID-N: a killed session's file
    may lack even its run record)."""

    def started(path: Path) -> tuple[str, int]:
        parts = path.parent.name.split("-")
        return parts[2], int(parts[4]) if len(parts) > 4 else 0

    return [_session(path) for path in sorted(session_files(run_dir, run_id), key=started)]


def _session(path: Path) -> Session:
    session = Session()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            session.run = record.run
            session.config.update(_items(record.run.config.update))
        elif kind == "config":
            session.config.update(_items(record.config.update))
        elif kind == "history":
            row = {
                "/".join(i.nested_key) or i.key: json.loads(i.value_json)
                for i in record.history.item
            }
            session.rows.append(row)
        elif kind == "files":
            session.files += [f.path for f in record.files.files]
        elif kind == "artifact":
            session.artifacts.append(record.artifact)
        elif kind == "exit":
            session.exit_code = record.exit.exit_code
        elif kind == "preempting":
            session.preempting = True
    return session


def _items(updates: Any) -> dict[str, Any]:
    return {"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in updates}


def history(run_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """Every session's rows in order, without W&B's own columns but _step."""
    return [
        {k: v for k, v in row.items() if k == "_step" or not k.startswith("_")}
        for session in sessions(run_dir, run_id)
        for row in session.rows
    ]
