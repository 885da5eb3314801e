"""The built-in losses, on torch.nn.functional: cross-entropy, squared error, binary
cross-entropy, each with the rule that reads classes off the model's outputs.

Shape mismatches between model and loss are reported in words, not as a broadcasting
error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from trainkit.config.registry import LossParams, register_loss
from trainkit.errors import UserError
from trainkit.losses.objective import Objective

if TYPE_CHECKING:
    from torch import Tensor

    from trainkit.data.dataset import DataInfo


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


class MSEParams(LossParams):
    reduction: Literal["mean", "half_sum"] = Field(
        "mean",
        description="mean: over outputs and batch (PyTorch's); half_sum: 1/2 x the sum over "
        "outputs, mean over the batch (Nielsen's quadratic cost; with K outputs its gradients "
        "are K/2 times larger, so the same steps take a K/2 times smaller lr).",
    )


class BCEParams(LossParams):
    reduction: Literal["mean", "sum"] = Field(
        "mean",
        description="mean: over outputs and batch (PyTorch's); sum: summed over outputs, mean "
        "over the batch (Nielsen's cross-entropy cost; with K outputs its gradients are K "
        "times larger, so the same steps take a K times smaller lr).",
    )


def _per_sample(losses: Tensor, reduction: str) -> Tensor:
    """Reduce an elementwise (batch, outputs) loss: a mean over both, or a (halved) sum
    over the outputs of each sample, then a mean over the batch."""
    if reduction == "mean":
        return losses.mean()
    total = losses.sum(dim=1).mean()
    return total / 2 if reduction == "half_sum" else total


@register_loss("mse", MSEParams)
def mse(params: MSEParams, data: DataInfo) -> Objective:
    """Squared error: regression, or Nielsen's quadratic cost on one-hot class targets."""
    import torch.nn.functional as F

    if data.num_classes is None:

        def regression(outputs: Tensor, targets: Tensor) -> Tensor:
            _check_width("mse", outputs, (targets.shape[1],), "one value per target")
            errors = F.mse_loss(outputs, targets, reduction="none")
            return _per_sample(errors, params.reduction)

        return Objective(regression)
    classes = data.num_classes

    def quadratic(outputs: Tensor, targets: Tensor) -> Tensor:
        _check_width("mse", outputs, (classes,), "one output per class")
        one_hot = F.one_hot(targets, classes).to(outputs.dtype)
        return _per_sample(F.mse_loss(outputs, one_hot, reduction="none"), params.reduction)

    return Objective(quadratic, _argmax)


@register_loss("bce", BCEParams)
def bce(params: BCEParams, data: DataInfo) -> Objective:
    """Binary cross-entropy on logits: one logit for two classes, or one per class."""
    import torch
    import torch.nn.functional as F

    classes = _needs_classes("bce", data)
    widths = (1, classes) if classes == 2 else (classes,)

    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        _check_width("bce", outputs, widths, "logits")
        if outputs.shape[1] == 1:
            targets = targets.to(outputs.dtype).unsqueeze(1)
        else:
            targets = F.one_hot(targets, classes).to(outputs.dtype)
        losses = F.binary_cross_entropy_with_logits(outputs, targets, reduction="none")
        return _per_sample(losses, params.reduction)

    def classify(outputs: Tensor) -> Tensor:
        return (outputs[:, 0] > 0).long() if outputs.shape[1] == 1 else outputs.argmax(dim=1)

    def probabilities(outputs: Tensor) -> Tensor:
        if outputs.shape[1] == 1:  # P(class 1); class 0 gets the rest
            positive = outputs.sigmoid()
            return torch.cat([1 - positive, positive], dim=1)
        return outputs.sigmoid()  # one independent probability per class

    return Objective(loss, classify, probabilities)
