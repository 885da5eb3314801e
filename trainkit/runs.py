"""Run directories: `<checkpoint.root>/<name>/<run-id>/`, or one the user names.

A run directory holds config.yaml, the checkpoints, metrics.jsonl and tb/. It is created
only once the config is valid and every component has been built, so a bad config
leaves nothing behind, and an existing run is never written over.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from trainkit.errors import UserError
from trainkit.files import atomic_write_bytes

CONFIG_FILE = "config.yaml"


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
