"""Images read from their files while training, for folders too large for memory.

DataLoader worker processes decode each batch's images with the reader that the
in-memory path caches from (`data.images`); the batch travels as one uint8 tensor,
through pinned memory on CUDA, to the device, where normalization and the small-image
crop and flip happen as on the in-memory path. Batches come from the same `BatchPlan`,
so with the same config both paths train on the same samples in the same order.

The per-sample augmentation (random-resized-crop and flip for large images, or a
policy such as TrivialAugment, see `data.policies`) is drawn in the workers from
(seed, epoch, sample) alone: a worker keeps no state, any number of workers gives the
same images, and a resume needs nothing but (epoch, batch). A file that cannot be read
stops the run with its name, or with `skip_bad`, is replaced by the next readable file
of the split, the same one every time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from trainkit.console import warn
from trainkit.data.batching import BatchOptions, BatchPlan, BatchTransform, PadCrop
from trainkit.data.dataset import DataInfo
from trainkit.data.images import ImageSource, UnreadableImage, fit_image, resized, stack
from trainkit.data.policies import SamplePolicy
from trainkit.data.seeding import derived_seed
from trainkit.data.workers import leave_stop_signals_to_parent
from trainkit.errors import UserError


@dataclass(frozen=True)
class ResizedCrop:
    """The ImageNet training crop: a random part of the image, covering a `scale` share of
    its area with an aspect ratio in `ratio`, resized to the model's size, and flipped
    half the time."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one sample's augmentation in one epoch: a function of the three."""
    return torch.Generator().manual_seed(derived_seed(seed, epoch, index))


def crop_box(
    height: int, width: int, crop: ResizedCrop, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random-resized crop, drawn as torchvision's
    RandomResizedCrop draws it (ten tries, then the centre at the nearest allowed ratio)."""

    def uniform(low: float, high: float) -> float:
        return float(torch.empty(1).uniform_(low, high, generator=generator))

    area = height * width
    log_ratio = (math.log(crop.ratio[0]), math.log(crop.ratio[1]))
    for _ in range(10):
        target = area * uniform(*crop.scale)
        aspect = math.exp(uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    ratio = width / height
    if ratio < crop.ratio[0]:
        w, h = width, round(width / crop.ratio[0])
    elif ratio > crop.ratio[1]:
        h, w = height, round(height * crop.ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass
class LabelledImages:
    """A split's images (files, or a dataset's samples) and their class indices."""

    source: ImageSource
    targets: Tensor

    def __len__(self) -> int:
        return len(self.source)


@dataclass
class Samples:
    """What a worker reads: sample `index` of `files` in epoch `epoch`, as uint8."""

    files: LabelledImages
    channels: int
    size: tuple[int, int]
    resize: int | None
    crop: ResizedCrop | None = None  # per-sample training augmentation, or none
    seed: int = 0
    skip_bad: bool = False
    policy: SamplePolicy | None = None  # per-image augmentation policy, or none

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor | None, int, str | None]:
        return self.__getitems__([key])[0]

    def __getitems__(
        self, keys: list[tuple[int, int]]
    ) -> list[tuple[Tensor | None, int, str | None]]:
        """A batch's (image, target, problem) items, as the DataLoader asks for them: the
        images are read one by one, and a policy augments them together (see
        `data.policies`), each by its own sample's draws."""
        items = [self._item(index, epoch) for index, epoch in keys]
        epoch = keys[0][1] if keys else -1
        read = [i for i, (image, _, _) in enumerate(items) if image is not None]
        if self.policy is None or epoch < 0 or not read:
            return items
        images = stack([items[i][0] for i in read])  # type: ignore[misc]
        augmented = self.policy.batch(images, epoch, [keys[i][0] for i in read])
        for i, image in zip(read, augmented, strict=True):
            items[i] = (image, *items[i][1:])
        return items

    def _item(self, index: int, epoch: int) -> tuple[Tensor | None, int, str | None]:
        """(image, target, problem): a bad file gives (None, -1, why), or with skip_bad
        the next readable file's image and target, and why the first was skipped."""
        problem = None
        for step in range(len(self)):
            stand_in = (index + step) % len(self)
            try:
                image = self._read(stand_in, epoch, index)
            except UnreadableImage as exc:
                if not self.skip_bad:
                    return None, -1, str(exc)
                problem = problem or str(exc)
                continue
            return image, int(self.files.targets[stand_in]), problem
        return None, -1, f"no file of {len(self)} could be read; the first: {problem}"

    def _read(self, file: int, epoch: int, sample: int) -> Tensor:
        image = self.files.source.decode(file, self.channels)
        if epoch < 0 or self.crop is None:  # evaluation, or no per-image crop
            return fit_image(image, self.size, self.resize)
        generator = sample_generator(self.seed, epoch, sample)
        top, left, h, w = crop_box(image.shape[1], image.shape[2], self.crop, generator)
        image = resized(image[:, top : top + h, left : left + w], self.size)
        if bool(torch.rand(1, generator=generator) < 0.5):
            image = image.flip(-1)
        return image

    @staticmethod
    def collate(
        items: list[tuple[Tensor | None, int, str | None]],
    ) -> tuple[Tensor, Tensor, list[str], list[str]]:
        """One uint8 tensor for the batch (a worker hands over one shared-memory buffer,
        not one per image), the targets, the errors and the skipped files' reasons."""
        errors = [why for image, _, why in items if image is None and why]
        stacked = stack([image for image, _, _ in items if image is not None])
        targets = torch.tensor([target for image, target, _ in items if image is not None])
        skipped = [why for image, _, why in items if image is not None and why]
        return stacked, targets, errors, skipped


class _Sampler:
    """The batches of one epoch as lists of (file index, epoch) keys, from a BatchPlan.

    The training loop sets the epoch and the first batch before each pass; evaluation
    passes read with epoch -1 (no augmentation).
    """

    def __init__(self, plan: BatchPlan, indices: Tensor, augmented: bool) -> None:
        self.plan = plan
        self.indices = indices  # the split's samples, as indices into its Files
        self.augmented = augmented
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return len(self.plan) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.plan.order(self.epoch)
        tag = self.epoch if self.augmented else -1
        for b in range(self.start, len(self.plan)):
            files = self.indices[self.plan.positions(order, b)]
            yield [(int(i), tag) for i in files]


class StreamingBatches:
    """Batches of one split, read from files by DataLoader workers as they are needed."""

    def __init__(
        self,
        samples: Samples,
        plan: BatchPlan,
        indices: Tensor,
        transform: BatchTransform,
        device: torch.device,
        workers: int,
    ) -> None:
        self.plan = plan
        self.transform = transform
        self.global_batch_size = plan.global_batch_size
        self.device = device
        self.train = plan.shuffle
        self.sampler = _Sampler(plan, indices, augmented=self.train)
        self.warned: set[str] = set()
        self.loader = torch.utils.data.DataLoader(
            samples,
            batch_sampler=self.sampler,
            num_workers=workers,
            collate_fn=Samples.collate,
            pin_memory=device.type == "cuda",
            # Training keeps its workers from epoch to epoch; evaluation starts them anew.
            persistent_workers=workers > 0 and self.train,
            prefetch_factor=4 if workers > 0 else None,
            generator=torch.Generator(),  # not the global one: reading must not move it
            worker_init_fn=leave_stop_signals_to_parent,
        )

    def __len__(self) -> int:
        return len(self.plan)

    @property
    def num_samples(self) -> int:
        return len(self.sampler.indices)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        self.sampler.epoch, self.sampler.start = epoch, start
        for images, targets, errors, skipped in self.loader:
            if errors:
                raise UserError(
                    f"data: {errors[0]}. Remove or replace the file (a resumed run continues "
                    "from its last checkpoint), or set data.skip_bad: true to train on the "
                    "next readable image in its place."
                )
            for why in skipped:
                if why not in self.warned:
                    self.warned.add(why)
                    warn(f"data.skip_bad: {why}; the next readable image stands in for it")
            images = images.to(self.device, non_blocking=True)
            yield self.transform(images, self.train), targets.to(self.device, non_blocking=True)


@dataclass
class StreamingDataset:
    """An image folder read from its files while training (`Dataset` protocol)."""

    train_files: LabelledImages
    test_files: LabelledImages
    fit: Tensor  # indices into train_files: the samples trained on
    val: Tensor  # indices into train_files: the validation hold-out
    info: DataInfo
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    size: tuple[int, int]
    resize: int | None
    augment: bool | PadCrop = False  # batch-wise, on the device
    crop: ResizedCrop | None = None  # per sample, in the workers
    policy: SamplePolicy | None = None  # per image, in the workers
    workers: int = 0
    skip_bad: bool = False
    seed: int = 0
    source: str = "streaming"
    table: None = None  # images, not rows of a table

    def batches(self, split: str, options: BatchOptions) -> StreamingBatches:
        train = split == "train"
        files = self.test_files if split == "test" else self.train_files
        indices = {"train": self.fit, "val": self.val}.get(split)
        if indices is None:
            indices = torch.arange(len(files))
        if not train:
            indices = indices.tensor_split(options.world_size)[options.rank]  # this rank's
        samples = Samples(
            files,
            self.channels,
            self.size,
            self.resize,
            crop=self.crop if train else None,
            seed=self.seed,
            skip_bad=self.skip_bad,
            policy=self.policy if train else None,
        )
        plan = options.plan(split, len(indices), files.targets[indices])
        return StreamingBatches(
            samples, plan, indices, options.transform, options.device, self.workers
        )

    def describe(self) -> str:
        return self.source

    def train_targets(self) -> Tensor:
        return self.train_files.targets[self.fit]
