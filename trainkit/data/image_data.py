"""Image datasets from any source, in memory or streamed, by one set of rules.

An image folder, a torchvision dataset and a Hugging Face one differ only in where
their images come from (an `ImageSource`). Everything after that is shared, so the
same options mean the same thing for all three: the image format (size, resize,
channels), the normalization statistics, the augmentation, and whether the decoded
images are kept in memory (decoded once by worker processes, cached on disk where the
source can be fingerprinted) or streamed from the source while training.
`in_memory: auto` picks by a stated rule, and the first lines of a run say which path
was taken and why.

Normalization statistics, when not given, come from the same images on both paths: up
to STATS_SAMPLE training images spread evenly through the split. So the same config
trains the same weights whichever path `auto` picks, at any size.

Neither path draws from the global random generators: a run reads the same numbers
whether it decoded the images, found them cached or streamed them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from trainkit.console import print_status, progress, warn
from trainkit.data.images import Images
from trainkit.data.mixing import MixParams
from trainkit.data.policies import POLICIES, SamplePolicy
from trainkit.data.workers import leave_stop_signals_to_parent
from trainkit.errors import UserError, first_line
from trainkit.files import UNREADABLE_TORCH_FILE, atomic_write

if TYPE_CHECKING:
    import torch

    from trainkit.data.dataset import Dataset
    from trainkit.data.memory import Split
    from trainkit.data.streaming import LabelledImages

DEFAULT_SIZE = 32
MEMORY_SHARE = 0.5  # of the available host memory (and free CUDA memory) decoded images may take
STATS_SAMPLE = 2000  # training images the mean and std are computed from, when not given
CACHE_VERSION = "v4"


class ImageParams(MixParams):
    """The options every image dataset shares."""

    image_size: int | None = Field(
        None,
        ge=8,
        description=f"Images become image_size x image_size; null: the size the model's "
        f"pretrained weights expect, else the dataset's own size where all its images have "
        f"one, else {DEFAULT_SIZE}.",
    )
    resize: int | None = Field(
        None,
        ge=8,
        description="Resize the shorter side to this, then centre-crop image_size (the "
        "evaluation transform of pretrained weights); null: the pretrained weights' resize, "
        "else stretch to image_size.",
    )
    mean: list[float] | None = Field(
        None,
        description=f"Per-channel mean (0..1 scale) used to normalize; null: the pretrained "
        f"weights', else computed from up to {STATS_SAMPLE:,} training images spread evenly "
        f"through the split.",
    )
    std: list[float] | None = Field(
        None, description="Per-channel standard deviation; null: like mean."
    )
    augment: (
        bool
        | Literal[
            "crop_flip", "random_resized_crop", "randaugment", "trivialaugment", "autoaugment"
        ]
    ) = Field(
        False,
        description="Training augmentation. crop_flip (or true): a random crop of the image "
        "padded by 4 pixels, and flips, batch-wise on the device (for small images); "
        "random_resized_crop: ImageNet's random area and aspect ratio, resized, and flips, "
        "per image from its full resolution (streaming only); randaugment, trivialaugment, "
        "autoaugment: torchvision's policy of that name on each image (drawn from seed, "
        "epoch and image), then crop_flip.",
    )
    in_memory: bool | Literal["auto"] = Field(
        "auto",
        description=f"true: decode every image once and keep them in memory (cached on "
        f"disk where the source allows); false: stream them while training; auto: in memory "
        f"when the decoded images take at most {MEMORY_SHARE:.0%} of the available memory "
        f"(and of the free CUDA memory), else streaming.",
    )
    skip_bad: bool = Field(
        False,
        description="An unreadable image is a warning, not an error: it is left out (in "
        "memory) or the next readable image stands in for it (streaming).",
    )
    cache_dir: str | None = Field(
        None,
        description="Where decoded images are cached; null: trainkit/<dataset>/ in the "
        "user's cache folder ($XDG_CACHE_HOME, else ~/.cache), so a read-only or shared "
        "dataset folder is never written to.",
    )
    workers: int | None = Field(
        None, ge=0, description="Processes that decode the images; null: one per core, up to 8."
    )

    @model_validator(mode="after")
    def _consistent_images(self) -> ImageParams:
        if self.std is not None and min(self.std) <= 0:
            raise ValueError("std values must be greater than 0")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError("mean and std need one value per channel each")
        if self.resize is not None and self.image_size and self.resize < self.image_size:
            raise ValueError("resize (the shorter side) cannot be smaller than image_size")
        if self.augment == "random_resized_crop" and self.in_memory is True:
            raise ValueError(
                "augment: random_resized_crop crops each image at its full resolution, which "
                "only the streaming path reads; set in_memory: auto or false"
            )
        return self

    def worker_count(self) -> int:
        return self.workers if self.workers is not None else min(8, os.cpu_count() or 1)


def check_channels(params: ImageParams, channels: int) -> None:
    """mean and std, when given, have one value per channel of the decoded images."""
    for key in ("mean", "std"):
        values = getattr(params, key)
        if values is not None and len(values) != channels:
            raise UserError(
                f"data.{key} has {len(values)} values, but the images are decoded with "
                f"{channels} channel(s): give one value per channel."
            )


def memory_budget() -> tuple[int, str]:
    """How many bytes of decoded images `in_memory: auto` keeps in memory, and why."""
    import torch

    available = _available_host_memory()
    budget, why = (
        int(available * MEMORY_SHARE),
        f"{MEMORY_SHARE:.0%} of {size_text(available)} available",
    )
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        if free * MEMORY_SHARE < budget:
            budget, why = (
                int(free * MEMORY_SHARE),
                f"{MEMORY_SHARE:.0%} of {size_text(free)} free on CUDA",
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


def size_text(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def fingerprint(key: str, root: Path, folders: list[Path]) -> str:
    """A cache key: `key` (the dataset and the image format) and the name, size and
    modification time of every file under `folders`, so changed data is never served
    stale (a download's staging folder left out)."""
    digest = hashlib.sha256(key.encode())
    for top in folders:
        for folder, dirs, files in sorted(os.walk(top, followlinks=True)):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".download"))
            for name in sorted(files):
                stat = os.stat(os.path.join(folder, name))
                rel = os.path.relpath(os.path.join(folder, name), root)
                digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def cache_folder(params: ImageParams, kind: str) -> Path:
    if params.cache_dir:
        return Path(params.cache_dir).expanduser()
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(home) / "trainkit" / kind


def _decode(
    images: LabelledImages,
    params: ImageParams,
    channels: int,
    size: tuple[int, int],
    what: str,
    warn_skipped: bool = True,
) -> Split:
    """Every image of `images`, decoded in worker processes, as one uint8 tensor."""
    import torch

    from trainkit.data.memory import Split

    workers = params.worker_count()
    loader = torch.utils.data.DataLoader(
        Images(images.source, channels, size, params.resize),
        batch_size=64,
        num_workers=workers if len(images) > 256 else 0,
        collate_fn=Images.collate,
        generator=torch.Generator(),  # not the global one: decoding must not move it
        worker_init_fn=leave_stop_signals_to_parent,
    )
    batches, kept, bad = [], [], []
    with progress(f"decoding {len(images):,} {what} images", len(images)) as advance:
        for start, (decoded, good, errors) in zip(range(0, len(images), 64), loader, strict=True):
            batches.append(decoded)
            kept.extend(start + i for i in good)
            bad.extend(errors)
            advance(len(good) + len(errors))
    if bad and not params.skip_bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UserError(
            f"data: {len(bad)} image(s) cannot be read: {shown}. Remove or replace them, or "
            "set data.skip_bad: true to leave them out."
        )
    for why in bad if warn_skipped else []:
        warn(f"data.skip_bad: left out {why}")
    return Split(torch.cat(batches).contiguous(), images.targets[kept])


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


def stats_sample(count: int) -> list[int]:
    """The training images the statistics come from: up to STATS_SAMPLE, evenly spaced
    through the split (all of them in a smaller one)."""
    return list(range(0, count, max(1, -(-count // STATS_SAMPLE))))


def _load_or_decode(
    train: LabelledImages,
    test: LabelledImages,
    params: ImageParams,
    channels: int,
    size: tuple[int, int],
    cache: Path | None,
) -> dict[str, Any]:
    import torch

    if cache is not None and cache.is_file():
        try:
            decoded = torch.load(cache, weights_only=True)
            print_status(f"read the decoded images from the cache {cache}")
            return decoded
        except UNREADABLE_TORCH_FILE:  # a damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    fit = _decode(train, params, channels, size, "training")
    tested = _decode(test, params, channels, size, "test")
    decoded = {
        "train_inputs": fit.inputs,
        "train_targets": fit.targets,
        "test_inputs": tested.inputs,
        "test_targets": tested.targets,
    }
    if cache is None:
        return decoded
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda handle: torch.save(decoded, handle))
        print_status(f"cached the decoded images in {cache}")
    except OSError as exc:  # still train; decode again next time
        warn(
            f"could not cache the decoded images in {cache.parent} ({first_line(exc)}); "
            "they are decoded again next time. Set data.cache_dir to a writable folder."
        )
    return decoded


def image_dataset(
    params: ImageParams,
    seed: int,
    *,
    train: LabelledImages,
    test: LabelledImages,
    classes: tuple[str, ...],
    channels: int,
    size: tuple[int, int],
    cache: Callable[[], Path] | None,
) -> Dataset:
    """The dataset of a source's train and test images. `cache` names the file the
    decoded images are cached in (called only when they are kept in memory, since
    fingerprinting a source can take a while); None: the source cannot be cached."""
    import torch

    from trainkit.data.batching import PadCrop
    from trainkit.data.dataset import DataInfo
    from trainkit.data.memory import InMemoryDataset, Split, hold_out
    from trainkit.data.streaming import LabelledImages, ResizedCrop, StreamingDataset

    check_channels(params, channels)
    in_memory, source = _choose_path(params, len(train) + len(test), channels, size)
    info = DataInfo((channels, *size), len(classes), classes)
    batchwise = PadCrop() if params.augment in (True, "crop_flip", *POLICIES) else False
    policy = SamplePolicy(params.augment, seed) if params.augment in POLICIES else None
    given = {"mean": params.mean, "std": params.std} if params.mean and params.std else None
    if in_memory:
        decoded = _load_or_decode(train, test, params, channels, size, cache and cache())
        full = Split(decoded["train_inputs"], decoded["train_targets"])
        stats = given or _channel_stats(full.inputs[stats_sample(len(full))])
        fit, val = hold_out(full, params.val_fraction, seed)
        fit_ids, _ = hold_out(
            Split(torch.arange(len(full)), full.targets), params.val_fraction, seed
        )
        return InMemoryDataset(
            train=fit,
            val=val,
            test=Split(decoded["test_inputs"], decoded["test_targets"]),
            info=info,
            mean=tuple(params.mean or stats["mean"]),
            std=tuple(params.std or stats["std"]),
            augment=batchwise,
            resize=params.resize,
            source=source,
            policy=policy,
            train_ids=fit_ids.inputs,
        )
    if given is None:
        picked = stats_sample(len(train))
        sample = LabelledImages(Subset(train.source, picked), train.targets[picked])
        # Streaming warns of a skipped image when it meets it; the statistics pass around it.
        sampled = _decode(sample, params, channels, size, "sampled", warn_skipped=False)
        stats = _channel_stats(sampled.inputs)
    else:
        stats = given
    positions = Split(torch.arange(len(train)), train.targets)
    fit_index, val_index = hold_out(positions, params.val_fraction, seed)
    return StreamingDataset(
        train_files=train,
        test_files=test,
        fit=fit_index.inputs,
        val=val_index.inputs,
        info=info,
        mean=tuple(params.mean or stats["mean"]),
        std=tuple(params.std or stats["std"]),
        channels=channels,
        size=size,
        resize=params.resize,
        augment=batchwise,
        crop=ResizedCrop() if params.augment == "random_resized_crop" else None,
        policy=policy,
        workers=params.worker_count(),
        skip_bad=params.skip_bad,
        seed=seed,
        source=source,
    )


class Subset:
    """Some images of a source, by index."""

    def __init__(self, source: Any, indices: list[int]) -> None:
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, index: int) -> str:
        return self.source.name(self.indices[index])

    def decode(self, index: int, channels: int) -> torch.Tensor:
        return self.source.decode(self.indices[index], channels)


def _choose_path(
    params: ImageParams, images: int, channels: int, size: tuple[int, int]
) -> tuple[bool, str]:
    """Whether to decode into memory, and the sentence that says why."""
    decoded = images * channels * size[0] * size[1]
    amount = f"{images:,} images, {size_text(decoded)} decoded"
    if params.in_memory is True:
        return True, f"in memory ({amount}; data.in_memory: true)"
    if params.in_memory is False:
        return False, f"streaming ({amount}; data.in_memory: false)"
    if params.augment == "random_resized_crop":
        return False, f"streaming ({amount}): random_resized_crop needs the full images"
    budget, why = memory_budget()
    if decoded <= budget:
        return True, f"in memory ({amount}, within the budget of {size_text(budget)}: {why})"
    return False, f"streaming ({amount}, over the budget of {size_text(budget)}: {why})"
