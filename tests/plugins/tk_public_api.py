"""A plugin written only against `trainkit.plugin`, as the docs tell plugin authors:
one component of every kind. tests/test_plugin_api.py trains with all of them."""

import math

import torch
from pydantic import Field

from trainkit.plugin import (
    DataInfo,
    DatasetParams,
    InMemoryDataset,
    LossParams,
    ModelParams,
    Objective,
    OptimizerParams,
    SchedulerParams,
    Split,
    UserError,
    hold_out,
    register_dataset,
    register_loss,
    register_model,
    register_optimizer,
    register_scheduler,
)


class RingsParams(DatasetParams):
    n_train: int = Field(300, ge=10, description="Training points (validation taken out).")
    n_test: int = Field(100, ge=1, description="Test points.")


@register_dataset("tk_rings", RingsParams)
def rings(params, seed):
    """Points inside or outside the unit circle."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(params.n_train + params.n_test, 2, generator=generator) * 1.2
    labels = (points.norm(dim=1) > 1).long()
    n = params.n_train
    fit, val = hold_out(Split(points[:n], labels[:n]), params.val_fraction, seed)
    info = DataInfo((2,), 2, ("inside", "outside"))
    return InMemoryDataset(train=fit, val=val, test=Split(points[n:], labels[n:]), info=info)


class SquaresParams(ModelParams):
    width: int = Field(8, ge=1, description="Hidden units.")


@register_model("tk_squares", SquaresParams)
def squares(params, input_shape, num_outputs):
    """A network that sees the squares of its inputs too."""
    if len(input_shape) != 1:
        raise UserError(f"model tk_squares needs feature rows; the data gives {input_shape}.")

    class Squares(torch.nn.Module):
        def __init__(self):
            super().__init__()
            features = 2 * math.prod(input_shape)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(features, params.width),
                torch.nn.ReLU(),
                torch.nn.Linear(params.width, num_outputs),
            )

        def forward(self, x):
            return self.net(torch.cat([x, x * x], dim=1))

    return Squares()


class SmoothParams(LossParams):
    smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing.")


@register_loss("tk_smooth_ce", SmoothParams)
def smooth_ce(params, data):
    """Cross-entropy with label smoothing."""
    if data.num_classes is None:
        raise UserError("loss tk_smooth_ce needs class labels.")

    def loss(outputs, targets):
        return torch.nn.functional.cross_entropy(outputs, targets, label_smoothing=params.smoothing)

    return Objective(loss, lambda outputs: outputs.argmax(1), lambda o: o.softmax(1))


class SignParams(OptimizerParams):
    lr: float = Field(0.01, gt=0, description="Step size.")


@register_optimizer("tk_sign_sgd", SignParams)
def sign_sgd(params, weights):
    """SGD on the sign of the gradient."""

    class SignSGD(torch.optim.Optimizer):
        def __init__(self, groups):
            super().__init__(groups, {"lr": params.lr, "weight_decay": params.weight_decay})

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad.sign(), alpha=-group["lr"])

    return SignSGD(weights)


class HalvingParams(SchedulerParams):
    every_epochs: float = Field(1.0, gt=0, description="Epochs between halvings.")


@register_scheduler("tk_halving", HalvingParams)
def halving(params, optimizer, steps_per_epoch, epochs):
    """Halve the learning rate every `every_epochs`."""
    size = max(1, round(params.every_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.StepLR(optimizer, size, 0.5)
