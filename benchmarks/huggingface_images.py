"""Hugging Face image datasets: trainkit's streamed batches against the datasets tutorial.

    python benchmarks/huggingface_images.py [--images 2000] [--workers 2] [--repeats 3]

A Hugging Face dataset of photo-sized JPEGs (500x375, generated as in
benchmarks/streaming.py, stored as bytes in the dataset, as Hub datasets store them) is
written with save_to_disk. Its training split is read for the ImageNet training recipe
(random-resized crop to 224, flip, normalize) by trainkit's streaming batches and by the
pipeline of the datasets library's image tutorial: `set_transform` with torchvision
transforms on the decoded PIL images, and a DataLoader, with the same workers and batch
size. They alternate, and the medians of images per second are compared.
Target: trainkit at least 1.5x. The exit code is 1 if it is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import streaming
from streaming import IMAGENET_MEAN, IMAGENET_STD, alternating_rates, write_photos


def write_dataset(folder: Path, images: int) -> Path:
    import datasets

    photos = write_photos(folder / "photos", {"train": images}, (500, 375), 0)
    files = sorted((photos / "train").rglob("*.jpg"))
    names = sorted({f.parent.name for f in files})
    split = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": f.read_bytes(), "path": None} for f in files],
            "label": [names.index(f.parent.name) for f in files],
        },
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
        ),
    )
    datasets.DatasetDict({"train": split, "test": split.select(range(20))}).save_to_disk(
        folder / "saved"
    )
    return folder / "saved"


def trainkit_loader(path: Path, workers: int, batch: int):
    """trainkit's streaming training batches of the saved dataset."""
    return streaming.trainkit_loader(
        path, workers, batch, {"name": "huggingface", "path": str(path)}
    )


def _stack(examples: list[dict]) -> torch.Tensor:
    return torch.stack([example["pixel_values"] for example in examples])


def tutorial_loader(path: Path, workers: int, batch: int):
    """The datasets library's image tutorial: set_transform with torchvision transforms."""
    import datasets
    from torchvision import transforms

    augment = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )

    def transform(examples: dict) -> dict:
        examples["pixel_values"] = [augment(image.convert("RGB")) for image in examples["image"]]
        return examples

    split = datasets.load_from_disk(str(path))["train"]
    split.set_transform(transform)
    loader = torch.utils.data.DataLoader(
        split,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=_stack,
        persistent_workers=workers > 0,
    )
    return lambda epoch: (images.contiguous(memory_format=torch.channels_last) for images in loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as scratch:
        path = write_dataset(Path(scratch), args.images)
        pipelines = {
            "trainkit": trainkit_loader(path, args.workers, args.batch),
            "tutorial": tutorial_loader(path, args.workers, args.batch),
        }
        rates = alternating_rates(pipelines, args.repeats)
    ours, theirs = (statistics.median(rates[n]) for n in ("trainkit", "tutorial"))
    print(
        f"Hugging Face dataset of {args.images} JPEGs of 500x375, random-resized crop to 224, "
        f"{args.workers} workers, batch {args.batch}:"
    )
    for name in pipelines:
        shown = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(f"  {name:9} {statistics.median(rates[name]):7,.0f} images/s (runs: {shown})")
    met = ours / theirs >= 1.5
    print(f"  ratio {ours / theirs:.2f}x (target >= 1.5x) {'met' if met else 'MISSED'}")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
