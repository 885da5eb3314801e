"""Image files to uint8 tensors: the one reader that training, eval and predict share.

A model only classifies new photos the way it classified its test set if both went
through the same pixels-to-tensor steps. Every image trainkit reads from a file, for an
image-folder dataset or for `trainkit predict`, comes from `read_image` with an
`ImageFormat`, and that format is stored in checkpoints and exports. JPEG, PNG, WebP and
GIF are decoded by torchvision's own decoders; other formats (BMP, TIFF, PPM) by Pillow.
Resizing happens on the uint8 tensor with antialiasing, so it is the same whichever
decoder ran.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainkit.errors import first_line

if TYPE_CHECKING:
    from torch import Tensor

# torchvision's ImageFolder list, which is what users' folders are made for.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_TORCHVISION_DECODES = (".jpg", ".jpeg", ".png", ".webp", ".gif")
_SOURCE_LOCATION = re.compile(r"^.*\.cpp:\d+,\s*")
# What torchvision's decoders (RuntimeError) and Pillow (OSError, ValueError, SyntaxError
# for a broken PNG, EOFError) raise for a file that is not a readable image.
_DECODER_ERRORS = (RuntimeError, OSError, ValueError, SyntaxError, EOFError)


class UnreadableImage(Exception):
    """A file that is not an image trainkit can decode; the message names it and why."""


@dataclass(frozen=True)
class ImageFormat:
    """How an image file becomes a model input.

    Decoded to `channels` (1 grey, 3 RGB), then either stretched to `size` (when `resize`
    is None) or resized so its shorter side is `resize` and centre-cropped to `size`
    (torchvision's evaluation transform for pretrained weights), then normalized with
    `mean` and `std` (per channel, 0..1 scale) on the device.
    """

    channels: int
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "size": list(self.size),
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageFormat:
        return cls(
            channels=int(data["channels"]),
            size=(int(data["size"][0]), int(data["size"][1])),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            resize=data.get("resize"),
        )


def load_decoders() -> None:
    """Import the decoders and resize now (importing torchvision takes seconds), so that
    this cost is not counted against the first images."""
    import torchvision.transforms.v2.functional  # noqa: F401

    _torchvision_decoder()


def read_image(
    path: Path | str, channels: int, size: tuple[int, int], resize: int | None
) -> Tensor:
    """One image file as a uint8 tensor (channels, *size); UnreadableImage if it is not one.

    The result is laid out channels-last in memory (see `resized`).
    """
    return fit_image(decode(Path(path), channels), size, resize)


def fit_image(image: Tensor, size: tuple[int, int], resize: int | None) -> Tensor:
    """A decoded uint8 image brought to `size`: stretched, or with `resize`, its shorter
    side resized to that and centre-cropped (see ImageFormat)."""
    from torchvision.transforms.v2 import functional as F

    if resize is None:  # at its size already, resizing gives the same pixels: skip it
        return image if tuple(image.shape[-2:]) == tuple(size) else resized(image, size)
    height, width = image.shape[-2:]
    # torchvision's rule for resizing the shorter side: the longer one is rounded down.
    if height <= width:
        shape = (resize, int(resize * width / height))
    else:
        shape = (int(resize * height / width), resize)
    return F.center_crop(resized(image, shape), list(size))


def resized(image: Tensor, size: tuple[int, int]) -> Tensor:
    """A uint8 (C, H, W) image resized to `size`, bilinear with antialiasing.

    These are the pixels of torchvision's `resize` (the same PyTorch kernel), computed
    on a channels-last copy, where PyTorch has a fast uint8 path: 0.2 instead of 0.6 ms
    for a 400x300 region to 224x224. The result keeps that layout; `stack` turns a list
    of such images into one channels-last batch without another copy.
    """
    import torch

    batch = image[None].contiguous(memory_format=torch.channels_last)
    return torch.nn.functional.interpolate(
        batch, size=size, mode="bilinear", antialias=True, align_corners=False
    )[0]


def stack(images: list[Tensor]) -> Tensor:
    """Images (C, H, W) of one size as a batch laid out channels-last: one copy."""
    import torch

    if not images:
        return torch.empty(0, dtype=torch.uint8)
    return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)


@functools.cache
def _torchvision_decoder() -> Any:
    """torchvision's `decode_image`, or None where it is gone.

    torchvision 0.29 deprecates its image decoders in favour of TorchCodec. They decode
    JPEG and PNG to the same pixels as Pillow, twice as fast (8,400 against 4,200 CIFAR
    JPEGs a second on one core here), so trainkit uses them while they exist, with their
    deprecation notice silenced, and Pillow once they do not.
    """
    try:
        from torchvision.io import decode_image
    except ImportError:
        return None
    return decode_image


def decode(path: Path, channels: int) -> Tensor:
    """One image file at its own size as uint8 (channels, H, W), upright per its EXIF.

    torchvision decodes the formats it reads; Pillow reads the others, and any file
    torchvision refuses (a BMP named .jpg, say). A file neither reads is an
    UnreadableImage that names the file, what it seems to be, and what trainkit reads.
    """
    failure: Exception | None = None
    decode_image = _torchvision_decoder()
    if decode_image is not None and path.suffix.lower() in _TORCHVISION_DECODES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # see _torchvision_decoder
                image = decode_image(
                    str(path), mode="RGB" if channels == 3 else "GRAY", apply_exif_orientation=True
                )
            return image[0] if image.dim() == 4 else image  # an animated GIF: its first frame
        except _DECODER_ERRORS as exc:
            failure = exc
    from PIL import Image, ImageOps
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(path) as opened:
            upright = ImageOps.exif_transpose(opened)
            return pil_to_tensor(upright.convert("RGB" if channels == 3 else "L"))
    except (*_DECODER_ERRORS, Image.DecompressionBombError) as exc:
        if failure is None or "Unsupported image file" in str(failure):
            failure = exc  # Pillow knows more formats: say what it found
        raise UnreadableImage(f"{path}: not a readable image ({_why(path, failure)})") from None


def decode_bytes(data: bytes, channels: int, name: str) -> Tensor:
    """An encoded image held in memory (a dataset's cell) as uint8 (channels, H, W),
    decoded as `decode` decodes files: torchvision's decoders, else Pillow."""
    import io

    import torch

    decode_image = _torchvision_decoder()
    failure: Exception | None = None
    if decode_image is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
                image = decode_image(
                    torch.frombuffer(bytearray(data), dtype=torch.uint8),
                    mode="RGB" if channels == 3 else "GRAY",
                    apply_exif_orientation=True,
                )
            return image[0] if image.dim() == 4 else image
        except _DECODER_ERRORS as exc:
            failure = exc
    from PIL import Image, ImageOps
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(io.BytesIO(data)) as opened:
            upright = ImageOps.exif_transpose(opened)
            return pil_to_tensor(upright.convert("RGB" if channels == 3 else "L"))
    except (*_DECODER_ERRORS, Image.DecompressionBombError) as exc:
        why = first_line(exc if failure is None else failure)
        raise UnreadableImage(f"{name}: not a readable image ({why})") from None


READABLE = "JPEG, PNG, WebP, GIF, BMP, TIFF, PPM and PGM"


def _why(path: Path, exc: Exception) -> str:
    """Why a file is not an image, in words: what it seems to be, or the decoder's reason
    (without torchvision's C++ file and line), and what trainkit reads."""
    try:
        head = path.read_bytes()[:512]
    except OSError as missing:
        return first_line(missing)
    if not head:
        seems = "an empty file"
    elif _is_text(head):
        seems = "a text file"
    else:
        seems = _SOURCE_LOCATION.sub("", first_line(exc, 10_000))[:200]
    return f"{seems}; trainkit reads {READABLE}"


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in head


class ImageSource(Protocol):
    """Where a split's images come from: files, a torchvision dataset, a Hugging Face
    one. Decoding is the source's; bringing an image to the model's size is shared."""

    def __len__(self) -> int: ...

    def name(self, index: int) -> str:
        """How a message names image `index` (its path, or the dataset and index)."""
        ...

    def decode(self, index: int, channels: int) -> Tensor:
        """Image `index` at its own size as uint8 (channels, H, W); UnreadableImage if
        it cannot be read."""
        ...


@dataclass(frozen=True)
class FileList:
    """Image files as an ImageSource."""

    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return self.paths[index]

    def decode(self, index: int, channels: int) -> Tensor:
        return decode(Path(self.paths[index]), channels)


class Images:
    """The images of a source at one format, as a map-style dataset for DataLoader
    workers. An image that cannot be read comes back as its error text, so one bad file
    is reported by its caller instead of ending a worker with a traceback."""

    def __init__(
        self, source: ImageSource, channels: int, size: tuple[int, int], resize: int | None
    ) -> None:
        self.source = source
        self.format = (channels, size, resize)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Tensor | str:
        channels, size, resize = self.format
        try:
            return fit_image(self.source.decode(index, channels), size, resize)
        except UnreadableImage as exc:
            return str(exc)

    @staticmethod
    def collate(batch: list[Tensor | str]) -> tuple[Tensor, list[int], list[str]]:
        """The readable images stacked, their positions in the batch, and the errors.

        One tensor per batch matters: a worker hands each tensor over as a shared-memory
        file descriptor, and one per image runs out of descriptors on a large folder.
        """
        images = [item for item in batch if not isinstance(item, str)]
        errors = [item for item in batch if isinstance(item, str)]
        good = [i for i, item in enumerate(batch) if not isinstance(item, str)]
        return stack(images), good, errors


def find_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively and following links (as ImageFolder does),
    in sorted order."""
    found = [
        Path(top) / name
        for top, _, names in os.walk(folder, followlinks=True)
        for name in names
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(found)
