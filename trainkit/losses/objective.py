"""What a loss builder returns: the loss, and how outputs become classes and probabilities.

The pairing matters: a one-logit logistic regression is read as `logit > 0`, a network
trained with a quadratic cost on one-hot targets by its largest output. Nothing here
imports torch, so plugins that define losses import it freely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Objective:
    """A loss function and, for classification, how to read the predicted class
    (`classify`) off the model's outputs.

    `probabilities` turns outputs into per-class probabilities where the loss defines
    them (softmax for cross-entropy, sigmoid for BCE); without it, `trainkit predict`
    ranks classes by the raw outputs and calls them scores. `soft_targets`: the loss also
    takes targets given as class probabilities (batch, classes), which mixup and cutmix
    train with.
    """

    loss: Callable[[Tensor, Tensor], Tensor]
    classify: Callable[[Tensor], Tensor] | None = None  # outputs to class indices; None: regression
    probabilities: Callable[[Tensor], Tensor] | None = None
    soft_targets: bool = False
