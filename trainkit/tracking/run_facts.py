"""What every tracker is told about a run besides its metrics: where it ran and on
what, and which of its files it uploads. One place, so MLflow and W&B say the same."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainkit.config.schema import Config


def run_facts(config: Config, run_dir: Path) -> dict[str, str]:
    """The run directory, world size, device, host and library versions, by dotted name."""
    from trainkit.training.checkpoint import library_versions
    from trainkit.training.device import resolve_device

    return {
        "trainkit.run_dir": str(run_dir.resolve()),
        "trainkit.world_size": os.environ.get("WORLD_SIZE", "1"),
        "trainkit.device": str(resolve_device(config.trainer.device)),
        "trainkit.host": platform.node(),
        **{f"versions.{name}": version for name, version in library_versions().items()},
    }


def git_repository() -> tuple[str, str] | None:
    """The top folder and commit of the repository the command runs in, if any."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.split()
    return (lines[0], lines[1]) if done.returncode == 0 and len(lines) == 2 else None


def checkpoints(run_dir: Path, which: str) -> list[Path]:
    """The checkpoint files `log_checkpoints: none | best | last | all` names."""
    if which == "none":
        return []
    if which == "all":
        return sorted(run_dir.glob("*.pt"))
    path = run_dir / f"{which}.pt"
    return [path] if path.is_file() else []
