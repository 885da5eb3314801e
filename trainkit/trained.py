"""A trained model, from its checkpoint, ready for inference.

`eval`, `predict` and `export` all start the same way: find the checkpoint, rebuild the
config it stores (importing its plugins from where the run found them), rebuild the
model from the stored `InferenceSpec` and load the weights. None of this reads the
training data; a checkpoint of an older trainkit (format 1) that lacks the spec is the
one exception, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from trainkit import checkpoint as ckpt
from trainkit.config import Config
from trainkit.console import warn
from trainkit.data.batching import BatchTransform
from trainkit.device import Precision, resolve_device, resolve_precision, wants_channels_last
from trainkit.errors import UserError
from trainkit.finetune import build_model
from trainkit.layers import CommandLine, resolve
from trainkit.losses import Objective
from trainkit.registry import LOSSES
from trainkit.spec import InferenceSpec


def checkpoint_file(path: Path) -> Path:
    """A checkpoint file, or a run directory's best.pt (else last.pt)."""
    if path.is_dir():
        for name in (ckpt.BEST, ckpt.LAST):
            if (path / name).is_file():
                return path / name
        raise UserError(
            f"{path} holds no best.pt or last.pt; pass a checkpoint file or a run directory."
        )
    return path


def config_of(payload: dict[str, Any], command_line: CommandLine | None, source: Path) -> Config:
    """The config stored in a checkpoint, with --set/--unset applied, its plugins imported
    from the folders the run imported them from."""
    return resolve(
        payload["config"],
        command_line or CommandLine(),
        f"the config stored in {source}",
        origins=payload.get("plugins"),
    )


def load_weights(module: nn.Module, payload: dict[str, Any], source: Path) -> None:
    try:
        module.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise UserError(
            f"the model weights in {source} do not fit the model this config builds "
            f"({str(exc).splitlines()[0]}). Do not change model settings with --set on "
            "resume, eval, predict or export."
        ) from None


def spec_of_checkpoint(payload: dict[str, Any], config: Config, source: Path) -> InferenceSpec:
    """The stored spec; for a format-1 checkpoint, rebuilt from the data it names."""
    if payload.get("inputs") is not None:
        return InferenceSpec.from_dict(payload["inputs"])
    from trainkit.registry import DATASETS
    from trainkit.spec import model_spec

    warn(
        f"{source} was written by an older trainkit (checkpoint format 1) and does not hold "
        "the class names and preprocessing; they are recomputed from the dataset its config "
        f"names ({config.data.name}), which must still be the data it was trained on."
    )
    return model_spec(config, DATASETS.build(config.data, config.seed))


@dataclass
class Trained:
    """A model in eval mode on its device, with everything needed to feed it."""

    path: Path
    config: Config
    spec: InferenceSpec
    module: nn.Module
    objective: Objective
    device: torch.device
    precision: Precision
    transform: BatchTransform  # uint8 images to the normalized input (features unchanged)
    epoch: int
    step: int

    def __call__(self, inputs: Tensor) -> Tensor:
        """Model outputs (logits or regression values) for prepared inputs, in float32."""
        with torch.no_grad(), self.precision.autocast(self.device):
            return self.module(self.transform(inputs.to(self.device), train=False)).float()


def load_trained(
    path: Path,
    device: str = "auto",
    command_line: CommandLine | None = None,
    precision: str | None = None,
) -> Trained:
    """The model in `path` (a checkpoint, or a run directory's best.pt) on `device`.

    Precision and memory format follow the run's config on that device, the way `eval`
    computes, unless `precision` is given (export uses fp32).
    """
    path = checkpoint_file(path)
    payload = ckpt.load(path)
    config = config_of(payload, command_line, path)
    spec = spec_of_checkpoint(payload, config, path)
    chosen = resolve_device(device)
    module = build_model(config.model, spec.input_shape, spec.num_outputs, from_checkpoint=True)
    load_weights(module, payload, path)
    channels_last = wants_channels_last(config.trainer.channels_last, chosen, module)
    module = module.to(chosen, memory_format=torch.channels_last if channels_last else None)
    module.eval()
    image = spec.image
    transform = BatchTransform(
        chosen,
        mean=image.mean if image else None,
        std=image.std if image else None,
        channels_last=channels_last,
    )
    return Trained(
        path=path,
        config=config,
        spec=spec,
        module=module,
        objective=LOSSES.build(config.loss, spec.data_info()),
        device=chosen,
        precision=resolve_precision(precision or config.trainer.precision, chosen),
        transform=transform,
        epoch=payload["state"]["epoch"],
        step=payload["state"]["step"],
    )
