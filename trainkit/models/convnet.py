"""A small convolutional network described by its config: conv stages, then fully
connected layers. Nielsen's chapter 6 networks are instances of it, and so are most of
the little CNNs one tries on MNIST or CIFAR-10 before reaching for a ResNet."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from trainkit.config.registry import ModelParams, register_model
from trainkit.errors import UserError
from trainkit.models.mlp import Activation, activation_layer

if TYPE_CHECKING:
    from torch import nn


class ConvStage(BaseModel):
    """One stage: a convolution, optionally batch norm, max-pooling, the activation."""

    model_config = ConfigDict(extra="forbid")

    channels: PositiveInt = Field(description="Output channels (feature maps).")
    kernel: PositiveInt = Field(5, description="Square kernel size.")
    padding: NonNegativeInt = Field(0, description="Zero padding on each side.")
    pool: PositiveInt = Field(2, description="Max-pool window and stride (1: no pooling).")


class ConvNetParams(ModelParams):
    conv: list[ConvStage] = Field(
        [{"channels": 20}, {"channels": 40}],
        validate_default=True,
        description="Conv stages in order, e.g. [{channels: 20, kernel: 5, pool: 2}].",
    )
    hidden: list[PositiveInt] = Field(
        [100], description="Fully connected hidden layer sizes after the conv stages."
    )
    activation: Activation = Field("relu", description="Non-linearity after every layer.")
    batch_norm: bool = Field(False, description="Batch norm after each convolution.")
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the input of every fully connected layer, the output layer "
        "included (Nielsen's placement).",
    )


@register_model("convnet", ConvNetParams)
def convnet(params: ConvNetParams, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Conv stages (conv, batch norm, max-pool, activation), then fully connected layers.

    Pooling comes before the activation, as in lenet: every activation offered is
    increasing, so the function is the same as activation-then-pool, on a quarter of
    the values.
    """
    from torch import nn

    if len(input_shape) != 3:
        raise UserError(f"model convnet needs image input (C, H, W); the data gives {input_shape}.")
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for number, stage in enumerate(params.conv, start=1):
        layers.append(nn.Conv2d(channels, stage.channels, stage.kernel, padding=stage.padding))
        if params.batch_norm:
            layers.append(nn.BatchNorm2d(stage.channels))
        if stage.pool > 1:
            layers.append(nn.MaxPool2d(stage.pool))
        layers.append(activation_layer(params.activation))
        height = (height + 2 * stage.padding - stage.kernel + 1) // stage.pool
        width = (width + 2 * stage.padding - stage.kernel + 1) // stage.pool
        if height < 1 or width < 1:
            raise UserError(
                f"model convnet: conv stage {number} of {len(params.conv)} leaves no pixels "
                f"of the {input_shape[1]}x{input_shape[2]} input; use fewer stages, smaller "
                "kernels or pools, or padding."
            )
        channels = stage.channels
    layers.append(nn.Flatten())
    features = channels * height * width
    for index, size in enumerate([*params.hidden, num_outputs]):
        if params.dropout:
            layers.append(nn.Dropout(params.dropout))
        layers.append(nn.Linear(features, size))
        if index < len(params.hidden):
            layers.append(activation_layer(params.activation))
        features = size
    return nn.Sequential(*layers)
