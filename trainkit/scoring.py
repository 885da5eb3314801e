"""`trainkit eval`: score a checkpoint on a split of the data its config names.

The split is cut and batched exactly as during training, and the inputs are normalized
with the statistics stored in the checkpoint, so the figures match the ones the run
logged. A model small enough to read (linear or logistic regression) also reports its
learned parameters, so the fitted line of the first lesson is one command away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from trainkit import checkpoint as ckpt
from trainkit.engine import evaluate
from trainkit.layers import CommandLine
from trainkit.recipe import build, split_batches
from trainkit.spec import InferenceSpec
from trainkit.trained import checkpoint_file, config_of, load_weights

READABLE_PARAMETERS = 32  # models with at most this many values report them


def readable_parameters(module: nn.Module) -> dict[str, Any] | None:
    """Every parameter's values, for a model small enough to read them; else None."""
    if sum(p.numel() for p in module.parameters()) > READABLE_PARAMETERS:
        return None
    return {name: p.detach().cpu().tolist() for name, p in module.named_parameters()}


def evaluate_checkpoint(
    path: Path, split: str = "test", command_line: CommandLine | None = None
) -> dict[str, Any]:
    """Loss and accuracy (overall and per class) of a checkpoint on one split."""
    path = checkpoint_file(path)
    payload = ckpt.load(path)
    config = config_of(payload, command_line, path)
    stored = payload.get("inputs")
    experiment = build(config, stored=InferenceSpec.from_dict(stored) if stored else None)
    parts = experiment.parts
    load_weights(parts.module, payload, path)
    result = evaluate(parts, split_batches(experiment, split), experiment.info.num_classes)
    return {
        "split": split,
        "loss": result["loss"],
        "accuracy": result.get("accuracy"),  # None for regression
        "samples": result["samples"],
        "per_class_accuracy": result.get("per_class_accuracy"),
        "class_names": list(experiment.info.class_names),
        "parameters": readable_parameters(parts.module),
        "checkpoint": str(path),
        "epoch": payload["state"]["epoch"],
        "step": payload["state"]["step"],
    }
