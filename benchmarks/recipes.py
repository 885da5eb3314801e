"""The recipe options measured on a CPU: accuracy, policy throughput, cifar_fast's speed.

    python benchmarks/recipes.py --cifar-root CIFAR_JPG [--epochs 4] [--workers 2]
    python benchmarks/recipes.py --cifar-root CIFAR_JPG --only accuracy --device cuda \
        --epochs 16 --widths 64 128 256 512          # the full network, on a GPU

CIFAR_JPG is CIFAR-10 as an image folder of JPEGs (train/<class>/*.jpg, test/...).

1. Accuracy. A small cifar_fast (widths 16, 32, 64, 128) trains a short one-cycle
   schedule on the whole training split, once plainly and once with each of: a weight
   average (trainer.ema), TrivialAugment (data.augment), mixup and cutmix. The table of
   test accuracies is printed as it comes out; there is no target.
2. Policy throughput. The training images are read with TrivialAugment by trainkit's
   streaming batches and by the pipeline of torchvision's tutorials (ImageFolder, PIL,
   RandomCrop with padding 4, flip, TrivialAugmentWide, ToTensor, Normalize, a
   DataLoader), same workers and batch size, alternating; medians of images per second.
   Target: trainkit at least 1.5x. Then the policy's cost per image on batches already in
   memory, as the in-memory path pays it.
3. cifar_fast and cifar_resnet (ResNet34): seconds per training batch of 256 on this
   machine (the median of 3 batches after 1 of warm-up), and the epoch time that makes.

Every target is printed as met or MISSED; the exit code is 1 if any is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from streaming import alternating_rates, trainkit_loader, tutorial_loader

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
VARIANTS = {
    "plain": {},
    "trainer.ema decay 0.99": {"trainer": {"ema": {"decay": 0.99}}},
    "data.augment trivialaugment": {"data": {"augment": "trivialaugment"}},
    "data.mixup 0.2, cutmix 1.0": {"data": {"mixup": 0.2, "cutmix": 1.0}},
}


def small_recipe(
    root: Path, epochs: int, workers: int, device: str = "cpu", widths: list[int] | None = None
) -> dict:
    return {
        "name": "recipe",
        "model": {"name": "cifar_fast", "widths": widths or [16, 32, 64, 128]},
        "data": {
            "name": "image_folder",
            "root": str(root),
            "image_size": 32,
            "augment": "crop_flip",
            "batch_size": 256,
            "eval_batch_size": 1000,
            "in_memory": True,
            "workers": workers,
            "mean": list(CIFAR_MEAN),
            "std": list(CIFAR_STD),
        },
        "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9, "nesterov": True,
                      "weight_decay": 5e-4, "decay_biases_and_norms": False},
        "scheduler": {"name": "onecycle", "pct_start": 0.25},
        "trainer": {"epochs": epochs, "device": device},
        "checkpoint": {"monitor": "val/accuracy"},
        "logging": {"tensorboard": False, "log_every_steps": 50},
    }  # fmt: skip


def accuracy(args: argparse.Namespace, scratch: Path) -> list[tuple[str, bool]]:
    print(f"accuracy, cifar_fast {args.widths}, {args.epochs} epochs, batch 256, {args.device}:")
    print("| recipe | test accuracy | best val accuracy | minutes |")
    print("| --- | --- | --- | --- |")
    for label, change in VARIANTS.items():
        if args.variants and label.split()[0].split(".")[-1] not in args.variants:
            continue
        raw = small_recipe(args.cifar_root, args.epochs, args.workers, args.device, args.widths)
        for section, values in change.items():
            raw[section] = {**raw[section], **values}
        config = scratch / "recipe.yaml"
        config.write_text(yaml.safe_dump(raw))
        run = scratch / label.replace(" ", "_").replace(",", "")
        start = time.perf_counter()
        command = [
            sys.executable,
            "-m",
            "trainkit",
            "train",
            str(config),
            "--run-dir",
            str(run),
            "-q",
        ]
        subprocess.run(command, check=True)
        minutes = (time.perf_counter() - start) / 60
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        test = next(r["test/accuracy"] for r in records if "test/accuracy" in r)
        best = max(r["val/accuracy"] for r in records if "val/accuracy" in r)
        print(f"| {label} | {test:.4f} | {best:.4f} | {minutes:.1f} |", flush=True)
    return []


def trainkit_policy_loader(root: Path, workers: int, batch: int):
    """trainkit's streamed batches of 32-pixel images with TrivialAugment."""
    return trainkit_loader(
        root, workers, batch, image_size=32, augment="trivialaugment",
        mean=list(CIFAR_MEAN), std=list(CIFAR_STD),
    )  # fmt: skip


def tutorial_policy_loader(root: Path, workers: int, batch: int):
    """The tutorials' pipeline with the same policy, after their CIFAR crop and flip."""
    from torchvision import transforms

    steps = [
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.TrivialAugmentWide(),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
    ]
    return tutorial_loader(root, workers, batch, steps)


def policy_throughput(args: argparse.Namespace) -> list[tuple[str, bool]]:
    pipelines = {
        "trainkit": trainkit_policy_loader(args.cifar_root, args.workers, 256),
        "tutorial": tutorial_policy_loader(args.cifar_root, args.workers, 256),
    }
    rates = alternating_rates(pipelines, args.repeats)
    ours, theirs = (statistics.median(rates[n]) for n in ("trainkit", "tutorial"))
    print(f"TrivialAugment, streamed CIFAR-10 JPEGs, {args.workers} workers, batch 256:")
    for name in pipelines:
        shown = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(f"  {name:9} {statistics.median(rates[name]):7,.0f} images/s (runs: {shown})")
    print(f"  ratio {ours / theirs:.2f}x", flush=True)
    print(f"  in memory: {policy_in_memory(args.cifar_root):.0f} µs an image", flush=True)
    return [("policy streaming at least 1.5x the tutorial pipeline", ours / theirs >= 1.5)]


def policy_in_memory(root: Path, batches: int = 8) -> float:
    """Microseconds per image of TrivialAugment on decoded batches of 256, as the
    in-memory path runs it in the training process (the median of `batches`)."""
    from trainkit.data.images import read_image
    from trainkit.data.policies import SamplePolicy

    files = sorted((root / "train").glob("*/*"))  # every class: a spread of the folder
    files = files[:: max(1, len(files) // (256 * batches))][: 256 * batches]
    images = torch.stack([read_image(file, 3, (32, 32), None) for file in files])
    policy, times = SamplePolicy("trivialaugment", seed=0), []
    for b, batch in enumerate(images.split(256)):
        start = time.perf_counter()
        policy.batch(batch, 1, list(range(b * 256, b * 256 + len(batch))))
        times.append((time.perf_counter() - start) / len(batch))
    return statistics.median(times) * 1e6


def network_speed(args: argparse.Namespace) -> list[tuple[str, bool]]:
    from trainkit.config.registry import MODELS
    from trainkit.config.schema import validate

    print("seconds per training batch of 256 (3x32x32, SGD, fp32, channels_last, CPU):")
    for name in ("cifar_fast", "resnet34"):
        config = validate(
            {"name": "x", "model": {"name": name}, "data": {"name": "synthetic_logistic"},
             "optimizer": {"name": "sgd"}}
        )  # fmt: skip
        model = MODELS.build(config.model, (3, 32, 32), 10).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        images = torch.randn(256, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (256,))
        times = []
        for step in range(4):
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step >= 1:
                times.append(time.perf_counter() - start)
        per_batch = statistics.median(times)
        print(f"  {name:11} {per_batch:6.2f} s a batch, {per_batch * 45000 / 256 / 60:5.1f} min "
              "an epoch of 45,000", flush=True)  # fmt: skip
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar-root", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["accuracy", "throughput", "speed"], default=None)
    parser.add_argument("--device", default="cpu", help="Where the accuracy runs train.")
    parser.add_argument(
        "--widths", type=int, nargs=4, default=[16, 32, 64, 128], help="cifar_fast's widths."
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        choices=["plain", "ema", "augment", "mixup"],
        help="The accuracy runs to make (default: all four).",
    )
    args = parser.parse_args()
    results: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory() as scratch:
        if args.only in (None, "throughput"):
            results += policy_throughput(args)
        if args.only in (None, "speed"):
            results += network_speed(args)
        if args.only in (None, "accuracy"):
            results += accuracy(args, Path(scratch))
    for what, met in results:
        print(f"{'met' if met else 'MISSED'}: {what}")
    return 0 if all(met for _, met in results) else 1


if __name__ == "__main__":
    sys.exit(main())
