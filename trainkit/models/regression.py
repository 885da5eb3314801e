"""Linear and logistic regression: one linear layer, the start of the whole path."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from trainkit.config.registry import ModelParams, register_model

if TYPE_CHECKING:
    from torch import nn


@register_model("linear")
def linear(params: ModelParams, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Linear regression, y = Wx + b (pair it with loss mse)."""
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))


@register_model("logistic")
def logistic(params: ModelParams, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Logistic regression: one logit for two classes (loss bce), N logits (softmax) for N."""
    from torch import nn

    outputs = 1 if num_outputs == 2 else num_outputs
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), outputs))
