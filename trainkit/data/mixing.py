"""MixUp and CutMix (data.mixup, data.cutmix): training batches blended in pairs.

Each training batch is, with probability data.mix_prob, mixed by torchvision's
`transforms.v2.MixUp` or `CutMix` (chosen by data.mix_switch_prob when both are on, as
timm's Mixup chooses): every image is blended with its neighbour in the (shuffled)
batch, by a share lam drawn from Beta(alpha, alpha), and its target becomes the same
blend of the two one-hot labels. Targets are then class probabilities, which
cross-entropy takes as they are (label smoothing still applies on top).

It runs on the device, after normalization, on the batch the loop is about to train on.
Its random draws come from a generator seeded by (seed, epoch, batch, rank) alone, so a
resume, gradient accumulation or another number of data workers changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from trainkit.config.registry import DatasetParams
from trainkit.data.seeding import derived_seed

if TYPE_CHECKING:
    from torch import Tensor


class MixParams(DatasetParams):
    """The batch-mixing options every image dataset shares."""

    mixup: float = Field(
        0.0,
        ge=0,
        description="MixUp's alpha: each image is blended with another by a share drawn from "
        "Beta(alpha, alpha), and so are their labels; 0: off (0.2 to 1 is usual).",
    )
    cutmix: float = Field(
        0.0,
        ge=0,
        description="CutMix's alpha: a box of another image is pasted in, and the labels are "
        "blended by area; 0: off (1.0 is usual).",
    )
    mix_prob: float = Field(
        1.0, ge=0, le=1, description="Share of training batches that are mixed at all."
    )
    mix_switch_prob: float = Field(
        0.5,
        ge=0,
        le=1,
        description="With both mixup and cutmix on: the chance that a mixed batch uses CutMix "
        "rather than MixUp.",
    )

    @model_validator(mode="after")
    def _mixing_is_on(self) -> MixParams:
        unset = {"mix_prob": 1.0, "mix_switch_prob": 0.5}
        changed = [k for k, v in unset.items() if getattr(self, k) != v]
        if changed and not (self.mixup or self.cutmix):
            raise ValueError(
                f"{', '.join(changed)} only matters with data.mixup or data.cutmix above 0; "
                "set one of them, or remove it"
            )
        return self


@dataclass
class BatchMixer:
    """Mixes training batches as `MixParams` say, for one rank."""

    mixup: float
    cutmix: float
    prob: float
    switch_prob: float
    num_classes: int
    seed: int
    rank: int = 0

    def __post_init__(self) -> None:
        from torchvision.transforms import v2

        classes = self.num_classes
        self._mixup = v2.MixUp(alpha=self.mixup, num_classes=classes) if self.mixup else None
        self._cutmix = v2.CutMix(alpha=self.cutmix, num_classes=classes) if self.cutmix else None

    def __call__(
        self, images: Tensor, labels: Tensor, epoch: int, batch: int
    ) -> tuple[Tensor, Tensor]:
        """Batch `batch` of `epoch` (mixed or not) and its targets as class probabilities."""
        import torch
        import torch.nn.functional as F

        key = derived_seed("mix", self.seed, epoch, batch, self.rank)
        with torch.random.fork_rng(devices=[]):  # torchvision draws from the global generator
            torch.default_generator.manual_seed(key)
            mix = self._choose()
            if mix is not None:
                return mix(images, labels)
        return images, F.one_hot(labels, self.num_classes).float()

    def _choose(self) -> Any:
        import torch

        if float(torch.rand(())) >= self.prob:
            return None
        if self._mixup is None or self._cutmix is None:
            return self._mixup or self._cutmix
        return self._cutmix if float(torch.rand(())) < self.switch_prob else self._mixup


def mixing_asked(params: Any) -> bool:
    """Whether a dataset's parameters turn mixup or cutmix on."""
    return isinstance(params, MixParams) and bool(params.mixup or params.cutmix)


def batch_mixer(params: Any, num_classes: int | None, seed: int, rank: int) -> BatchMixer | None:
    """The mixer `params` (a dataset's parameters) ask for; None: no mixing (or no
    classes to mix, which the caller refuses)."""
    if not mixing_asked(params) or num_classes is None:
        return None
    return BatchMixer(
        params.mixup,
        params.cutmix,
        params.mix_prob,
        params.mix_switch_prob,
        num_classes,
        seed,
        rank,
    )
