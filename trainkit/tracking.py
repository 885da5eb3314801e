"""A run's metric history: `metrics.jsonl` and TensorBoard, holding the same scalars.

On resume, records newer than the checkpoint are dropped from both (TensorBoard through
its own purge_step), so the history reads as if the run had never been interrupted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from trainkit.files import atomic_write_bytes

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


class MetricsLog:
    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None = None) -> None:
        self.path = run_dir / METRICS_FILE
        if resume_step is not None and self.path.exists():
            self._drop_after(resume_step)
        self.file = self.path.open("a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_step is not None else None
            self.writer = SummaryWriter(str(run_dir / TB_DIR), purge_step=purge)

    def _drop_after(self, step: int) -> None:
        kept = [
            line
            for line in self.path.read_text().splitlines(keepends=True)
            if line.strip() and _step_of(line) <= step
        ]
        atomic_write_bytes(self.path, "".join(kept).encode())

    def log(self, step: int, epoch: int, scalars: dict[str, float]) -> None:
        record = {"step": step, "epoch": epoch, **scalars}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, step)

    def hparams(self, config: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run's settings (the resolved config, flattened to dotted keys) beside its
        final metrics, for TensorBoard's HPARAMS tab."""
        if self.writer is None:
            return
        usable = {k: v for k, v in metrics.items() if math.isfinite(v)}
        self.writer.add_hparams(
            _flatten(config), {f"hparam/{k}": v for k, v in usable.items()}, run_name="."
        )

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}; lists become their text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a line cut short by a crash is dropped
