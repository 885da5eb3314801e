"""What tracking a run costs: epochs of mnist_mlp with and without MLflow and W&B.

    python benchmarks/tracking.py --mnist-root DIR [--epochs 6] [--repeats 3]

`trainkit train configs/mnist_mlp.yaml` runs with its default log_every_steps plainly,
with `logging.mlflow` on a SQLite store and with `logging.wandb` offline, in turn,
--repeats times. An epoch's time is the time between two "epoch N/M done" lines as they
reach this process, so it includes everything a run does between them: training,
evaluation, the checkpoint and the sending of the epoch's records. The first epoch
(start-up, imports) is left out. Target: epochs with a tracker at most 3% longer
(median). The exit code is 1 if it is missed.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def epoch_times(command: list[str]) -> list[float]:
    """Seconds between consecutive 'epoch N/M done' lines of `command`'s output."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    ends = []
    for line in process.stdout:
        if line.startswith("epoch ") and " done " in line:
            ends.append(time.perf_counter())
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-3000:]}")
    return [b - a for a, b in itertools.pairwise(ends)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-root", required=True, help="DIR/MNIST/raw/ holds the IDX files")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"plain": [], "mlflow": [], "wandb": []}
    with tempfile.TemporaryDirectory() as scratch:
        base = [
            sys.executable, "-m", "trainkit", "train", str(ROOT / "configs" / "mnist_mlp.yaml"),
            "--set", f"data.root={args.mnist_root}", "--set", "data.download=false",
            "--set", f"trainer.epochs={args.epochs}", "--set", "trainer.device=cpu",
        ]  # fmt: skip
        switches = {
            "plain": [],
            "mlflow": ["--set", f"logging.mlflow.tracking_uri=sqlite:///{scratch}/mlflow.db"],
            "wandb": ["--set", "logging.wandb.mode=offline"],
        }
        for repeat in range(args.repeats):
            names = list(switches)[repeat % 3 :] + list(switches)[: repeat % 3]  # rotated
            for name in names:
                run_dir = Path(scratch) / f"{name}-{repeat}"
                times[name] += epoch_times([*base, *switches[name], "--run-dir", str(run_dir)])
    print(f"mnist_mlp, {args.epochs} epochs x {args.repeats} runs each, epochs 2 onwards:")
    for name, measured in times.items():
        listed = ", ".join(f"{t:.2f}" for t in measured)
        median = statistics.median(measured)
        print(f"  {name:6} median epoch {median:.3f} s (of {len(measured)}: {listed})")
    plain, met = statistics.median(times["plain"]), True
    for name in ("mlflow", "wandb"):
        ratio = statistics.median(times[name]) / plain
        met = met and ratio <= 1.03
        print(
            f"  {name} / plain: {ratio:.3f} (target <= 1.03) {'met' if ratio <= 1.03 else 'MISSED'}"
        )
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
