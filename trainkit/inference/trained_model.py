"""A trained model, from its checkpoint, ready for inference.

`predict` and `export` start the same way: open the checkpoint (see
`training.checkpoint.Checkpoint`), rebuild the model from the stored `InferenceSpec` and
load the weights. None of this reads the training data; a checkpoint of an older
trainkit (format 1) that lacks the spec is the one exception, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from trainkit.config.loading import CommandLine
from trainkit.config.registry import DATASETS, LOSSES
from trainkit.config.schema import Config
from trainkit.console import warn
from trainkit.data.batching import BatchTransform
from trainkit.losses.objective import Objective
from trainkit.models.factory import build_model
from trainkit.models.inference_spec import InferenceSpec, model_spec
from trainkit.models.test_time import with_tta
from trainkit.training.checkpoint import Checkpoint
from trainkit.training.device import (
    Precision,
    resolve_device,
    resolve_precision,
    wants_channels_last,
)


@dataclass
class TrainedModel:
    """A model in eval mode on its device, with everything needed to feed it."""

    path: Path
    config: Config
    spec: InferenceSpec
    model: nn.Module
    objective: Objective
    device: torch.device
    precision: Precision
    transform: BatchTransform  # uint8 images to the normalized input (features unchanged)
    epoch: int
    step: int

    def __call__(self, inputs: Tensor) -> Tensor:
        """Model outputs (logits or regression values) for prepared inputs, in float32,
        averaged over the views of trainer.tta."""
        scorer = with_tta(self.model, self.config.trainer.tta)
        with torch.no_grad(), self.precision.autocast(self.device):
            return scorer(self.transform(inputs.to(self.device), train=False)).float()


def load_trained_model(
    path: Path,
    device: str = "auto",
    command_line: CommandLine | None = None,
    precision: str | None = None,
) -> TrainedModel:
    """The model in `path` (a checkpoint, or a run directory's best.pt) on `device`.

    Precision and memory format follow the run's config on that device, the way `eval`
    computes, unless `precision` is given (export uses fp32).
    """
    checkpoint = Checkpoint.for_use(path)
    config = checkpoint.config(command_line)
    spec = checkpoint.spec() or _recomputed_spec(checkpoint, config)
    chosen = resolve_device(device)
    with torch.random.fork_rng(devices=[]):  # fresh weights, replaced by the checkpoint's
        model = build_model(config.model, spec, from_checkpoint=True)
    checkpoint.load_weights(model, for_use=True)
    channels_last = wants_channels_last(config.trainer.channels_last, chosen, model)
    model = model.to(chosen, memory_format=torch.channels_last if channels_last else None)
    model.eval()
    image = spec.image
    transform = BatchTransform(
        chosen,
        mean=image.mean if image else None,
        std=image.std if image else None,
        channels_last=channels_last,
    )
    return TrainedModel(
        path=checkpoint.path,
        config=config,
        spec=spec,
        model=model,
        objective=LOSSES.build(config.loss, spec.data_info()),
        device=chosen,
        precision=resolve_precision(precision or config.trainer.precision, chosen),
        transform=transform,
        epoch=checkpoint.state["epoch"],
        step=checkpoint.state["step"],
    )


def _recomputed_spec(checkpoint: Checkpoint, config: Config) -> InferenceSpec:
    """The spec of a format-1 checkpoint, rebuilt from the data its config names."""
    warn(
        f"{checkpoint.path} was written by an older trainkit (checkpoint format 1) and does "
        "not hold the class names and preprocessing; they are recomputed from the dataset "
        f"its config names ({config.data.name}), which must still be the data it was "
        "trained on."
    )
    return model_spec(config, DATASETS.build(config.data, config.seed))
