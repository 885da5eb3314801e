"""Losses, each with the rule that turns model outputs into class predictions.

The pairing matters: a one-logit logistic regression is read as `logit > 0`, a network
trained with a quadratic cost on one-hot targets by its largest output. Shape mismatches
between model and loss are reported in words, not as a broadcasting error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field

from trainkit.errors import UserError
from trainkit.registry import LossParams, register_loss

if TYPE_CHECKING:
    from torch import Tensor

    from trainkit.data.memory import DataInfo


@dataclass(frozen=True)
class Objective:
    """A loss function and, for classification, how to read predicted classes.

    `probabilities` turns outputs into per-class probabilities where the loss defines
    them (softmax for cross-entropy, sigmoid for BCE); without it, `trainkit predict`
    ranks classes by the raw outputs and calls them scores.
    """

    loss: Callable[[Tensor, Tensor], Tensor]
    predict: Callable[[Tensor], Tensor] | None = None  # None: regression, no accuracy
    probabilities: Callable[[Tensor], Tensor] | None = None


class CrossEntropyParams(LossParams):
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing (0 disables).")


def _argmax(outputs: Tensor) -> Tensor:
    return outputs.argmax(dim=1)


def _needs_classes(name: str, data: DataInfo) -> int:
    if data.num_classes is None:
        raise UserError(
            f"loss {name} needs class labels, but the dataset is a regression set; use loss mse."
        )
    return data.num_classes


def _check_width(name: str, outputs: Tensor, allowed: tuple[int, ...], meaning: str) -> None:
    if outputs.dim() != 2 or outputs.shape[1] not in allowed:
        raise UserError(
            f"loss {name} needs model outputs of shape (batch, {' or '.join(map(str, allowed))}) "
            f"({meaning}); the model gives {tuple(outputs.shape)}. Set model.num_classes or "
            "pick a loss that fits the model."
        )


@register_loss("cross_entropy", CrossEntropyParams)
def cross_entropy(params: CrossEntropyParams, data: DataInfo) -> Objective:
    """Softmax cross-entropy on class logits."""
    import torch.nn.functional as F

    classes = _needs_classes("cross_entropy", data)

    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        _check_width("cross_entropy", outputs, (classes,), "one logit per class")
        return F.cross_entropy(outputs, targets, label_smoothing=params.label_smoothing)

    return Objective(loss, _argmax, lambda outputs: outputs.softmax(dim=1))


@register_loss("mse")
def mse(params: LossParams, data: DataInfo) -> Objective:
    """Mean squared error: regression, or Nielsen's quadratic cost on one-hot class targets."""
    import torch.nn.functional as F

    if data.num_classes is None:

        def regression(outputs: Tensor, targets: Tensor) -> Tensor:
            _check_width("mse", outputs, (targets.shape[1],), "one value per target")
            return F.mse_loss(outputs, targets)

        return Objective(regression)
    classes = data.num_classes

    def quadratic(outputs: Tensor, targets: Tensor) -> Tensor:
        _check_width("mse", outputs, (classes,), "one output per class")
        return F.mse_loss(outputs, F.one_hot(targets, classes).to(outputs.dtype))

    return Objective(quadratic, _argmax)


@register_loss("bce")
def bce(params: LossParams, data: DataInfo) -> Objective:
    """Binary cross-entropy on logits: one logit for two classes, or one per class."""
    import torch
    import torch.nn.functional as F

    classes = _needs_classes("bce", data)
    widths = (1, classes) if classes == 2 else (classes,)

    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        _check_width("bce", outputs, widths, "logits")
        if outputs.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(outputs[:, 0], targets.to(outputs.dtype))
        return F.binary_cross_entropy_with_logits(
            outputs, F.one_hot(targets, classes).to(outputs.dtype)
        )

    def predict(outputs: Tensor) -> Tensor:
        return (outputs[:, 0] > 0).long() if outputs.shape[1] == 1 else outputs.argmax(dim=1)

    def probabilities(outputs: Tensor) -> Tensor:
        if outputs.shape[1] == 1:  # P(class 1); class 0 gets the rest
            positive = outputs.sigmoid()
            return torch.cat([1 - positive, positive], dim=1)
        return outputs.sigmoid()  # one independent probability per class

    return Objective(loss, predict, probabilities)
