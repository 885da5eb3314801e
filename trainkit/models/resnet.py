"""ResNet34 from torchvision's building blocks, with a stem that suits small images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from trainkit.config.registry import ModelParams, register_model
from trainkit.errors import UserError

if TYPE_CHECKING:
    from torch import nn


class ResNetParams(ModelParams):
    stem: Literal["auto", "small", "imagenet"] = Field(
        "auto",
        description="small: 3x3 stride-1 conv, no max-pool (32x32 images); imagenet: 7x7 "
        "stride-2 conv and max-pool; auto: small for images up to 64 pixels.",
    )
    zero_init_residual: bool = Field(
        False, description="Start each residual branch at zero (helps large-batch training)."
    )


@register_model("resnet34", ResNetParams)
def resnet34(params: ResNetParams, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """ResNet34: BasicBlocks [3, 4, 6, 3] (torchvision's ResNet) with a size-aware stem."""
    from torch import nn
    from torchvision.models.resnet import BasicBlock, ResNet

    if len(input_shape) != 3:
        raise UserError(
            f"model resnet34 needs image input (C, H, W); the data gives {input_shape}."
        )
    channels, height, _ = input_shape
    net = ResNet(
        BasicBlock,
        [3, 4, 6, 3],
        num_classes=num_outputs,
        zero_init_residual=params.zero_init_residual,
    )
    small = params.stem == "small" or (params.stem == "auto" and height <= 64)
    if small:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif channels != 3:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net
