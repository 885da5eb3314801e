"""Optimizers, straight from torch.optim, and the parameter groups they are given."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from trainkit.config.registry import OptimizerParams, register_optimizer

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch

    Parameters = Iterable[torch.nn.Parameter] | Iterable[dict]


class SGDParams(OptimizerParams):
    lr: float = Field(0.1, gt=0, description="Learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum (0 for plain SGD).")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0).")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDParams:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: true needs momentum > 0")
        return self


class AdamParams(OptimizerParams):
    lr: float = Field(0.001, gt=0, description="Learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Moment decay rates.")
    eps: float = Field(1e-8, gt=0, description="Added to the denominator for stability.")


class AdamWParams(AdamParams):
    weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay.")


class RMSpropParams(OptimizerParams):
    lr: float = Field(0.001, gt=0, description="Learning rate.")
    alpha: float = Field(0.99, gt=0, lt=1, description="Smoothing of the squared gradient.")
    eps: float = Field(1e-8, gt=0, description="Added to the denominator for stability.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum.")


def parameter_groups(module: torch.nn.Module, params: OptimizerParams) -> list[dict]:
    """The trainable parameters as optimizer groups: one group, or, without decay on
    biases and norms, the one-dimensional parameters apart with weight_decay 0."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    if params.decay_biases_and_norms:
        return [{"params": trainable}]
    groups = [
        {"params": [p for p in trainable if p.ndim > 1]},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


@register_optimizer("sgd", SGDParams)
def sgd(params: SGDParams, weights: Parameters) -> torch.optim.Optimizer:
    """Stochastic gradient descent with momentum, Nesterov and L2 weight decay."""
    import torch

    return torch.optim.SGD(
        weights,
        lr=params.lr,
        momentum=params.momentum,
        nesterov=params.nesterov,
        weight_decay=params.weight_decay,
    )


@register_optimizer("adam", AdamParams)
def adam(params: AdamParams, weights: Parameters) -> torch.optim.Optimizer:
    """Adam (weight_decay as an L2 term in the gradient)."""
    import torch

    return torch.optim.Adam(
        weights, lr=params.lr, betas=params.betas, eps=params.eps, weight_decay=params.weight_decay
    )


@register_optimizer("adamw", AdamWParams)
def adamw(params: AdamWParams, weights: Parameters) -> torch.optim.Optimizer:
    """AdamW: Adam with decoupled weight decay."""
    import torch

    return torch.optim.AdamW(
        weights, lr=params.lr, betas=params.betas, eps=params.eps, weight_decay=params.weight_decay
    )


@register_optimizer("rmsprop", RMSpropParams)
def rmsprop(params: RMSpropParams, weights: Parameters) -> torch.optim.Optimizer:
    """RMSprop."""
    import torch

    return torch.optim.RMSprop(
        weights,
        lr=params.lr,
        alpha=params.alpha,
        eps=params.eps,
        momentum=params.momentum,
        weight_decay=params.weight_decay,
    )
