"""Which samples make up each batch, and how a batch of images reaches the model.

Data is held two ways: decoded in memory and cut into batches on the device
(`data.memory`), or read from image files by worker processes (`data.streaming`). Both
ask one `BatchPlan` which samples batch b of epoch e holds for this rank, and both
finish a batch on the device with one `BatchTransform`. That is why the same config on
the same data trains on the same batches whichever path it takes, and why a resume
needs nothing but (epoch, batch) and the transform's generator.

Data order is a pure function of (seed, epoch). In a data-parallel run every rank draws
the same order and takes its own share of each global batch (batch_size samples from
each of the N ranks), so N processes step through the same global batches as one
process with N times the batch size. Evaluation splits are cut into N contiguous
shards instead, and their sums are added up over ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from trainkit.errors import UserError

if TYPE_CHECKING:
    from trainkit.data.dataset import Dataset


@dataclass(frozen=True)
class PadCrop:
    """Augmentation: a random crop of the image padded by `padding` zeros, so it moves by
    up to `padding` pixels, and a horizontal flip half the time when `flip`."""

    padding: int = 4
    flip: bool = True


class BatchPlan:
    """The samples of every batch of a split, for this rank.

    A training plan shuffles by (seed, epoch) and gives each rank its share of every
    global batch; the samples that do not divide by the world size are left out of each
    epoch. With per-sample `weights` (class-balanced sampling) an epoch is as many draws,
    with replacement, by those weights, again from (seed, epoch) alone. An evaluation
    plan walks an (already sharded) split in order.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        weights: Tensor | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.weights = weights
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.global_batch_size = batch_size * world_size
        self.used = num_samples - num_samples % world_size
        self.drop_last = drop_last and self.used >= self.global_batch_size

    def __len__(self) -> int:
        n, size = self.used, self.global_batch_size
        return n // size if self.drop_last else math.ceil(n / size)

    def order(self, epoch: int) -> Tensor | None:
        """This epoch's sample order (None: in order), a function of (seed, epoch) alone."""
        if not self.shuffle:
            return None
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is not None:  # class-balanced: an epoch of draws with replacement
            return torch.multinomial(self.weights, self.used, replacement=True, generator=generator)
        return torch.randperm(self.num_samples, generator=generator)[: self.used]

    def positions(self, order: Tensor | None, batch: int) -> Tensor | slice:
        """This rank's samples of batch `batch`: indices into `order`'s samples, or a slice."""
        size = self.global_batch_size
        if order is None:
            return slice(batch * size, (batch + 1) * size)
        index = order[batch * size : (batch + 1) * size]
        return index.tensor_split(self.world_size)[self.rank] if self.world_size > 1 else index


class BatchTransform:
    """uint8 images to normalized floats, with optional crop and flip, batch-wise on device.

    Without `mean` and `std` inputs are features and pass through as they are. The
    augmentation draws from the transform's own generator, whose state goes into
    checkpoints.
    """

    def __init__(
        self,
        device: torch.device,
        seed: int = 0,
        *,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        augment: PadCrop | None = None,
        channels_last: bool = False,
    ) -> None:
        self.augment = augment
        self.channels_last = channels_last
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.scale: Tensor | None = None
        self.shift: Tensor | None = None
        if mean is not None and std is not None:
            mean_ = torch.tensor(mean, device=device).view(1, -1, 1, 1)
            std_ = torch.tensor(std, device=device).view(1, -1, 1, 1)
            self.scale = 1.0 / (255.0 * std_)
            self.shift = -mean_ / std_

    def __call__(self, inputs: Tensor, train: bool) -> Tensor:
        if train and self.augment is not None:
            inputs = self._pad_crop(inputs, self.augment)
        if self.scale is not None:
            inputs = inputs.float().mul_(self.scale).add_(self.shift)
        if inputs.dim() == 4:  # one layout whatever the batch came in (files: channels-last)
            layout = torch.channels_last if self.channels_last else torch.contiguous_format
            inputs = inputs.contiguous(memory_format=layout)
        return inputs

    def _pad_crop(self, images: Tensor, augment: PadCrop) -> Tensor:
        n, c, h, w = images.shape
        device = images.device
        pad = augment.padding
        padded = F.pad(images, (pad, pad, pad, pad))
        offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=self.generator, device=device)
        rows = (offsets[0, :, None] + torch.arange(h, device=device))[:, None, :, None]
        cols = (offsets[1, :, None] + torch.arange(w, device=device))[:, None, None, :]
        batch = torch.arange(n, device=device)[:, None, None, None]
        channel = torch.arange(c, device=device)[None, :, None, None]
        cropped = padded[batch, channel, rows, cols]
        if not augment.flip:
            return cropped
        flip = torch.rand(n, generator=self.generator, device=device) < 0.5
        return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])


@dataclass(frozen=True)
class BatchOptions:
    """How a run wants its batches: where, how large, finished how, and its rank."""

    device: torch.device
    batch_size: int  # per process
    transform: BatchTransform
    seed: int = 0
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1
    balanced: bool = False  # draw training samples class-balanced, with replacement

    def plan(self, split: str, num_samples: int, targets: Tensor | None = None) -> BatchPlan:
        """The training split is shuffled and shared out batch by batch (drawn class by
        class evenly with `balanced`, from its `targets`); an evaluation split of
        `num_samples` is this rank's shard already, walked in order."""
        train = split == "train"
        weights = None
        if train and self.balanced:
            if targets is None:
                raise UserError(
                    "data.balanced: this dataset does not hand its training targets to the "
                    "batch plan (options.plan(split, n, targets)); set data.balanced: false."
                )
            weights = balancing_weights(targets)
        return BatchPlan(
            num_samples,
            self.batch_size,
            shuffle=train,
            seed=self.seed,
            drop_last=self.drop_last and train,
            rank=self.rank if train else 0,
            world_size=self.world_size if train else 1,
            weights=weights,
        )


def balancing_weights(targets: Tensor) -> Tensor:
    """Per-sample weights that make every class present equally likely to be drawn."""
    targets = targets.cpu().long()
    counts = torch.bincount(targets).double()
    return (1.0 / counts.clamp_min(1))[targets]


def augmentation(data: Dataset) -> PadCrop | None:
    """The batch-wise augmentation a dataset asks for (True means the default PadCrop)."""
    if data.augment is True:
        return PadCrop()
    return data.augment or None
