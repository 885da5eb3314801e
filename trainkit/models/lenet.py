"""LeNet-5, the first convolutional network most people train (on MNIST or CIFAR-10)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from trainkit.config.registry import ModelParams, register_model
from trainkit.errors import UserError
from trainkit.models.mlp import Activation, activation_layer

if TYPE_CHECKING:
    from torch import nn


class LeNetParams(ModelParams):
    activation: Activation = Field("relu", description="Non-linearity after each layer.")


@register_model("lenet", LeNetParams)
def lenet(params: LeNetParams, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """LeNet-5: two 5x5 conv + 2x2 max-pool stages, then 120-84-N linear layers.

    Each stage pools before its activation. Every activation offered is increasing, so
    max-pooling commutes with it: the network computes the same function as
    conv-activation-pool but applies the activation to a quarter of the values. (A
    test checks this for every activation; one that is not increasing would break it.)
    """
    from torch import nn

    if len(input_shape) != 3:
        raise UserError(f"model lenet needs image input (C, H, W); the data gives {input_shape}.")
    channels, height, width = input_shape
    # 28x28 digits are padded to the 32x32 the network was designed for, as in the paper.
    pad = 2 if (height, width) == (28, 28) else 0
    out_h, out_w = ((height + 2 * pad - 4) // 2 - 4) // 2, ((width + 2 * pad - 4) // 2 - 4) // 2
    if out_h < 1 or out_w < 1:
        raise UserError(
            f"model lenet needs images of at least 16x16; the data gives {input_shape}."
        )
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=pad),
        nn.MaxPool2d(2),
        activation_layer(params.activation),
        nn.Conv2d(6, 16, 5),
        nn.MaxPool2d(2),
        activation_layer(params.activation),
        nn.Flatten(),
        nn.Linear(16 * out_h * out_w, 120),
        activation_layer(params.activation),
        nn.Linear(120, 84),
        activation_layer(params.activation),
        nn.Linear(84, num_outputs),
    )
