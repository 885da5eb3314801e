"""sweeps/mlp_search.yaml (20 trials of configs/mnist_mlp.yaml) on real MNIST, against the
shipped config: the figures of the README's sweep section.

    python benchmarks/sweep_mnist.py --mnist-root DIR [--trials 20] [--parallel 2]

DIR/MNIST/raw/ holds the four IDX files. The sweep searches the learning rate, the hidden
size and the weight decay; every trial trains the shipped recipe's 3 epochs. It runs on
a copy of the sweep file (for --trials and --parallel), with --set pointing every
trial's data at DIR, as a user without network would run it. Printed:
the sweep's wall time, how many trials were pruned, and the test accuracy of the best
trial's best.pt next to that of the shipped config trained once.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG, SWEEP = REPO / "configs" / "mnist_mlp.yaml", REPO / "sweeps" / "mlp_search.yaml"


def trainkit(*args: str | Path, cwd: Path) -> None:
    command = [sys.executable, "-m", "trainkit", *map(str, args)]
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def test_accuracy(checkpoint: Path, work: Path) -> float:
    out = work / "eval.json"
    trainkit("eval", "--ckpt", checkpoint, "--out", out, cwd=work)
    return float(json.loads(out.read_text())["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-root", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sweep_mnist_"))
    data = ["--set", f"data.root={args.mnist_root.resolve()}", "--set", "data.download=false"]
    sweep = yaml.safe_load(SWEEP.read_text())
    sweep.update(base=str(CONFIG), trials=args.trials, parallel=args.parallel)
    (work / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))

    began = time.perf_counter()
    trainkit("sweep", "sweep.yaml", "-q", *data, cwd=work)
    wall = time.perf_counter() - began
    directory = work / "checkpoints" / "mlp_search"
    with (directory / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    pruned = sum(row["state"] == "pruned" for row in rows)
    best = rows[0]
    best_test = test_accuracy(directory / f"trial-{int(best['trial']):04d}" / "best.pt", work)

    trainkit("train", CONFIG, "--run-dir", "shipped", "-q", *data, cwd=work)
    shipped_test = test_accuracy(work / "shipped" / "best.pt", work)

    print(f"sweep: {len(rows)} trials, {args.parallel} at a time, {wall / 60:.1f} min wall")
    print(f"pruned: {pruned} of {len(rows)}")
    print(
        f"best trial {best['trial']}: "
        + ", ".join(f"{key}={best[key]}" for key in sweep["space"])
        + f"; val/accuracy {float(best['val/accuracy']):.4f}, test/accuracy {best_test:.4f}"
    )
    print(f"shipped config: test/accuracy {shipped_test:.4f}")
    print(f"(sweep directory: {directory})")


if __name__ == "__main__":
    main()
