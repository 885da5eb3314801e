"""Rerun the table of Nielsen's book: every config in configs/nielsen/, trained with
`trainkit train`, then its best.pt (the epoch of best validation accuracy) scored on
the test split with `trainkit eval`. Prints the README's table.

    python benchmarks/nielsen.py --mnist-root DIR [--parallel 2] [--only ch1_mlp30 ...]

DIR/MNIST/raw/ holds the four IDX files. `--parallel` runs that many configs at a time,
each its own process with an equal share of the cores (longest first); each row's time
is its own `trainkit train` command, the total is the wall time of the whole table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "nielsen"

# (config, chapter, the book's network and settings, the book's test accuracy in %)
ROWS = [
    ("ch1_mlp30", 1, "[784, 30, 10], sigmoid, quadratic cost, η=3.0, mini-batch 10", 95.42),
    ("ch1_mlp100", 1, "[784, 100, 10], same", 96.59),
    ("ch3_mlp30", 3, "[784, 30, 10], cross-entropy, η=0.5, mini-batch 10", 95.49),
    ("ch3_mlp100_l2", 3, "[784, 100, 10], cross-entropy, λ=5.0 L2, η=0.5", 97.92),
    ("ch6_conv1_sigmoid", 6, "conv 20x5x5 + 2x2 max-pool, FC 100, softmax; sigmoid", 98.78),
    ("ch6_conv2_sigmoid", 6, "+ second conv-pool 40x5x5", 99.06),
    ("ch6_conv2_relu", 6, "ReLU throughout, λ=0.1", 99.23),
    ("ch6_conv2_relu_expanded", 6, "+ training data expanded by shifts", 99.37),
    ("ch6_conv2_dropout", 6, "two FC-1000 ReLU layers, dropout 0.5, expanded data", 99.60),
]
# Roughly the minutes each row takes on one core, to start the longest first.
COST = {
    "ch6_conv2_dropout": 40,
    "ch6_conv2_relu_expanded": 8,
    "ch6_conv2_relu": 7,
    "ch6_conv2_sigmoid": 7,
    "ch6_conv1_sigmoid": 4,
    "ch3_mlp100_l2": 3,
}


def run(args: list[str], threads: int, log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with log.open("ab") as out:
        command = [sys.executable, "-m", "trainkit", *args]
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, env=env)


def row(name: str, root: Path, work: Path, threads: int) -> tuple[float, float, int]:
    """Train one config and score its best.pt: (test accuracy %, seconds, best epoch)."""
    run_dir, log = work / name, work / f"{name}.log"
    overrides = ["--set", f"data.root={root}", "--set", "data.download=false"]
    began = time.perf_counter()
    config = str(CONFIGS / f"{name}.yaml")
    run(["train", config, "--run-dir", str(run_dir), *overrides], threads, log)
    seconds = time.perf_counter() - began
    scores = work / f"{name}.json"
    run(["eval", "--ckpt", str(run_dir / "best.pt"), "--out", str(scores)], threads, log)
    result = json.loads(scores.read_text())
    return 100 * float(result["accuracy"]), seconds, int(result["epoch"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-root", type=Path, required=True)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="Config names to run (default: all).")
    parser.add_argument("--work", type=Path, help="Folder for the runs (default: a temp one).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="nielsen_"))
    work.mkdir(parents=True, exist_ok=True)
    root = args.mnist_root.resolve()
    rows = [r for r in ROWS if not args.only or r[0] in args.only]
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    print(f"runs and logs: {work}", flush=True)
    began = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        ordered = sorted(rows, key=lambda r: -COST.get(r[0], 1))
        futures = {r[0]: pool.submit(row, r[0], root, work, threads) for r in ordered}
        results = {name: future.result() for name, future in futures.items()}
    total = time.perf_counter() - began
    print("| chapter | network and settings (as in the book) | book | trainkit | config | time |")
    print("|---|---|---|---|---|---|")
    for name, chapter, what, book in rows:
        accuracy, seconds, epoch = results[name]
        print(
            f"| {chapter} | {what} | {book:.2f}% | {accuracy:.2f}% (epoch {epoch}) "
            f"| `{name}.yaml` | {seconds / 60:.1f} min |"
        )
    print(f"whole table: {total / 60:.1f} min on {os.cpu_count()} cores, {args.parallel} at a time")


if __name__ == "__main__":
    main()
