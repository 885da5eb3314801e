"""In-memory datasets fed from tensors on the training device.

A dataset that fits in memory is three tensor splits. Batches are cut from them on the
training device by a shuffled index: no DataLoader workers, no per-sample Python
transform. Images stay uint8 until a batch is taken, then are cropped, flipped and
normalized batch-wise on the device (see `data.batching` for the order and sharding).
This module imports torch only when it is used, since plugins import its types.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field

from trainkit.config.registry import DatasetParams
from trainkit.data.dataset import DataInfo
from trainkit.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from trainkit.data.batching import BatchOptions, BatchPlan, BatchTransform, PadCrop
    from trainkit.data.policies import SamplePolicy
    from trainkit.data.table_format import TableFormat


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
    """Train, validation and test splits as tensors, with how to turn a batch of inputs
    into floats. What a plugin's dataset builder returns."""

    train: Split
    val: Split
    test: Split
    info: DataInfo
    mean: tuple[float, ...] | None = None  # per channel, on the 0..1 scale; None: features
    std: tuple[float, ...] | None = None
    augment: bool | PadCrop = False  # training batches: True is PadCrop() (crop and flip)
    resize: int | None = None  # images were resized to this shorter side, then centre-cropped
    source: str = "in memory"  # how the first line of a run describes the data
    table: TableFormat | None = None  # rows of a table: how they were prepared
    policy: SamplePolicy | None = None  # per-image augmentation of training batches
    # Each training sample's index among its source's training images, which per-image
    # augmentation is drawn by (as on the streaming path); None: its position.
    train_ids: Tensor | None = None

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def batches(self, split: str, options: BatchOptions) -> DeviceBatches:
        """The split on the device: all of the training split (each batch takes this
        rank's share), or this rank's shard of an evaluation split."""
        chosen = self.split(split)
        if split != "train":
            chosen = chosen.shard(options.rank, options.world_size)
        plan = options.plan(split, len(chosen), chosen.targets)
        if split != "train":
            return DeviceBatches(chosen.to(options.device), plan, options.transform)
        return DeviceBatches(
            chosen.to(options.device), plan, options.transform, self.policy, self.train_ids
        )

    def describe(self) -> str:
        return self.source

    def train_targets(self) -> Tensor:
        return self.train.targets


def hold_out(
    split: Split, fraction: float, seed: int, key: str = "val_fraction"
) -> tuple[Split, Split]:
    """A seeded random share of `split` held out (data.`key` says how much): (rest, held_out)."""
    import torch

    n_val = max(1, round(len(split) * fraction))
    if n_val >= len(split):
        raise UserError(
            f"data.{key}={fraction} of {len(split)} samples leaves none to train on; lower "
            "it or use a larger dataset."
        )
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(order[n_val:].sort().values), split.subset(order[:n_val].sort().values)


class HoldOutParams(DatasetParams):
    """For data that may come without a test split: how much of it to hold out."""

    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the samples held out as the test split when the data has no "
        "test split of its own.",
    )
    split_seed: int = Field(
        0,
        ge=0,
        description="Seeds which samples are held out for test; apart from the experiment "
        "seed, so runs with different seeds are scored on the same samples.",
    )

    def hold_out_test(self, count: int) -> tuple[Tensor, Tensor]:
        """Indices (sorted) of the samples kept and of those held out for test."""
        import torch

        positions = torch.arange(count)
        rest, held = hold_out(
            Split(positions, positions), self.test_fraction, self.split_seed, "test_fraction"
        )
        return rest.inputs, held.inputs


class DeviceBatches:
    """Batches of one split, cut from tensors that already live on the training device."""

    def __init__(
        self,
        split: Split,
        plan: BatchPlan,
        transform: BatchTransform,
        policy: SamplePolicy | None = None,  # per-image augmentation (training batches)
        ids: Tensor | None = None,  # what the policy's draws are keyed by; None: positions
    ) -> None:
        self.split = split
        self.plan = plan
        self.transform = transform
        self.global_batch_size = plan.global_batch_size
        self.policy = policy
        self.ids = ids

    def __len__(self) -> int:
        return len(self.plan)

    @property
    def num_samples(self) -> int:
        return len(self.split)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.plan.order(epoch)
        if order is not None:
            order = order.to(self.split.targets.device)  # one copy an epoch, not one a batch
        for b in range(start, len(self.plan)):
            index = self.plan.positions(order, b)
            inputs, targets = self.split.inputs[index], self.split.targets[index]
            if self.policy is not None:
                inputs = self.policy.batch(inputs, epoch, self._sample_ids(index))
            yield self.transform(inputs, self.plan.shuffle), targets

    def _sample_ids(self, index: Tensor | slice) -> list[int]:
        positions = torch.arange(len(self.split))[index] if isinstance(index, slice) else index
        positions = positions.cpu()
        return (self.ids[positions] if self.ids is not None else positions).tolist()
