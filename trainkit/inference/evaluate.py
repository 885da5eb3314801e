"""`trainkit eval`: score a checkpoint on a split of the data its config names.

The split is cut and batched exactly as during training, and the inputs are normalized
with the statistics stored in the checkpoint, so the figures match the ones the run
logged. A model small enough to read (linear or logistic regression) also reports its
learned parameters, so the fitted line of the first lesson is one command away.
Scoring leaves the caller's random generators and kernel settings as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainkit.config.loading import CommandLine
from trainkit.training.build import build
from trainkit.training.checkpoint import Checkpoint
from trainkit.training.loop import evaluate

READABLE_PARAMETERS = 32  # models with at most this many values report them


def readable_parameters(model: nn.Module) -> dict[str, Any] | None:
    """Every parameter's values, for a model small enough to read them; else None."""
    if sum(p.numel() for p in model.parameters()) > READABLE_PARAMETERS:
        return None
    return {name: p.detach().cpu().tolist() for name, p in model.named_parameters()}


def evaluate_checkpoint(
    path: Path, split: str = "test", command_line: CommandLine | None = None
) -> dict[str, Any]:
    """Loss and accuracy (overall and per class) of a checkpoint on one split."""
    checkpoint = Checkpoint.for_use(path)
    with torch.random.fork_rng(devices=[]):  # building draws weights the checkpoint replaces
        experiment = build(
            checkpoint.config(command_line), stored=checkpoint.spec(), scoring_only=True
        )
    parts = experiment.parts
    checkpoint.load_weights(parts.model, for_use=True)
    result = evaluate(parts, experiment.split_batches(split), experiment.info.num_classes)
    return {
        "split": split,
        "loss": result["loss"],
        "accuracy": result.get("accuracy"),  # None for regression
        "samples": result["samples"],
        "per_class_accuracy": result.get("per_class_accuracy"),
        "class_names": list(experiment.info.class_names),
        "parameters": readable_parameters(parts.model),
        "checkpoint": str(checkpoint.path),
        "epoch": checkpoint.state["epoch"],
        "step": checkpoint.state["step"],
    }
