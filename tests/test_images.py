"""The one image reader: every format to the same pixels, both resize modes, bad files named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainkit.data.images import UnreadableImage, find_images, read_image


@pytest.fixture
def pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # 30 rows, 40 columns


@pytest.mark.parametrize("ext", ["png", "bmp", "tiff", "webp"])
def test_lossless_formats_decode_to_the_saved_pixels(pixels, ext: str, tmp_path: Path) -> None:
    path = tmp_path / f"image.{ext}"
    Image.fromarray(pixels).save(path, **({"lossless": True} if ext == "webp" else {}))
    image = read_image(path, 3, (30, 40), resize=None)  # the size it has: no resampling
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    assert torch.equal(image, torch.from_numpy(pixels).permute(2, 0, 1))


def test_jpeg_decodes_like_pillow_and_greyscale_like_pillow(pixels, tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    with Image.open(path) as reference:
        rgb = torch.from_numpy(np.array(reference.convert("RGB"))).permute(2, 0, 1)
        luma = torch.from_numpy(np.array(reference.convert("L")))
    assert torch.equal(read_image(path, 3, (30, 40), None), rgb)
    grey = read_image(path, 1, (30, 40), None)
    assert grey.shape == (1, 30, 40)
    # The JPEG's own luma plane: Pillow's RGB-to-L conversion except where clamping the
    # RGB values (saturated noise) shifts a pixel by a few levels.
    difference = (grey[0].int() - luma.int()).abs()
    assert difference.float().mean() < 0.1 and difference.max() <= 8


def test_stretch_and_shorter_side_resize_then_centre_crop(tmp_path: Path) -> None:
    wide = np.zeros((20, 60, 3), dtype=np.uint8)
    wide[:, 20:40] = 255  # a white band in the middle third
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    stretched = read_image(path, 3, (10, 10), resize=None)
    assert stretched.shape == (3, 10, 10)
    assert stretched[:, :, 0].max() < 40 and stretched[:, :, 5].min() > 200  # band kept
    cropped = read_image(path, 3, (10, 10), resize=10)  # 20x60 -> 10x30, centre 10x10
    assert cropped.shape == (3, 10, 10)
    assert cropped.float().mean() > 240  # the crop is the white band alone


def test_a_bad_file_is_an_error_that_names_it(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    truncated = tmp_path / "cut.png"
    buffer = tmp_path / "whole.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buffer)
    truncated.write_bytes(buffer.read_bytes()[:30])
    for path in (tmp_path / "notes.jpg", truncated, tmp_path / "missing.png"):
        with pytest.raises(UnreadableImage) as caught:
            read_image(path, 3, (8, 8), None)
        message = str(caught.value)
        assert message.startswith(f"{path}: not a readable image")
        assert ".cpp" not in message  # no C++ source locations from the decoder
        assert ("trainkit reads JPEG, PNG, WebP, GIF, BMP, TIFF" in message) == path.exists()
        assert "decode_avif" not in message  # not torchvision's advice about other formats
    with pytest.raises(UnreadableImage, match="a text file"):
        read_image(tmp_path / "notes.jpg", 3, (8, 8), None)


def test_an_image_under_another_formats_name_is_read(tmp_path: Path) -> None:
    """A BMP saved as photo.jpg: torchvision refuses it, Pillow reads it."""
    pixels = np.zeros((6, 9, 3), dtype=np.uint8)
    pixels[:, :, 0] = 200
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", format="BMP")
    image = read_image(tmp_path / "photo.jpg", 3, (6, 9), None)
    assert image.shape == (3, 6, 9) and int(image[0].min()) == 200


def test_find_images_walks_folders_in_sorted_order(tmp_path: Path) -> None:
    for name in ("b/2.png", "a/1.JPG", "a/sub/3.webp", "a/readme.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/1.JPG", "a/sub/3.webp", "b/2.png"]
