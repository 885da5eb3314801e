"""The streaming image path: throughput, memory, and epoch time against the alternatives.

    python benchmarks/streaming.py [--images 2000] [--workers 2] [--cifar-root CIFAR_JPG]

1. Throughput. A folder of photo-sized JPEGs (500x375, generated here) is read for the
   ImageNet training recipe (random-resized crop to 224, flip, normalize, to the device)
   by trainkit's streaming batches and by torchvision's tutorial pipeline (ImageFolder,
   PIL transforms, DataLoader) with the same workers and batch size; they alternate, and
   the medians of images per second are compared. Target: trainkit at least 1.5x.
2. Memory. `trainkit train` streams a folder of N and of 4N images for one epoch; the
   peak of the proportional set size (PSS) summed over the process and its DataLoader
   workers is sampled every 50 ms. Target: the 4N run within 10% of the N run.
3. With --cifar-root (CIFAR-10 stored as an image folder of JPEGs): one LeNet epoch on
   it, streamed and in memory, epoch times from metrics.jsonl.

Every target is printed as met or MISSED; the exit code is 1 if any is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

CLASSES = 10
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_photos(root: Path, per_split: dict[str, int], size: tuple[int, int], seed: int) -> Path:
    """JPEGs with photo-like content (smooth colour fields, edges and grain), in classes."""
    rng = np.random.default_rng(seed)
    width, height = size
    for split, count in per_split.items():
        for i in range(count):
            folder = root / split / f"class{i % CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
            grain = rng.normal(0, 12, (height, width, 3))
            pixels = np.clip(field + grain, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def trainkit_loader(
    root: Path, workers: int, batch: int, source: dict | None = None, **recipe: object
):
    """trainkit's streaming training batches for the ImageNet recipe (or with the data
    keys in `recipe` changed), as `trainkit train` builds them; `source` names another
    dataset than the image folder at `root`."""
    from trainkit.config.registry import DATASETS
    from trainkit.config.schema import validate
    from trainkit.console import quiet_output
    from trainkit.data.batching import BatchOptions, BatchTransform, augmentation

    config = validate(
        {
            "name": "bench",
            "model": {"name": "mlp"},
            "data": {
                **(source or {"name": "image_folder", "root": str(root)}),
                "image_size": 224,
                "augment": "random_resized_crop",
                "in_memory": False,
                "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD),
                "workers": workers,
                "batch_size": batch,
                **recipe,
            },
            "optimizer": {"name": "sgd"},
        }
    )
    with quiet_output(True):
        data = DATASETS.build(config.data, 0)
    device = torch.device("cpu")
    transform = BatchTransform(
        device, mean=data.mean, std=data.std, augment=augmentation(data), channels_last=True
    )
    batches = data.batches("train", BatchOptions(device, batch, transform))
    return lambda epoch: (images for images, _ in batches.epoch(epoch))


def tutorial_loader(root: Path, workers: int, batch: int, steps: list | None = None):
    """The pipeline of torchvision's ImageNet example and tutorials (or its `steps`)."""
    from torchvision import datasets, transforms

    steps = steps or [
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    dataset = datasets.ImageFolder(str(root / "train"), transforms.Compose(steps))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    return lambda epoch: (
        images.contiguous(memory_format=torch.channels_last) for images, _ in loader
    )


def images_per_second(epochs, epoch: int) -> float:
    count, start = 0, time.perf_counter()
    for images in epochs(epoch):
        count += len(images)
    return count / (time.perf_counter() - start)


def alternating_rates(pipelines: dict, repeats: int) -> dict[str, list[float]]:
    """Images per second of each pipeline over `repeats` epochs, the pipelines taking
    turns to go first; epoch 0 warms up workers and the page cache and is not counted."""
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for epoch in range(repeats + 1):
        order = list(pipelines) if epoch % 2 else list(reversed(pipelines))
        for name in order:
            rate = images_per_second(pipelines[name], epoch)
            if epoch:
                rates[name].append(rate)
    return rates


def throughput(args: argparse.Namespace, scratch: Path) -> list[tuple[str, bool]]:
    root = write_photos(scratch / "photos", {"train": args.images, "test": 20}, (500, 375), 0)
    pipelines = {
        "trainkit": trainkit_loader(root, args.workers, args.batch),
        "tutorial": tutorial_loader(root, args.workers, args.batch),
    }
    rates = alternating_rates(pipelines, args.repeats)
    ours, theirs = (statistics.median(rates[n]) for n in ("trainkit", "tutorial"))
    print(
        f"throughput, {args.images} JPEGs of 500x375, random-resized crop to 224, "
        f"{args.workers} workers, batch {args.batch}:"
    )
    for name in pipelines:
        shown = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(f"  {name:9} {statistics.median(rates[name]):7,.0f} images/s (runs: {shown})")
    print(f"  ratio {ours / theirs:.2f}x")
    return [("streaming at least 1.5x the tutorial pipeline", ours / theirs >= 1.5)]


def peak_pss_mib(command: list[str], cwd: Path) -> tuple[float, str]:
    """Run `command`; the peak of the PSS summed over it and its descendants, in MiB."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    while process.poll() is None:
        peak = max(peak, sum(_pss(pid) for pid in _tree(process.pid)))
        time.sleep(0.05)
    output = process.stdout.read().decode() if process.stdout else ""
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return peak / 1024, output


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):  # a thread or process that just ended
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(args: argparse.Namespace, scratch: Path) -> list[tuple[str, bool]]:
    peaks = {}
    for scale in (1, 4):
        n = args.images * scale
        root = write_photos(scratch / f"x{scale}", {"train": n, "test": n // 10}, (160, 120), scale)
        config = scratch / f"x{scale}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "name": f"x{scale}",
                    "model": {"name": "lenet"},
                    "data": {
                        "name": "image_folder",
                        "root": str(root),
                        "image_size": 64,
                        "resize": 72,
                        "augment": "random_resized_crop",
                        "in_memory": False,
                        "workers": args.workers,
                        "batch_size": 64,
                    },
                    "optimizer": {"name": "sgd", "lr": 0.05},
                    "trainer": {"epochs": 1, "device": "cpu"},
                    "logging": {"tensorboard": False},
                }
            )
        )
        command = [
            sys.executable,
            "-m",
            "trainkit",
            "train",
            str(config),
            "--run-dir",
            str(scratch / f"run{scale}"),
        ]
        peaks[scale], _ = peak_pss_mib(command, scratch)
    ratio = peaks[4] / peaks[1]
    print(f"memory, streaming LeNet for one epoch ({args.workers} workers), peak PSS:")
    for scale, peak in peaks.items():
        print(f"  {scale * args.images:6,} images: {peak:.0f} MiB")
    print(f"  ratio {ratio:.3f}")
    return [("4x the images within 10% of the memory", ratio <= 1.10)]


def epoch_times(args: argparse.Namespace, scratch: Path) -> list[tuple[str, bool]]:
    times = {}
    for mode in (True, False):
        config = scratch / "cifar.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "name": "cifar_stream",
                    "model": {"name": "lenet"},
                    "data": {
                        "name": "image_folder",
                        "root": str(args.cifar_root),
                        "image_size": 32,
                        "augment": True,
                        "in_memory": mode,
                        "workers": args.workers,
                        "batch_size": 128,
                        "eval_batch_size": 1000,
                    },
                    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                    "trainer": {"epochs": 2, "device": "cpu", "test_at_end": False},
                    "logging": {"tensorboard": False},
                }
            )
        )
        run = scratch / f"cifar-{mode}"
        subprocess.run(
            [sys.executable, "-m", "trainkit", "train", str(config), "--run-dir", str(run), "-q"],
            check=True,
        )
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        times[mode] = [r["epoch_time"] for r in records if "epoch_time" in r]
    print("CIFAR-10 JPEG folder, LeNet, batch 128, crop-and-flip, epoch times (2 epochs):")
    print(f"  in memory: {', '.join(f'{t:.2f} s' for t in times[True])}")
    print(f"  streamed:  {', '.join(f'{t:.2f} s' for t in times[False])}")
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="training images per folder")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cifar-root", type=Path, help="CIFAR-10 as an image folder of JPEGs")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        results += throughput(args, Path(scratch))
        results += memory(args, Path(scratch))
        if args.cifar_root:
            results += epoch_times(args, Path(scratch))
    for name, met in results:
        print(f"{'met   ' if met else 'MISSED'} {name}")
    return 0 if all(met for _, met in results) else 1


if __name__ == "__main__":
    sys.exit(main())
