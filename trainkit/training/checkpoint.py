"""Checkpoint files: what they hold, how they are written, and how they are found again.

A checkpoint is everything needed to continue a run bit for bit: model, optimizer,
scheduler and grad-scaler state, the loop position, the data-augmentation generator and
every global RNG, plus the resolved config and library versions. It is also everything
needed to use the model: the inference spec (input shape, class names, preprocessing)
and where the run's plugins were imported from. It holds only tensors and plain Python
values, so it loads with `torch.load(weights_only=True)`.

Format 2 added the inference spec and the plugin folders; format 1 files still load.

Files are written atomically (see `trainkit.files`): a kill or a full disk mid-write
leaves the previous checkpoint as it was. When the newest file is damaged anyway (a
copied half file, a bad disk), loading falls back to the next newest valid one.

Every command that opens a checkpoint (`resume`, `eval`, `predict`, `export`) reads it
the same way: `Checkpoint.read` (or `newest_in` a run), then its `config` (with the
command line's overrides and the run's plugins), its `spec` and `load_weights`.
"""

from __future__ import annotations

import platform
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import trainkit
from trainkit.errors import UserError, first_line, write_failed
from trainkit.files import (
    UNREADABLE_TORCH_FILE,
    atomic_copy,
    atomic_write,
    not_a_torch_file,
)

if TYPE_CHECKING:
    from torch import nn

    from trainkit.config.loading import CommandLine
    from trainkit.config.schema import Config
    from trainkit.models.inference_spec import InferenceSpec

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
LAST, BEST = "last.pt", "best.pt"
_PERIODIC = re.compile(r"^epoch_(\d+)\.pt$")


def periodic_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


def capture_rng() -> dict[str, Any]:
    """Every global random state a training step can draw from."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


def library_versions() -> dict[str, str]:
    """Read from package metadata: importing torchvision just for this costs seconds."""
    return {
        "trainkit": trainkit.__version__,
        "torch": str(torch.__version__),
        "torchvision": metadata.version("torchvision"),
        "python": platform.python_version(),
    }


class Checkpointer:
    """Writes a run's checkpoints: last.pt always, epoch_NNNN.pt periodically, best.pt."""

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        every_epochs: int,
        keep_last: int,
        inputs: dict[str, Any] | None = None,
        plugins: dict[str, str] | None = None,
        on_saved: Callable[[], None] = lambda: None,
    ) -> None:
        self.run_dir = run_dir
        self.on_saved = on_saved  # told after each checkpoint is safely on disk
        self.every_epochs = every_epochs
        self.keep_last = keep_last
        self.metadata = {
            "format": FORMAT_VERSION,
            "config": config,
            "versions": library_versions(),
            "inputs": inputs,  # the InferenceSpec, as plain data
            "plugins": plugins or {},  # plugin module -> the folder it was imported from
        }
        for stale in run_dir.glob(".*.pt.*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)

    def save(self, payload: dict[str, Any], *, finished_epoch: int | None, best: bool) -> None:
        """Write last.pt, plus epoch_NNNN.pt and best.pt when due as links to the same file.

        `finished_epoch` is the 1-based epoch this save closes, or None mid-epoch.
        """
        names = [LAST]
        if finished_epoch is not None and finished_epoch % self.every_epochs == 0:
            names.append(periodic_name(finished_epoch))
        if best:
            names.append(BEST)
        paths = [self.run_dir / name for name in names]
        try:
            atomic_write(paths[0], lambda handle: torch.save({**self.metadata, **payload}, handle))
            for path in paths[1:]:
                atomic_copy(paths[0], path)
            self._prune()
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
            raise write_failed(
                "a checkpoint", self.run_dir, exc, resumable=self.has_checkpoint()
            ) from None
        self.on_saved()

    def has_checkpoint(self) -> bool:
        return bool(candidates(self.run_dir))

    def _prune(self) -> None:
        periodic = sorted(
            (int(m.group(1)), path)
            for path in self.run_dir.iterdir()
            if (m := _PERIODIC.match(path.name))
        )
        for _, path in periodic[: -self.keep_last]:
            path.unlink(missing_ok=True)


def read_payload(path: Path) -> dict[str, Any]:
    """One checkpoint file's contents; a UserError if it is missing, damaged or not ours."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}.")
    kind = not_a_torch_file(path)
    if kind is not None:
        raise UserError(
            f"{path} is not a checkpoint: it is {kind}. Pass a checkpoint trainkit wrote "
            "(RUN_DIR/best.pt, last.pt or epoch_NNNN.pt), or the run directory itself."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_TORCH_FILE as exc:
        raise UserError(
            f"{path} is damaged or not a checkpoint ({type(exc).__name__}: {first_line(exc, 160)})"
        ) from None
    if not isinstance(payload, dict):
        raise UserError(
            f"{path} is not a trainkit checkpoint: it holds a {type(payload).__name__}, "
            "not the dictionary trainkit writes."
        )
    if "format" not in payload:
        tensors = sum(isinstance(v, torch.Tensor) for v in payload.values())
        what = f"a plain state_dict of {tensors} tensors" if tensors else "a dictionary"
        raise UserError(
            f"{path} is not a trainkit checkpoint: it is {what} without trainkit's "
            "'format', 'config' and 'state' entries. To start a run from such weights, set "
            "model.init_from to this file."
        )
    if payload["format"] not in READABLE_FORMATS:
        raise UserError(
            f"{path} has checkpoint format {payload['format']!r}; this trainkit reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}. It was written by another trainkit version."
        )
    missing = [key for key in ("config", "model", "state") if key not in payload]
    if missing:
        raise UserError(
            f"{path} is an incomplete trainkit checkpoint: it lacks {', '.join(missing)}."
        )
    return payload


def candidates(run_dir: Path) -> list[Path]:
    """A run's checkpoints, newest first (last.pt, then by modification time)."""
    files = [p for p in run_dir.iterdir() if p.name in (LAST, BEST) or _PERIODIC.match(p.name)]
    return sorted(files, key=lambda p: (p.name == LAST, p.stat().st_mtime_ns), reverse=True)


@dataclass
class Checkpoint:
    """A checkpoint read from disk, and what it tells: the run's config, the model's
    inference spec, the weights."""

    path: Path
    payload: dict[str, Any]
    skipped: list[str] = field(default_factory=list)  # damaged newer files passed over

    @classmethod
    def read(cls, path: Path) -> Checkpoint:
        return cls(path, read_payload(path))

    @classmethod
    def newest_in(cls, run_dir: Path) -> Checkpoint:
        """The newest valid checkpoint in `run_dir`, skipping damaged ones."""
        skipped: list[str] = []
        for path in candidates(run_dir):
            try:
                return cls(path, read_payload(path), skipped)
            except UserError as exc:
                skipped.append(str(exc))
        detail = f": {'; '.join(skipped)}" if skipped else " (no last.pt, best.pt or epoch_NNNN.pt)"
        raise UserError(f"no readable checkpoint in {run_dir}{detail}.")

    @classmethod
    def for_use(cls, path: Path) -> Checkpoint:
        """The checkpoint `eval`, `predict` and `export` use: `path` itself, or a run
        directory's best.pt (else its last.pt)."""
        if path.is_dir():
            for name in (BEST, LAST):
                if (path / name).is_file():
                    return cls.read(path / name)
            raise UserError(
                f"{path} holds no best.pt or last.pt; pass a checkpoint file or a run directory."
            )
        return cls.read(path)

    @property
    def state(self) -> dict[str, Any]:
        return self.payload["state"]

    def config(self, command_line: CommandLine | None = None) -> Config:
        """The config stored in the checkpoint, with --set/--unset applied, its plugins
        imported from the folders the run imported them from."""
        from trainkit.config.loading import CommandLine, resolve

        return resolve(
            self.payload["config"],
            command_line or CommandLine(),
            f"the config stored in {self.path}",
            origins=self.payload.get("plugins"),
        )

    def spec(self) -> InferenceSpec | None:
        """What the model takes and gives; None in a checkpoint of format 1, which did
        not store it (the caller recomputes it from the run's data)."""
        from trainkit.models.inference_spec import InferenceSpec

        stored = self.payload.get("inputs")
        return InferenceSpec.from_dict(stored) if stored is not None else None

    def load_weights(self, model: nn.Module, *, for_use: bool = False) -> None:
        """The trained weights into `model`; `for_use`: their average where the run kept
        one (trainer.ema), which is what the run scored."""
        from trainkit.training.ema import averaged_weights

        weights = averaged_weights(self.payload) if for_use else None
        try:
            model.load_state_dict(weights if weights is not None else self.payload["model"])
        except RuntimeError as exc:
            raise UserError(
                f"the model weights in {self.path} do not fit the model this config builds "
                f"({first_line(exc, 10_000)}). Do not change model settings with --set on "
                "resume, eval, predict or export."
            ) from None
