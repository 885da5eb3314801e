"""A user's own images: `root/train/<class>/*` and `root/test/<class>/*`.

The files are listed (sorted by class, then path) with torchvision's folder rules, and
from there the folder is an image dataset like any other (`data.image_data`): decoded
into memory and cached, or streamed. The cache key covers the image format and every
file's path, size and modification time, so changed data is never served stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from trainkit.config.registry import register_dataset
from trainkit.console import print_status
from trainkit.data.image_data import (
    CACHE_VERSION,
    ImageParams,
    cache_folder,
    fingerprint,
    image_dataset,
)
from trainkit.data.images import IMAGE_EXTENSIONS, FileList
from trainkit.errors import UserError

if TYPE_CHECKING:
    from trainkit.data.dataset import Dataset
    from trainkit.data.streaming import LabelledImages


class ImageFolderParams(ImageParams):
    root: str = Field(description="Folder with train/ and test/, each with a folder per class.")
    channels: Literal[1, 3] = Field(3, description="3: decode as RGB; 1: as greyscale.")

    @model_validator(mode="after")
    def _consistent(self) -> ImageFolderParams:
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and len(values) != self.channels:
                raise ValueError(f"{key} needs {self.channels} values, one per channel")
        return self

    @property
    def size(self) -> tuple[int, int]:
        from trainkit.data.image_data import DEFAULT_SIZE

        side = self.image_size or DEFAULT_SIZE
        return side, side


def _list(folder: Path) -> tuple[LabelledImages, list[str]]:
    """The image files of one split, sorted by class then path, and the class names."""
    import torch
    from torchvision.datasets.folder import find_classes, make_dataset

    from trainkit.data.streaming import LabelledImages

    try:
        classes, class_to_index = find_classes(folder)
        samples = make_dataset(folder, class_to_index, extensions=IMAGE_EXTENSIONS)
    except (FileNotFoundError, OSError) as exc:
        raise UserError(
            f"data: cannot read images under {folder} ({exc}). It must hold one sub-folder "
            "per class with image files inside (PNG, JPEG, ...)."
        ) from None
    targets = torch.tensor([target for _, target in samples], dtype=torch.long)
    return LabelledImages(FileList([path for path, _ in samples]), targets), classes


def _fingerprint(root: Path, params: ImageFolderParams) -> str:
    """The cache key: the folder, the image format and every file's name, size and time
    (one cache folder serves every dataset, so the folder itself is part of the key)."""
    key = f"{CACHE_VERSION} root={root.resolve()} size={params.size[0]} resize={params.resize}"
    key += f" channels={params.channels} skip_bad={params.skip_bad}"
    return fingerprint(key, root, [root / "train", root / "test"])


@register_dataset("image_folder", ImageFolderParams)
def image_folder(params: ImageFolderParams, seed: int) -> Dataset:
    """Your own images in class folders: in memory (decoded once, cached) or streamed."""
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
        f"found {len(train):,} training and {len(test):,} test images in {len(classes)} classes"
    )

    def cache() -> Path:
        return cache_folder(params, "image_folder") / f"{root.name}-{_fingerprint(root, params)}.pt"

    return image_dataset(
        params,
        seed,
        train=train,
        test=test,
        classes=tuple(classes),
        channels=params.channels,
        size=params.size,
        cache=cache,
    )
