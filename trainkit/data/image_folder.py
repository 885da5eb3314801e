"""A user's own images: `root/train/<class>/*` and `root/test/<class>/*`.

Decoding thousands of JPEG or PNG files takes far longer than training a small net on
them, so the first run decodes every image once (in worker processes, with the reader
that `trainkit predict` uses too) and caches the uint8 tensors. The cache key covers the
image format and every file's path, size and modification time, so changed data is never
served stale. Decoding never draws from the global random generators: a run reads the
same numbers whether it decoded the images or found them cached.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from trainkit.data.images import IMAGE_EXTENSIONS, ImageFiles
from trainkit.errors import UserError
from trainkit.registry import DatasetParams, register_dataset

if TYPE_CHECKING:
    from trainkit.data.memory import InMemoryDataset, Split

DEFAULT_SIZE = 32


class ImageFolderParams(DatasetParams):
    root: str = Field(description="Folder with train/ and test/, each with a folder per class.")
    image_size: int | None = Field(
        None,
        ge=8,
        description=f"Images become image_size x image_size; null: the size the model's "
        f"pretrained weights expect, else {DEFAULT_SIZE}.",
    )
    resize: int | None = Field(
        None,
        ge=8,
        description="Resize the shorter side to this, then centre-crop image_size (the "
        "evaluation transform of pretrained weights); null: the pretrained weights' resize, "
        "else stretch to image_size.",
    )
    channels: Literal[1, 3] = Field(3, description="3: decode as RGB; 1: as greyscale.")
    mean: list[float] | None = Field(
        None,
        description="Per-channel mean (0..1 scale) used to normalize; null: the pretrained "
        "weights', else computed from the training images.",
    )
    std: list[float] | None = Field(
        None, description="Per-channel standard deviation; null: like mean."
    )
    augment: bool = Field(False, description="Random crop of a 4-pixel padded image, and flips.")
    cache_dir: str | None = Field(
        None, description="Where decoded tensors are cached; null: <root>/.trainkit-cache."
    )
    workers: int | None = Field(
        None, ge=0, description="Processes that decode the images; null: one per core, up to 8."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ImageFolderParams:
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and len(values) != self.channels:
                raise ValueError(f"{key} needs {self.channels} values, one per channel")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError("std values must be greater than 0")
        if self.resize is not None and self.image_size and self.resize < self.image_size:
            raise ValueError("resize (the shorter side) cannot be smaller than image_size")
        return self


def _fingerprint(root: Path, params: ImageFolderParams) -> str:
    size = params.image_size or DEFAULT_SIZE
    key = f"v2 size={size} resize={params.resize} channels={params.channels}"
    digest = hashlib.sha256(key.encode())
    for split in ("train", "test"):
        for folder, dirs, files in sorted(os.walk(root / split, followlinks=True)):
            dirs.sort()
            for name in sorted(files):
                stat = os.stat(os.path.join(folder, name))
                rel = os.path.relpath(os.path.join(folder, name), root)
                digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _decode(folder: Path, params: ImageFolderParams, workers: int) -> tuple[Split, list[str]]:
    import torch
    from torchvision.datasets.folder import find_classes, make_dataset

    from trainkit.data.memory import Split

    try:
        classes, class_to_index = find_classes(folder)
        samples = make_dataset(folder, class_to_index, extensions=IMAGE_EXTENSIONS)
    except (FileNotFoundError, OSError) as exc:
        raise UserError(
            f"data: cannot read images under {folder} ({exc}). It must hold one sub-folder "
            "per class with image files inside (PNG, JPEG, ...)."
        ) from None
    paths = [path for path, _ in samples]
    size = params.image_size or DEFAULT_SIZE
    loader = torch.utils.data.DataLoader(
        ImageFiles(paths, params.channels, (size, size), params.resize),
        batch_size=64,
        num_workers=workers if len(paths) > 256 else 0,
        collate_fn=ImageFiles.collate,
        generator=torch.Generator(),  # not the global one: decoding must not move it
    )
    batches, bad = [], []
    for images, _, errors in loader:
        batches.append(images)
        bad.extend(errors)
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UserError(
            f"data: {len(bad)} file(s) under {folder} cannot be read as images: {shown}. "
            "Remove or replace them."
        )
    targets = torch.tensor([target for _, target in samples], dtype=torch.long)
    return Split(torch.cat(batches), targets), classes


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
    cache = cache_dir / f"image_folder-{_fingerprint(root, params)}.pt"
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:  # a damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    workers = params.workers if params.workers is not None else min(8, os.cpu_count() or 1)
    train, classes = _decode(root / "train", params, workers)
    test, test_classes = _decode(root / "test", params, workers)
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
    """Your own images in class folders, decoded once and cached."""
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
        mean=tuple(params.mean or decoded["mean"]),
        std=tuple(params.std or decoded["std"]),
        augment=params.augment,
        resize=params.resize,
    )
