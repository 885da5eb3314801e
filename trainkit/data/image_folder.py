"""A user's own images: `root/train/<class>/*` and `root/test/<class>/*`.

A folder that fits in memory is decoded once (in worker processes, with the reader that
`trainkit predict` uses too) and cached as uint8 tensors, which is the fastest way to
train on it: the cache key covers the image format and every file's path, size and
modification time, so changed data is never served stale. A folder that does not fit is
streamed from its files (`data.streaming`). `in_memory: auto` picks by a stated rule,
and the first lines of a run say which path was taken and why.

Neither path draws from the global random generators: a run reads the same numbers
whether it decoded the images, found them cached or streamed them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from trainkit.config.registry import DatasetParams, register_dataset
from trainkit.console import print_status, progress, warn
from trainkit.data.images import IMAGE_EXTENSIONS, ImageFiles
from trainkit.errors import UserError, first_line
from trainkit.files import UNREADABLE_TORCH_FILE, atomic_write

if TYPE_CHECKING:
    import torch

    from trainkit.data.dataset import Dataset
    from trainkit.data.memory import Split
    from trainkit.data.streaming import Files

DEFAULT_SIZE = 32
MEMORY_SHARE = (
    0.5  # of the available host memory (and free CUDA memory) the decoded images may take
)
STATS_SAMPLE = 2000  # training images a streamed folder's mean and std are computed from


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
    augment: bool | Literal["crop_flip", "random_resized_crop"] = Field(
        False,
        description="Training augmentation. crop_flip (or true): a random crop of the image "
        "padded by 4 pixels, and flips, batch-wise on the device (for small images); "
        "random_resized_crop: ImageNet's random area and aspect ratio, resized, and flips, "
        "per image from its full resolution (streaming only).",
    )
    in_memory: bool | Literal["auto"] = Field(
        "auto",
        description=f"true: decode every image once and keep them in memory (cached on "
        f"disk); false: stream them from their files while training; auto: in memory when "
        f"the decoded images take at most {MEMORY_SHARE:.0%} of the available memory (and "
        f"of the free CUDA memory), else streaming.",
    )
    skip_bad: bool = Field(
        False,
        description="An unreadable image is a warning, not an error: it is left out (in "
        "memory) or the next readable image stands in for it (streaming).",
    )
    cache_dir: str | None = Field(
        None,
        description="Where decoded images are cached; null: trainkit/image_folder/ in the "
        "user's cache folder ($XDG_CACHE_HOME, else ~/.cache), so a read-only or shared "
        "dataset folder is never written to.",
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
        if self.augment == "random_resized_crop" and self.in_memory is True:
            raise ValueError(
                "augment: random_resized_crop crops each image at its full resolution, which "
                "only the streaming path reads; set in_memory: auto or false"
            )
        return self

    @property
    def size(self) -> tuple[int, int]:
        side = self.image_size or DEFAULT_SIZE
        return side, side


def memory_budget() -> tuple[int, str]:
    """How many bytes of decoded images `in_memory: auto` keeps in memory, and why."""
    import torch

    available = _available_host_memory()
    budget, why = (
        int(available * MEMORY_SHARE),
        f"{MEMORY_SHARE:.0%} of {_size(available)} available",
    )
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        if free * MEMORY_SHARE < budget:
            budget, why = (
                int(free * MEMORY_SHARE),
                f"{MEMORY_SHARE:.0%} of {_size(free)} free on CUDA",
            )
    return budget, why


def _available_host_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def _list(folder: Path) -> tuple[Files, list[str]]:
    """The image files of one split, sorted by class then path, and the class names."""
    import torch
    from torchvision.datasets.folder import find_classes, make_dataset

    from trainkit.data.streaming import Files

    try:
        classes, class_to_index = find_classes(folder)
        samples = make_dataset(folder, class_to_index, extensions=IMAGE_EXTENSIONS)
    except (FileNotFoundError, OSError) as exc:
        raise UserError(
            f"data: cannot read images under {folder} ({exc}). It must hold one sub-folder "
            "per class with image files inside (PNG, JPEG, ...)."
        ) from None
    targets = torch.tensor([target for _, target in samples], dtype=torch.long)
    return Files([path for path, _ in samples], targets), classes


def _cache_dir(params: ImageFolderParams) -> Path:
    if params.cache_dir:
        return Path(params.cache_dir).expanduser()
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(home) / "trainkit" / "image_folder"


def _fingerprint(root: Path, params: ImageFolderParams) -> str:
    """The cache key: the folder, the image format and every file's name, size and time
    (one cache folder serves every dataset, so the folder itself is part of the key)."""
    key = f"v3 root={root.resolve()} size={params.size[0]} resize={params.resize}"
    key += f" channels={params.channels} skip_bad={params.skip_bad}"
    digest = hashlib.sha256(key.encode())
    for split in ("train", "test"):
        for folder, dirs, files in sorted(os.walk(root / split, followlinks=True)):
            dirs.sort()
            for name in sorted(files):
                stat = os.stat(os.path.join(folder, name))
                rel = os.path.relpath(os.path.join(folder, name), root)
                digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _decode(
    files: Files, params: ImageFolderParams, workers: int, what: str, warn_skipped: bool = True
) -> Split:
    """Every image of `files`, decoded in worker processes, as one uint8 tensor."""
    import torch

    from trainkit.data.memory import Split

    loader = torch.utils.data.DataLoader(
        ImageFiles(files.paths, params.channels, params.size, params.resize),
        batch_size=64,
        num_workers=workers if len(files.paths) > 256 else 0,
        collate_fn=ImageFiles.collate,
        generator=torch.Generator(),  # not the global one: decoding must not move it
    )
    batches, kept, bad = [], [], []
    with progress(f"decoding {len(files.paths):,} {what} images", len(files.paths)) as advance:
        for start, (images, good, errors) in zip(
            range(0, len(files.paths), 64), loader, strict=True
        ):
            batches.append(images)
            kept.extend(start + i for i in good)
            bad.extend(errors)
            advance(len(good) + len(errors))
    if bad and not params.skip_bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UserError(
            f"data: {len(bad)} file(s) cannot be read as images: {shown}. Remove or replace "
            "them, or set data.skip_bad: true to leave them out."
        )
    for why in bad if warn_skipped else []:
        warn(f"data.skip_bad: left out {why}")
    return Split(torch.cat(batches).contiguous(), files.targets[kept])


def _channel_stats(images: torch.Tensor) -> dict[str, list[float]]:
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


def _load_or_decode(
    params: ImageFolderParams, root: Path, train: Files, test: Files, workers: int
) -> dict[str, Any]:
    import torch

    cache_dir = _cache_dir(params)
    cache = cache_dir / f"{root.name}-{_fingerprint(root, params)}.pt"
    if cache.is_file():
        try:
            decoded = torch.load(cache, weights_only=True)
            print_status(f"read the decoded images from the cache {cache}")
            return decoded
        except UNREADABLE_TORCH_FILE:  # a damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    fit, tested = (
        _decode(train, params, workers, "training"),
        _decode(test, params, workers, "test"),
    )
    decoded = {
        "train_inputs": fit.inputs,
        "train_targets": fit.targets,
        "test_inputs": tested.inputs,
        "test_targets": tested.targets,
        **_channel_stats(fit.inputs),
    }
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda handle: torch.save(decoded, handle))
        print_status(f"cached the decoded images in {cache}")
    except OSError as exc:  # still train; decode again next time
        warn(
            f"could not cache the decoded images in {cache_dir} ({first_line(exc)}); they "
            "are decoded again next time. Set data.cache_dir to a writable folder."
        )
    return decoded


def _stream_stats(params: ImageFolderParams, train: Files, workers: int) -> dict[str, list[float]]:
    """Mean and std of up to STATS_SAMPLE training images, evenly spaced through the
    sorted listing (all of them, and so the in-memory path's figures, in a small folder)."""
    from trainkit.data.streaming import Files

    n = len(train.paths)
    picked = range(0, n, max(1, -(-n // STATS_SAMPLE)))
    sample = Files([train.paths[i] for i in picked], train.targets[list(picked)])
    # Streaming warns of a skipped file when it meets it; the statistics pass around it.
    return _channel_stats(_decode(sample, params, workers, "sampled", warn_skipped=False).inputs)


@register_dataset("image_folder", ImageFolderParams)
def image_folder(params: ImageFolderParams, seed: int) -> Dataset:
    """Your own images in class folders: in memory (decoded once, cached) or streamed."""
    import torch

    from trainkit.data.batching import PadCrop
    from trainkit.data.dataset import DataInfo
    from trainkit.data.memory import InMemoryDataset, Split, hold_out
    from trainkit.data.streaming import ResizedCrop, StreamingDataset

    root = Path(params.root).expanduser()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(
                f"data.root={params.root!r} has no {split}/ folder. image_folder expects "
                "ROOT/train/<class>/<image> and ROOT/test/<class>/<image>."
            )
    print_status(f"scanning {root} ...")
    train, classes = _list(root / "train")
    test, test_classes = _list(root / "test")
    if classes != test_classes:
        raise UserError(
            f"data: train/ and test/ under {root} hold different class folders "
            f"({classes} vs {test_classes}); both need the same classes."
        )
    print_status(
        f"found {len(train.paths):,} training and {len(test.paths):,} test images "
        f"in {len(classes)} classes"
    )
    workers = params.workers if params.workers is not None else min(8, os.cpu_count() or 1)
    in_memory, source = _choose_path(params, len(train.paths) + len(test.paths))
    info = DataInfo((params.channels, *params.size), len(classes), tuple(classes))
    batchwise = PadCrop() if params.augment in (True, "crop_flip") else False
    if in_memory:
        decoded = _load_or_decode(params, root, train, test, workers)
        full = Split(decoded["train_inputs"], decoded["train_targets"])
        fit, val = hold_out(full, params.val_fraction, seed)
        return InMemoryDataset(
            train=fit,
            val=val,
            test=Split(decoded["test_inputs"], decoded["test_targets"]),
            info=info,
            mean=tuple(params.mean or decoded["mean"]),
            std=tuple(params.std or decoded["std"]),
            augment=batchwise,
            resize=params.resize,
            source=source,
        )
    stats = (
        {"mean": params.mean, "std": params.std}
        if params.mean and params.std
        else _stream_stats(params, train, workers)
    )
    positions = Split(torch.arange(len(train.paths)), train.targets)
    fit_index, val_index = hold_out(positions, params.val_fraction, seed)
    return StreamingDataset(
        train_files=train,
        test_files=test,
        fit=fit_index.inputs,
        val=val_index.inputs,
        info=info,
        mean=tuple(params.mean or stats["mean"]),
        std=tuple(params.std or stats["std"]),
        channels=params.channels,
        size=params.size,
        resize=params.resize,
        augment=batchwise,
        crop=ResizedCrop() if params.augment == "random_resized_crop" else None,
        workers=workers,
        skip_bad=params.skip_bad,
        seed=seed,
        source=source,
    )


def _choose_path(params: ImageFolderParams, images: int) -> tuple[bool, str]:
    """Whether to decode into memory, and the sentence that says why."""
    decoded = images * params.channels * params.size[0] * params.size[1]
    amount = f"{images:,} images, {_size(decoded)} decoded"
    if params.in_memory is True:
        return True, f"in memory ({amount}; data.in_memory: true)"
    if params.in_memory is False:
        return False, f"streaming from the files ({amount}; data.in_memory: false)"
    if params.augment == "random_resized_crop":
        return False, (
            f"streaming from the files ({amount}): random_resized_crop needs the full images"
        )
    budget, why = memory_budget()
    if decoded <= budget:
        return True, f"in memory ({amount}, within the budget of {_size(budget)}: {why})"
    return False, (
        f"streaming from the files ({amount}, over the budget of {_size(budget)}: {why})"
    )
