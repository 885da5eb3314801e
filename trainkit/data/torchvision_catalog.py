"""Any of torchvision's image-classification datasets, by name, through its own classes.

torchvision's datasets agree on little beyond `ds[i] -> (image, label)`: some take
`train=True/False`, some `split="train"/"test"` (or "trainval", "val"), some have one
split only; their labels live in `targets`, `labels`, `_labels` or `_samples`; their
class names in `classes`, `categories` or nowhere. CATALOG records, for each dataset
trainkit knows, which split convention it follows and the size and channels of its
images; everything else is read off the dataset object. Datasets with one split get a
seeded test split. From there a torchvision dataset is an image dataset like an image
folder (`data.image_data`): the same options, in memory or streamed by the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from trainkit.config.registry import register_dataset, suggest
from trainkit.console import print_status
from trainkit.data.image_data import (
    CACHE_VERSION,
    DEFAULT_SIZE,
    ImageParams,
    cache_folder,
    fingerprint,
    image_dataset,
)
from trainkit.data.images import UnreadableImage
from trainkit.data.memory import HoldOutParams
from trainkit.errors import UserError, first_line

if TYPE_CHECKING:
    import torch

    from trainkit.data.dataset import Dataset


@dataclass(frozen=True)
class Entry:
    """How one torchvision dataset is opened: `train` (train=True/False), a pair of
    `split=` values (train, test), or None for a dataset with one split."""

    splits: Literal["train"] | tuple[str, str] | None
    channels: int
    size: int | None = None  # the side of its images, where they all have one


_TRAIN_FLAG: Literal["train"] = "train"
_TRAIN_TEST = ("train", "test")
CATALOG: dict[str, Entry] = {
    "MNIST": Entry(_TRAIN_FLAG, 1, 28),
    "FashionMNIST": Entry(_TRAIN_FLAG, 1, 28),
    "KMNIST": Entry(_TRAIN_FLAG, 1, 28),
    "QMNIST": Entry(_TRAIN_FLAG, 1, 28),
    "USPS": Entry(_TRAIN_FLAG, 1, 16),
    "SEMEION": Entry(None, 1, 16),
    "CIFAR10": Entry(_TRAIN_FLAG, 3, 32),
    "CIFAR100": Entry(_TRAIN_FLAG, 3, 32),
    "SVHN": Entry(_TRAIN_TEST, 3, 32),
    "STL10": Entry(_TRAIN_TEST, 3, 96),
    "FER2013": Entry(_TRAIN_TEST, 1, 48),
    "PCAM": Entry(_TRAIN_TEST, 3, 96),
    "EuroSAT": Entry(None, 3, 64),
    "Caltech101": Entry(None, 3),
    "Caltech256": Entry(None, 3),
    "SUN397": Entry(None, 3),
    "Country211": Entry(_TRAIN_TEST, 3),
    "DTD": Entry(_TRAIN_TEST, 3),
    "FGVCAircraft": Entry(("trainval", "test"), 3),
    "Flowers102": Entry(_TRAIN_TEST, 3),
    "Food101": Entry(_TRAIN_TEST, 3),
    "GTSRB": Entry(_TRAIN_TEST, 3),
    "OxfordIIITPet": Entry(("trainval", "test"), 3),
    "RenderedSST2": Entry(_TRAIN_TEST, 3),
    "StanfordCars": Entry(_TRAIN_TEST, 3),
    "Imagenette": Entry(("train", "val"), 3),
    "ImageNet": Entry(("train", "val"), 3),
    "Places365": Entry(("train-standard", "val"), 3),
}
_LABELS = ("targets", "labels", "_labels", "y")  # where torchvision datasets keep labels
_PAIRS = ("_samples", "samples", "imgs")  # or as (image or path, label) pairs


class TorchvisionParams(ImageParams, HoldOutParams):
    dataset: str = Field(
        description="The dataset's class name in torchvision.datasets; one of: "
        + ", ".join(CATALOG)
        + ". These are torchvision's image-classification datasets whose splits trainkit "
        "knows (trainkit ls datasets lists them).",
    )
    root: str = Field("data", description="Folder torchvision reads (and downloads) into.")
    download: bool = Field(False, description="Download the files if they are missing.")
    channels: Literal[1, 3] | None = Field(
        None, description="3: RGB; 1: greyscale; null: the dataset's own (1 for the MNISTs)."
    )

    @field_validator("dataset")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in CATALOG:
            raise ValueError(
                f"{name!r} is not one of torchvision's image-classification datasets that "
                f"trainkit knows{suggest(name, list(CATALOG))} `trainkit ls datasets` lists them"
            )
        return name

    @property
    def entry(self) -> Entry:
        return CATALOG[self.dataset]


class TorchvisionImages:
    """A torchvision dataset's samples as an ImageSource (decoded in DataLoader workers)."""

    def __init__(self, dataset: Any, name: str) -> None:
        self.dataset, self.label = dataset, name

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        return f"{self.label} sample {index}"

    def decode(self, index: int, channels: int) -> torch.Tensor:
        import torch
        from torchvision.transforms.v2.functional import pil_to_tensor

        try:
            image = self.dataset[index][0]
        except (OSError, ValueError, RuntimeError) as exc:
            why = first_line(exc)
            raise UnreadableImage(f"{self.name(index)}: cannot be read ({why})") from None
        if isinstance(image, torch.Tensor):
            return _tensor_channels(image, channels)
        return pil_to_tensor(image.convert("RGB" if channels == 3 else "L"))


def _tensor_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    import torch

    if image.dim() == 2:
        image = image[None]
    if image.shape[0] == channels:
        return image
    if channels == 3:
        return image[:1].expand(3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)  # ITU-R 601, as Pillow's "L"
    return (image[:3].float() * weights).sum(0, keepdim=True).round().to(image.dtype)


def _labels(dataset: Any) -> torch.Tensor:
    """Every sample's label, read off the dataset without decoding its images where it
    keeps them (a one-off pass over the samples where it does not)."""
    import numpy as np
    import torch

    for attribute in _LABELS:
        values = getattr(dataset, attribute, None)
        if values is not None and len(values) == len(dataset):
            labels = torch.as_tensor(np.asarray(values)).long()
            return labels[:, 0] if labels.dim() == 2 else labels  # QMNIST: (class, ...)
    for attribute in _PAIRS:
        pairs = getattr(dataset, attribute, None)
        if pairs is not None and len(pairs) == len(dataset):
            return torch.tensor([int(label) for _, label in pairs], dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def _class_names(dataset: Any, labels: list[torch.Tensor]) -> tuple[str, ...]:
    for attribute in ("classes", "categories"):
        names = getattr(dataset, attribute, None)
        if names:
            return tuple(str(n) for n in names)
    count = max(int(t.max()) for t in labels if len(t)) + 1
    return tuple(str(i) for i in range(count))


def _fingerprint(params: TorchvisionParams, channels: int, size: tuple[int, int]) -> str:
    """The cache key: dataset, format and every file under data.root (name, size, time)."""
    root = Path(params.root).expanduser().resolve()
    key = f"{CACHE_VERSION} torchvision {params.dataset} root={root} size={size} "
    key += f"resize={params.resize} channels={channels} skip_bad={params.skip_bad} "
    key += f"test_fraction={params.test_fraction} split_seed={params.split_seed}"
    return fingerprint(key, root, [root])


@register_dataset("torchvision", TorchvisionParams)
def torchvision_dataset(params: TorchvisionParams, seed: int) -> Dataset:
    """Any torchvision image-classification dataset by name (FashionMNIST, CIFAR100, ...)."""
    import torchvision.datasets

    from trainkit.data.image_data import Subset
    from trainkit.data.streaming import LabelledImages
    from trainkit.data.torchvision_datasets import open_split

    cls = getattr(torchvision.datasets, params.dataset, None)
    if cls is None:
        raise UserError(
            f"data.dataset={params.dataset!r}: torchvision {torchvision.__version__} has no such "
            "dataset; it came in a later version: pip install -U torchvision."
        )
    entry = params.entry
    if entry.splits == "train":
        opened = [open_split(cls, params.root, params.download, train=t) for t in (True, False)]
    elif entry.splits is not None:
        opened = [open_split(cls, params.root, params.download, split=s) for s in entry.splits]
    else:
        opened = [open_split(cls, params.root, params.download)]
    sources = [TorchvisionImages(d, params.dataset) for d in opened]
    labels = [_labels(d) for d in opened]
    classes = _class_names(opened[0], labels)
    if len(opened) == 2:
        train = LabelledImages(sources[0], labels[0])
        test = LabelledImages(sources[1], labels[1])
        how = (
            "its train=True and train=False splits"
            if entry.splits == "train"
            else f"its {entry.splits[0]!r} and {entry.splits[1]!r} splits"
        )
    else:
        train, test = (
            LabelledImages(Subset(sources[0], part.tolist()), labels[0][part])
            for part in params.hold_out_test(len(sources[0]))
        )
        how = f"its one split, {params.test_fraction:.0%} held out for test (split_seed)"
    print_status(
        f"torchvision {params.dataset} under {params.root}: {len(train):,} training and "
        f"{len(test):,} test images in {len(classes)} classes ({how})"
    )
    channels = params.channels or entry.channels
    side = params.image_size or entry.size or DEFAULT_SIZE
    size = (side, side)

    def cache() -> Path:  # fingerprinted only when the images are kept in memory
        name = f"{params.dataset}-{_fingerprint(params, channels, size)}.pt"
        return cache_folder(params, "torchvision") / name

    return image_dataset(
        params,
        seed,
        train=train,
        test=test,
        classes=classes,
        channels=channels,
        size=size,
        cache=cache,
    )
