"""Test-time augmentation (trainer.tta): a model's outputs averaged over views of its input.

`flip` scores each image and its horizontal mirror and averages the two outputs (logits,
or regression values), which usually gains a little accuracy on natural images for the
price of a second forward pass. Training never sees it; validation, the test score,
`eval` and `predict` do. The wrapper holds no weights of its own, so what it wraps is
saved, loaded and exported as before.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

TTA_CHOICES = ("none", "flip")


class FlipAveraged(nn.Module):
    """The mean of `model`'s outputs for a batch of images and for their mirror images."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        mirrored = images.flip(-1)
        if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last):
            mirrored = mirrored.contiguous(memory_format=torch.channels_last)  # one layout
        return (self.model(images) + self.model(mirrored)) / 2


def with_tta(model: nn.Module, tta: str) -> nn.Module:
    """`model` as evaluation should run it under trainer.tta."""
    return FlipAveraged(model) if tta == "flip" else model
