"""A user's own images: `root/train/<class>/*` and `root/test/<class>/*`.

Decoding thousands of JPEG or PNG files takes far longer than training a small net on
them, so the first run decodes every image once (in parallel, through torchvision's
ImageFolder) and caches the uint8 tensors. The cache key covers the image size and every
file's path, size and modification time, so changed data is never served stale.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from trainkit.errors import UserError
from trainkit.registry import DatasetParams, register_dataset

if TYPE_CHECKING:
    from trainkit.data.memory import InMemoryDataset, Split


class ImageFolderParams(DatasetParams):
    root: str = Field(description="Folder with train/ and test/, each with a folder per class.")
    image_size: int = Field(32, ge=8, description="Images are resized to image_size x image_size.")
    augment: bool = Field(False, description="Random crop of a 4-pixel padded image, and flips.")
    cache_dir: str | None = Field(
        None, description="Where decoded tensors are cached; null: <root>/.trainkit-cache."
    )
    workers: int | None = Field(
        None, ge=0, description="Processes that decode the images; null: one per core, up to 8."
    )


def _fingerprint(root: Path, image_size: int) -> str:
    digest = hashlib.sha256(f"v1 size={image_size}".encode())
    for split in ("train", "test"):
        for folder, dirs, files in sorted(os.walk(root / split)):
            dirs.sort()
            for name in sorted(files):
                stat = os.stat(os.path.join(folder, name))
                rel = os.path.relpath(os.path.join(folder, name), root)
                digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _decode(folder: Path, image_size: int, workers: int) -> tuple[Split, list[str]]:
    import torch
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    from trainkit.data.memory import Split

    try:
        tree = ImageFolder(
            str(folder),
            transform=transforms.Compose(
                [transforms.Resize((image_size, image_size)), transforms.PILToTensor()]
            ),
        )
    except (FileNotFoundError, OSError) as exc:
        raise UserError(
            f"data: cannot read images under {folder} ({exc}). It must hold one sub-folder "
            "per class with image files inside (PNG, JPEG, ...)."
        ) from None
    loader = torch.utils.data.DataLoader(tree, batch_size=256, num_workers=workers)
    if len(tree) == 0:
        raise UserError(f"data: no images under {folder}.")
    images, targets = zip(*loader, strict=True)
    return Split(torch.cat(images), torch.cat(targets).long()), list(tree.classes)


def _channel_stats(images: Any) -> dict[str, list[float]]:
    """Per-channel mean and std on the 0..1 scale, summed in chunks to bound memory."""
    import torch

    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        pixels = chunk.double().div_(255).transpose(0, 1).flatten(1)
        total += pixels.sum(1)
        squares += pixels.square().sum(1)
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-6).sqrt()
    return {"mean": mean.tolist(), "std": std.tolist()}


def _load_or_decode(params: ImageFolderParams) -> dict[str, Any]:
    import torch

    from trainkit.files import atomic_write_bytes

    root = Path(params.root).expanduser()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(
                f"data.root={params.root!r} has no {split}/ folder. image_folder expects "
                "ROOT/train/<class>/<image> and ROOT/test/<class>/<image>."
            )
    cache_dir = root / ".trainkit-cache"
    if params.cache_dir:
        cache_dir = Path(params.cache_dir).expanduser()
    cache = cache_dir / f"image_folder-{_fingerprint(root, params.image_size)}.pt"
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:  # a damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    workers = params.workers if params.workers is not None else min(8, os.cpu_count() or 1)
    train, classes = _decode(root / "train", params.image_size, workers)
    test, test_classes = _decode(root / "test", params.image_size, workers)
    if classes != test_classes:
        raise UserError(
            f"data: train/ and test/ under {root} hold different class folders "
            f"({classes} vs {test_classes}); both need the same classes."
        )
    decoded = {
        "train_inputs": train.inputs,
        "train_targets": train.targets,
        "test_inputs": test.inputs,
        "test_targets": test.targets,
        "classes": classes,
        **_channel_stats(train.inputs),
    }
    buffer = io.BytesIO()
    torch.save(decoded, buffer)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, buffer.getvalue())
    except OSError:
        pass  # a read-only data folder: still train, just decode again next time
    return decoded


@register_dataset("image_folder", ImageFolderParams)
def image_folder(params: ImageFolderParams, seed: int) -> InMemoryDataset:
    """Your own images in class folders (torchvision ImageFolder), decoded once and cached."""
    from trainkit.data.memory import DataInfo, InMemoryDataset, Split, hold_out

    decoded = _load_or_decode(params)
    train = Split(decoded["train_inputs"], decoded["train_targets"])
    fit, val = hold_out(train, params.val_fraction, seed)
    return InMemoryDataset(
        train=fit,
        val=val,
        test=Split(decoded["test_inputs"], decoded["test_targets"]),
        info=DataInfo(
            tuple(train.inputs.shape[1:]), len(decoded["classes"]), tuple(decoded["classes"])
        ),
        mean=tuple(decoded["mean"]),
        std=tuple(decoded["std"]),
        augment=params.augment,
    )
