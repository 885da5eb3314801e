"""In-memory datasets fed from tensors on the training device.

Every built-in dataset fits in memory, so a dataset is three tensor splits. Batches are
cut from them on the training device by a shuffled index: no DataLoader workers, no
per-sample Python transform. Images stay uint8 until a batch is taken, then are cropped,
flipped and normalized batch-wise on the device.

Data order is a pure function of (seed, epoch), and augmentation draws from its own
generator whose state goes into checkpoints, so a resumed run sees exactly the batches
an uninterrupted one would.

In a data-parallel run every rank draws the same order and takes its own share of each
global batch (batch_size samples from each of the N ranks), so N processes step through
the same global batches as one process with N times the batch size. Evaluation splits
are cut into N contiguous shards instead, and their sums are added up over ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from trainkit.errors import UserError

CROP_PADDING = 4


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data."""

    input_shape: tuple[int, ...]
    num_classes: int | None  # None: a regression set
    class_names: tuple[str, ...] = ()
    target_dim: int = 1  # regression targets per sample

    @property
    def is_classification(self) -> bool:
        return self.num_classes is not None

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.num_classes is not None else self.target_dim


@dataclass
class Split:
    """Inputs (uint8 NCHW images or float features) and targets (class indices or floats)."""

    inputs: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: Tensor) -> Split:
        return Split(self.inputs[index], self.targets[index])

    def to(self, device: torch.device) -> Split:
        return Split(self.inputs.to(device), self.targets.to(device))

    def shard(self, rank: int, world_size: int) -> Split:
        """The rank's contiguous share of the samples (sizes differ by at most one)."""
        return Split(
            self.inputs.tensor_split(world_size)[rank], self.targets.tensor_split(world_size)[rank]
        )


@dataclass
class InMemoryDataset:
    """Train, validation and test splits, with how to turn a batch of inputs into floats."""

    train: Split
    val: Split
    test: Split
    info: DataInfo
    mean: tuple[float, ...] | None = None  # per channel, on the 0..1 scale; None: features
    std: tuple[float, ...] | None = None
    augment: bool = False  # random crop (4-pixel padding) and horizontal flip on train
    resize: int | None = None  # images were resized to this shorter side, then centre-cropped

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """A seeded random validation split taken out of `split`: (rest, held_out)."""
    n_val = max(1, round(len(split) * fraction))
    if n_val >= len(split):
        raise UserError(
            f"data.val_fraction={fraction} of {len(split)} training samples leaves none to "
            "train on; lower it or use a larger dataset."
        )
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(order[n_val:].sort().values), split.subset(order[:n_val].sort().values)


class BatchTransform:
    """uint8 images to normalized floats, with optional crop and flip, batch-wise on device.

    Without `mean` and `std` inputs are features and pass through as they are.
    """

    def __init__(
        self,
        device: torch.device,
        seed: int = 0,
        *,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        augment: bool = False,
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
        if train and self.augment:
            inputs = self._crop_and_flip(inputs)
        if self.scale is not None:
            inputs = inputs.float().mul_(self.scale).add_(self.shift)
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def _crop_and_flip(self, images: Tensor) -> Tensor:
        n, c, h, w = images.shape
        device = images.device
        pad = CROP_PADDING
        padded = F.pad(images, (pad, pad, pad, pad))
        offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=self.generator, device=device)
        rows = (offsets[0, :, None] + torch.arange(h, device=device))[:, None, :, None]
        cols = (offsets[1, :, None] + torch.arange(w, device=device))[:, None, None, :]
        batch = torch.arange(n, device=device)[:, None, None, None]
        channel = torch.arange(c, device=device)[None, :, None, None]
        cropped = padded[batch, channel, rows, cols]
        flip = torch.rand(n, generator=self.generator, device=device) < 0.5
        return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])


class DeviceBatches:
    """Batches of one split, cut from tensors that already live on the training device.

    For training, `rank` and `world_size` pick this process's share of every global
    batch; an evaluation split is expected to be sharded already (`Split.shard`).
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        transform: BatchTransform,
        *,
        train: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.split = split
        self.batch_size = batch_size  # per process
        self.transform = transform
        self.train = train
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.global_batch_size = batch_size * world_size
        # Every rank takes an equal share of every global batch, so the samples that do
        # not divide by the world size are left out of each (shuffled) epoch.
        self.used = len(split) - len(split) % world_size
        self.drop_last = drop_last and self.used >= self.global_batch_size

    def __len__(self) -> int:
        n, size = self.used, self.global_batch_size
        return n // size if self.drop_last else math.ceil(n / size)

    @property
    def num_samples(self) -> int:
        return len(self.split)

    def order(self, epoch: int) -> Tensor:
        """This epoch's sample order: a function of (seed, epoch) alone, so resumable."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.split), generator=generator).to(self.split.targets.device)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of `epoch` (shuffled when training), skipping the first `start`."""
        order = self.order(epoch)[: self.used] if self.train else None
        size = self.global_batch_size
        for b in range(start, len(self)):
            if order is None:
                inputs = self.split.inputs[b * size : (b + 1) * size]
                targets = self.split.targets[b * size : (b + 1) * size]
            else:
                index = order[b * size : (b + 1) * size]
                if self.world_size > 1:
                    index = index.tensor_split(self.world_size)[self.rank]
                inputs, targets = self.split.inputs[index], self.split.targets[index]
            yield self.transform(inputs, self.train), targets
