"""A fast residual network for small images, of the ResNet-9 / airbench lineage.

The design that trains CIFAR-10 to 94% in minutes on one GPU (David Page's ResNet-9 for
DAWNBench, then Keller Jordan's airbench): few, wide stages, each a convolution then a
max-pool that halves the image, batch norm and a smooth activation after every
convolution, a residual pair of convolutions where they pay, a global max-pool and a
linear head whose logits are scaled down (it trains better at high learning rates).
Everything else about the speed is in the recipe (configs/cifar_fast.yaml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from trainkit.config.registry import ModelParams, register_model
from trainkit.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor, nn


class CifarFastParams(ModelParams):
    widths: list[int] = Field(
        [64, 128, 256, 512],
        min_length=4,
        max_length=4,
        description="Channels of the stem and of the three stages (ResNet-9's; [32, 64, 128, "
        "256] is a quarter of the work).",
    )
    logit_scale: float = Field(
        0.125, gt=0, description="The logits are the head's outputs times this."
    )


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.GELU(),
    )


def _residual(channels: int) -> nn.Module:
    """x + f(x), f two convolutions (defined here: this module does not import torch at
    import, so that listing models stays quick)."""
    from torch import nn

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

        def forward(self, x: Tensor) -> Tensor:
            return x + self.body(x)

    return Residual()


@register_model("cifar_fast", CifarFastParams)
def cifar_fast(
    params: CifarFastParams, input_shape: tuple[int, ...], num_outputs: int
) -> nn.Module:
    """ResNet-9 for small images: three pooled stages, two residual, scaled logits."""
    import torch
    from torch import nn

    if len(input_shape) != 3 or input_shape[1] < 8:
        raise UserError(
            f"model cifar_fast needs images (C, H, W) of at least 8 pixels; the data gives "
            f"{input_shape}."
        )
    stem, first, second, third = params.widths

    class Scaled(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x * params.logit_scale

    net = nn.Sequential(
        _conv_bn(input_shape[0], stem),
        _conv_bn(stem, first),
        nn.MaxPool2d(2),
        _residual(first),
        _conv_bn(first, second),
        nn.MaxPool2d(2),
        _conv_bn(second, third),
        nn.MaxPool2d(2),
        _residual(third),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(third, num_outputs, bias=False),
        Scaled(),
    )
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.2  # statistics that follow a fast schedule
    return net
