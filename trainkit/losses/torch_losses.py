"""The built-in losses, on torch.nn.functional: cross-entropy, squared error, binary
cross-entropy, each with the rule that reads classes off the model's outputs.

Shape mismatches between model and loss are reported in words, not as a broadcasting
error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveFloat

from trainkit.config.registry import LossParams, register_loss
from trainkit.console import print_status
from trainkit.errors import UserError
from trainkit.losses.objective import Objective

if TYPE_CHECKING:
    from torch import Tensor

    from trainkit.data.dataset import DataInfo


class ClassWeightedParams(LossParams):
    class_weights: Literal["auto"] | list[PositiveFloat] | None = Field(
        None,
        description="Weight of each class in the loss, in class order; auto: inverse class "
        "frequency on the training split, n / (classes x count), as scikit-learn's "
        "'balanced' (the counts are stored with the model); null: all 1.",
    )


class CrossEntropyParams(ClassWeightedParams):
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing (0 disables).")


def _argmax(outputs: Tensor) -> Tensor:
    return outputs.argmax(dim=1)


def _needs_classes(name: str, data: DataInfo) -> int:
    if data.num_classes is None:
        raise UserError(
            f"loss {name} needs class labels, but the dataset is a regression set; use loss mse."
        )
    return data.num_classes


def _class_weights(params: ClassWeightedParams, data: DataInfo) -> Tensor | None:
    """The per-class weights `params.class_weights` asks for, as a tensor (None: none)."""
    import torch

    classes = data.num_classes or 0
    wanted = params.class_weights
    if wanted is None:
        return None
    if wanted == "auto":
        counts = data.class_counts
        if len(counts) != classes or not sum(counts):
            raise UserError(
                f"loss.class_weights: auto needs the training split's class counts, which "
                f"this dataset does not give; list the {classes} weights instead."
            )
        total = sum(counts)
        weights = [total / (classes * n) if n else 0.0 for n in counts]
        names = data.class_names or tuple(str(i) for i in range(classes))
        shown = ", ".join(f"{n} {w:.3g}" for n, w in zip(names, weights, strict=True))
        print_status(f"loss.class_weights auto (inverse class frequency): {shown}")
        return torch.tensor(weights)
    if len(wanted) != classes:
        raise UserError(
            f"loss.class_weights has {len(wanted)} values, but the data has {classes} classes; "
            f"give one weight per class, in class order ({', '.join(data.class_names)})."
        )
    return torch.tensor(wanted, dtype=torch.float32)


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
    weights = _class_weights(params, data)

    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        _check_width("cross_entropy", outputs, (classes,), "one logit per class")
        weight = weights.to(outputs.device, outputs.dtype) if weights is not None else None
        return F.cross_entropy(
            outputs, targets, weight=weight, label_smoothing=params.label_smoothing
        )

    return Objective(loss, _argmax, lambda outputs: outputs.softmax(dim=1), soft_targets=True)


class MSEParams(LossParams):
    reduction: Literal["mean", "half_sum"] = Field(
        "mean",
        description="mean: over outputs and batch (PyTorch's); half_sum: 1/2 x the sum over "
        "outputs, mean over the batch (Nielsen's quadratic cost; with K outputs its gradients "
        "are K/2 times larger, so the same steps take a K/2 times smaller lr).",
    )


class BCEParams(ClassWeightedParams):
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
    weights = _class_weights(params, data)

    def loss(outputs: Tensor, labels: Tensor) -> Tensor:
        _check_width("bce", outputs, widths, "logits")
        if outputs.shape[1] == 1:
            targets = labels.to(outputs.dtype).unsqueeze(1)
        else:
            targets = F.one_hot(labels, classes).to(outputs.dtype)
        losses = F.binary_cross_entropy_with_logits(outputs, targets, reduction="none")
        if weights is not None:  # each sample weighted by its class; a weighted mean
            row = weights.to(outputs.device, outputs.dtype)[labels]
            losses = losses * (row / row.mean()).unsqueeze(1)
        return _per_sample(losses, params.reduction)

    def classify(outputs: Tensor) -> Tensor:
        return (outputs[:, 0] > 0).long() if outputs.shape[1] == 1 else outputs.argmax(dim=1)

    def probabilities(outputs: Tensor) -> Tensor:
        if outputs.shape[1] == 1:  # P(class 1); class 0 gets the rest
            positive = outputs.sigmoid()
            return torch.cat([1 - positive, positive], dim=1)
        return outputs.sigmoid()  # one independent probability per class

    return Objective(loss, classify, probabilities)
