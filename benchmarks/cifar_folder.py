"""Write CIFAR-10 as an image folder of JPEGs: OUT/train/<class>/NNNNN.jpg and OUT/test/...

    python benchmarks/cifar_folder.py DATA_ROOT OUT [--quality 95]

DATA_ROOT holds torchvision's CIFAR-10 files (DATA_ROOT/cifar-10-batches-py/, e.g. from
`trainkit train configs/cifar_lenet.yaml` with download: true, or the unpacked
cifar-10-python.tar.gz). The image-folder figures in the README were measured on such a
JPEG copy; JPEG costs a little accuracy against the original pixels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image
from torchvision.datasets import CIFAR10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--quality", type=int, default=95)
    args = parser.parse_args()
    for split, train in (("train", True), ("test", False)):
        dataset = CIFAR10(str(args.data_root), train=train, download=False)
        for index, (pixels, label) in enumerate(zip(dataset.data, dataset.targets, strict=True)):
            folder = args.out / split / dataset.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{index:05d}.jpg", quality=args.quality)
        print(f"{split}: {len(dataset)} images under {args.out / split}")


if __name__ == "__main__":
    main()
