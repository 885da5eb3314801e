"""What a dataset builder returns, and what the training loop asks of it.

A registered dataset builder returns a `Dataset`: its `DataInfo` (what a model needs to
know about the data), how to normalize and augment its inputs, and the batches of each
split. `InMemoryDataset` (`data.memory`) is the ready-made one a plugin usually returns;
`StreamingDataset` (`data.streaming`) reads image files as it goes. Nothing here imports
torch, so plugins and `trainkit validate` stay quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from torch import Tensor

    from trainkit.data.batching import BatchOptions, BatchTransform, PadCrop
    from trainkit.data.table_format import TableFormat


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data."""

    input_shape: tuple[int, ...]
    num_classes: int | None  # None: a regression set
    class_names: tuple[str, ...] = ()
    target_dim: int = 1  # regression targets per sample
    class_counts: tuple[int, ...] = ()  # training samples of each class (of the training split)

    @property
    def is_classification(self) -> bool:
        return self.num_classes is not None

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.num_classes is not None else self.target_dim


class Batches(Protocol):
    """The batches of one split, however the data is held."""

    transform: BatchTransform
    global_batch_size: int

    def __len__(self) -> int: ...

    @property
    def num_samples(self) -> int: ...

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of `epoch` (shuffled when training), skipping the first `start`, each
        transformed and on the device."""
        ...


class Dataset(Protocol):
    """What a registered dataset builder returns: its splits' batches and its metadata."""

    info: DataInfo
    mean: tuple[float, ...] | None  # per channel, on the 0..1 scale; None: features
    std: tuple[float, ...] | None
    augment: bool | PadCrop  # batch-wise augmentation of training batches (True: PadCrop())
    resize: int | None  # images were resized to this shorter side, then centre-cropped
    table: TableFormat | None  # rows of a table: how they became input tensors

    def batches(self, split: str, options: BatchOptions) -> Batches:
        """The batches of split `split` (train, val or test) for this rank: training
        batches shuffled and shared out, evaluation batches of this rank's shard."""
        ...

    def describe(self) -> str:
        """A line for the start of a run: where the data is and how it is read."""
        ...

    def train_targets(self) -> Tensor:
        """The targets of the training split (for class counts and balanced sampling)."""
        ...
