"""MNIST and CIFAR-10, read by torchvision's own dataset classes into memory."""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from trainkit.config.registry import register_dataset
from trainkit.data.mixing import MixParams
from trainkit.errors import UserError
from trainkit.files import FileLock

if TYPE_CHECKING:
    from trainkit.data.memory import InMemoryDataset

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class TorchvisionDatasetParams(MixParams):
    root: str = Field("data", description="Folder torchvision reads (and downloads) into.")
    download: bool = Field(False, description="Download the files if they are missing.")
    standardize: bool = Field(
        True,
        description="Shift and scale pixels by the dataset's per-channel mean and std; "
        "false: pixels as they are, scaled to [0, 1] (the input of Nielsen's networks).",
    )

    def pixel_stats(self, mean: tuple[float, ...], std: tuple[float, ...]) -> dict:
        """The mean and std the batches are normalized with."""
        if self.standardize:
            return {"mean": mean, "std": std}
        return {"mean": (0.0,) * len(mean), "std": (1.0,) * len(std)}


class MNISTParams(TorchvisionDatasetParams):
    augment: bool = Field(
        False,
        description="Shift training digits at random by up to max_shift pixels each way (no "
        "flips): the 'expanded training data' of Nielsen's book, drawn afresh every epoch.",
    )
    max_shift: int = Field(
        2,
        ge=1,
        le=8,
        description="The largest shift of augment, in pixels, each way and independently "
        "along both axes (Nielsen's book shifts by 1).",
    )


class CIFAR10Params(TorchvisionDatasetParams):
    augment: bool | Literal["crop_flip", "randaugment", "trivialaugment", "autoaugment"] = Field(
        True,
        description="true or crop_flip: a random crop of the image padded by 4 pixels, and "
        "flips; randaugment, trivialaugment, autoaugment: torchvision's policy of that name on "
        "each image (drawn from seed, epoch and image), then crop_flip; false: none.",
    )


def open_split(cls: Any, root: str, download: bool, **split: Any) -> Any:
    """One split of a torchvision dataset (`split`: its own keywords, train=... or
    split=...), with its errors turned into advice."""
    can_download = "download" in inspect.signature(cls).parameters or cls.__name__ == "QMNIST"
    try:
        if not download or not can_download:
            return cls(root=root, **split, **({"download": False} if can_download else {}))
        return _download_then_open(cls, Path(root), split)
    except (RuntimeError, OSError, ImportError) as exc:
        if not can_download:
            hint = (
                f"; torchvision cannot download {cls.__name__}: get its files from its "
                "publisher and put them there"
            )
        elif not download:
            hint = " or set data.download=true to fetch them"
        else:
            hint = (
                "; the download failed (no network?): put the files there by hand and set "
                "data.download=false"
            )
        raise UserError(
            f"data: cannot read {cls.__name__} under data.root={root!r} "
            f"({' '.join(str(exc).split())}). Point data.root at the folder that holds "
            f"{cls.__name__}'s files{hint}."
        ) from None


def _download_then_open(cls: Any, root: Path, split: dict[str, Any]) -> Any:
    """The split, downloaded first if its files are missing.

    A download holds a lock in data.root, so processes that start together (torchrun's
    ranks, a sweep's trials) fetch the files once, one after the other. It goes into a
    staging folder inside data.root that is moved into place only once complete, so a
    failed download leaves nothing behind that was not there before: no half-written
    files, no lock file, no data.root it had to create.
    """
    made = [folder for folder in (root, *root.parents) if not folder.exists()]
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(root / ".download.lock")
    lock.acquire(wait=True)
    try:
        try:
            return cls(root=str(root), **split, download=False)  # there already
        except (RuntimeError, OSError):
            pass
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
        try:
            cls(root=str(staging), **split, download=True)
            for item in staging.iterdir():
                _move_into(item, root / item.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cls(root=str(root), **split, download=False)
    finally:
        lock.release()
        with contextlib.suppress(OSError):  # the folders it made, if they stayed empty
            for folder in made:
                folder.rmdir()


def _move_into(source: Path, target: Path) -> None:
    """Move a downloaded file or folder into place, merging with what is there."""
    if source.is_dir() and target.is_dir():
        for item in source.iterdir():
            _move_into(item, target / item.name)
    else:
        os.replace(source, target)


@register_dataset("mnist", MNISTParams)
def mnist(params: MNISTParams, seed: int) -> InMemoryDataset:
    """MNIST handwritten digits: 1x28x28, 10 classes; 60,000 train, 10,000 test."""
    from torchvision.datasets import MNIST

    from trainkit.data.batching import PadCrop
    from trainkit.data.dataset import DataInfo
    from trainkit.data.memory import InMemoryDataset, Split, hold_out

    train, test = (open_split(MNIST, params.root, params.download, train=t) for t in (True, False))
    full = Split(train.data.unsqueeze(1).contiguous(), train.targets.long())
    fit, val = hold_out(full, params.val_fraction, seed)
    return InMemoryDataset(
        train=fit,
        val=val,
        test=Split(test.data.unsqueeze(1).contiguous(), test.targets.long()),
        info=DataInfo((1, 28, 28), 10, tuple(train.classes)),
        **params.pixel_stats(MNIST_MEAN, MNIST_STD),
        augment=PadCrop(padding=params.max_shift, flip=False) if params.augment else False,
    )


@register_dataset("cifar10", CIFAR10Params)
def cifar10(params: CIFAR10Params, seed: int) -> InMemoryDataset:
    """CIFAR-10 colour images: 3x32x32, 10 classes; 50,000 train, 10,000 test."""
    import torch
    from torchvision.datasets import CIFAR10

    from trainkit.data.dataset import DataInfo
    from trainkit.data.memory import InMemoryDataset, Split, hold_out
    from trainkit.data.policies import POLICIES, SamplePolicy

    def as_split(ds: Any) -> Split:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return Split(images, torch.tensor(ds.targets, dtype=torch.long))

    train, test = (
        open_split(CIFAR10, params.root, params.download, train=t) for t in (True, False)
    )
    full = as_split(train)
    fit, val = hold_out(full, params.val_fraction, seed)
    positions = torch.arange(len(full))
    fit_ids, _ = hold_out(Split(positions, positions), params.val_fraction, seed)
    policy = params.augment in POLICIES
    return InMemoryDataset(
        train=fit,
        val=val,
        test=as_split(test),
        info=DataInfo((3, 32, 32), 10, tuple(train.classes)),
        **params.pixel_stats(CIFAR10_MEAN, CIFAR10_STD),
        augment=bool(params.augment),
        policy=SamplePolicy(str(params.augment), seed) if policy else None,
        train_ids=fit_ids.inputs,
    )
