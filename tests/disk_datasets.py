"""Writers of small datasets in the real on-disk formats that torchvision reads.

Each class gets its own bright stripe, so the sets are learnable as well as readable.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def striped_images(n: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, C, H, W) of noise with a bright row band at a class-given height."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, channels, size, size), dtype=np.uint8)
    band = size // 10
    for i, label in enumerate(labels):
        images[i, :, label * band : (label + 1) * band, :] = 255
    return images, labels


def write_mnist(root: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> Path:
    """root/MNIST/raw/ with the four uncompressed IDX files."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = striped_images(n, 1, 28, seed + offset)
        header = struct.pack(">IIII", 0x00000803, n, 28, 28)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images[:, 0].tobytes())
        label_header = struct.pack(">II", 0x00000801, n)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            label_header + labels.astype(np.uint8).tobytes()
        )
    return root


CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 40, seed: int = 0) -> Path:
    """root/cifar-10-batches-py/ with five train batches, the test batch and the meta file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        images, labels = striped_images(n, 3, 32, seed + i)
        batch = {"data": images.reshape(n, -1), "labels": labels.tolist(), "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_CLASSES}))
    return root


def write_image_folder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "owl"), per_class: int = 6, size: int = 20
) -> Path:
    """root/{train,test}/<class>/<n>.png (train) and .jpg (test) images of different sizes."""
    rng = np.random.default_rng(0)
    for split, ext in (("train", "png"), ("test", "jpg")):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(per_class):
                pixels = rng.integers(0, 80, (size + n, size, 3), dtype=np.uint8)
                pixels[:, index * 4 : index * 4 + 4] = 255
                Image.fromarray(pixels).save(folder / f"{n}.{ext}")
    return root


def write_fashion_mnist(root: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> Path:
    """root/FashionMNIST/raw/ with the four IDX files (MNIST's format, its own folder)."""
    write_mnist(root / "staging", n_train, n_test, seed)
    (root / "FashionMNIST").mkdir(parents=True, exist_ok=True)
    (root / "staging" / "MNIST" / "raw").rename(root / "FashionMNIST" / "raw")
    (root / "staging" / "MNIST").rmdir()
    (root / "staging").rmdir()
    return root


CIFAR100_CLASSES = [f"kind{i:02d}" for i in range(100)]


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 60, seed: int = 0) -> Path:
    """root/cifar-100-python/ with the train and test pickles (fine and coarse labels) and
    the meta file; the labels are the stripe's class, so only 10 of 100 are used."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, offset in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = striped_images(n, 3, 32, seed + offset)
        entry = {
            "data": images.reshape(n, -1),
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {"fine_label_names": CIFAR100_CLASSES, "coarse_label_names": CIFAR100_CLASSES[:20]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return root


def write_svhn(root: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> Path:
    """root/{train,test}_32x32.mat as SVHN ships them: X is (32, 32, 3, N), y is (N, 1)
    with the digit 0 labelled 10."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for name, n, offset in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = striped_images(n, 3, 32, seed + offset)
        y = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]
        savemat(root / f"{name}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": y})
    return root


EUROSAT_CLASSES = ["AnnualCrop", "Forest", "River"]


def write_eurosat(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """root/eurosat/2750/<class>/*.jpg: EuroSAT's one split, 64x64 JPEGs."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(EUROSAT_CLASSES):
        folder = root / "eurosat" / "2750" / name
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            pixels = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
            pixels[index * 20 : index * 20 + 20] = 255
            Image.fromarray(pixels).save(folder / f"{name}_{n}.jpg", quality=95)
    return root
