"""trainkit against the loop a user would write by hand, and its own speed targets.

    python benchmarks/bench.py --mnist-root DATA_ROOT [--cifar-root CIFAR_JPG] [--repeats 3]

For each job it runs `trainkit train` and benchmarks/reference_loop.py on the same
config, alternating which goes first, `--repeats` times each, and prints medians of the
epoch time (training only), the whole process (launch to exit) and its peak memory, with
the trainkit/reference ratios. It also times `trainkit --help` and `trainkit validate`.
Every target of the project is printed as met or MISSED; the exit code is 1 if any is
missed. DATA_ROOT holds MNIST/raw/ with the four unpacked IDX files; CIFAR_JPG is the
unpacked image-folder copy of CIFAR-10, used only when a CUDA device is present.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "reference_loop.py"


@dataclass
class Run:
    """One process: wall seconds, peak resident memory, and what it reported."""

    seconds: float
    peak_mib: float
    epoch_times: list[float]
    test_accuracy: float | None
    val_accuracy: list[float] = field(default_factory=list)


@dataclass
class Job:
    name: str
    device: str  # where it runs: cpu or cuda
    data: Callable[[argparse.Namespace], dict | None]  # the config's data section, or None
    max_epoch_ratio: float | None = None  # trainkit / reference
    max_process_ratio: float | None = None
    max_memory_ratio: float | None = None
    max_seconds: float | None = None  # whole trainkit process
    min_accuracy: float | None = None  # test split, at the end of `trainkit train`


def _mnist(args: argparse.Namespace) -> dict | None:
    return {"root": str(args.mnist_root), "download": False} if args.mnist_root else None


def _cifar(args: argparse.Namespace) -> dict | None:
    if not args.cifar_root:
        return None
    return {"name": "image_folder", "root": str(args.cifar_root), "image_size": 32}


JOBS = [
    Job("quickstart", "cpu", lambda _: {}),
    Job("mnist_mlp", "cpu", _mnist, 1.05, 1.10, 1.10, max_seconds=8, min_accuracy=0.98),
    Job("mnist_lenet", "cpu", _mnist, 1.05, 1.10, 1.10, max_seconds=20, min_accuracy=0.99),
    Job("cifar_resnet", "cuda", _cifar, 1 / 0.95, min_accuracy=0.93),
]


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident memory in MiB and stdout of one process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # reaps it, with its own rusage
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode:
            raise SystemExit(f"failed: {' '.join(command)}\n{err.read().decode()[-3000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read().decode()


def run_trainkit(config: Path, env: dict[str, str]) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-trainkit-") as scratch:
        run_dir = Path(scratch) / "run"
        command = [*TRAINKIT, "train", str(config), "--run-dir", str(run_dir), "-q"]
        seconds, peak, _ = measure(command, env)
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return Run(
        seconds,
        peak,
        [r["epoch_time"] for r in records if "epoch_time" in r],
        next((r["test/accuracy"] for r in records if "test/accuracy" in r), None),
        [r["val/accuracy"] for r in records if "val/accuracy" in r],
    )


def run_reference(config: Path, env: dict[str, str]) -> Run:
    seconds, peak, stdout = measure([sys.executable, str(REFERENCE), str(config)], env)
    result = json.loads(stdout.strip().splitlines()[-1])
    shutil.rmtree(Path(result["checkpoint"]).parent, ignore_errors=True)
    return Run(
        seconds, peak, result["epoch_times"], result["test_accuracy"], result["val_accuracy"]
    )


def _trainkit_command() -> list[str]:
    script = Path(sys.executable).parent / "trainkit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainkit"]


TRAINKIT = _trainkit_command()


def check(label: str, value: float, limit: float, at_most: bool = True) -> bool:
    met = value <= limit if at_most else value >= limit
    sign = "<=" if at_most else ">="
    print(f"  {'met   ' if met else 'MISSED'}  {label}: {value:.3f} (target {sign} {limit})")
    return met


def bench_job(job: Job, args: argparse.Namespace, env: dict[str, str]) -> bool:
    print(f"\n{job.name}")
    if job.device == "cuda" and not has_cuda():
        print("  not measurable here: no CUDA device")
        return True
    data = job.data(args)
    if data is None:
        print("  skipped: its dataset root was not given")
        return True
    config = yaml.safe_load((ROOT / "configs" / f"{job.name}.yaml").read_text())
    config["data"] = {**config["data"], **data}
    if data.get("name") == "image_folder":
        config["data"].pop("download", None)
    with tempfile.TemporaryDirectory(prefix="bench-config-") as scratch:
        path = Path(scratch) / f"{job.name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        runs: dict[str, list[Run]] = {"trainkit": [], "reference": []}
        for repeat in range(args.repeats):
            order = ["reference", "trainkit"] if repeat % 2 == 0 else ["trainkit", "reference"]
            for who in order:
                runner = run_trainkit if who == "trainkit" else run_reference
                runs[who].append(runner(path, env))
    return report(job, runs)


def report(job: Job, runs: dict[str, list[Run]]) -> bool:
    """Medians per side; each ratio is the median over repeats of trainkit's run divided by
    the reference run beside it in time, which cancels this machine's slow drifts."""
    tk, ref = runs["trainkit"], runs["reference"]

    def epoch(run: Run) -> float:
        return statistics.median(run.epoch_times)

    def ratio(measure: Callable[[Run], float]) -> float:
        return statistics.median(measure(a) / measure(b) for a, b in zip(tk, ref, strict=True))

    def row(label: str, side: list[Run]) -> str:
        accuracies = " ".join(f"{run.test_accuracy:.4f}" for run in side)
        return (
            f"  {label:10} {statistics.median(map(epoch, side)):9.3f} "
            f"{statistics.median(run.seconds for run in side):10.2f} "
            f"{statistics.median(run.peak_mib for run in side):9.0f}  {accuracies}"
        )

    epoch_ratio = ratio(epoch)
    process_ratio = ratio(lambda run: run.seconds)
    memory_ratio = ratio(lambda run: run.peak_mib)
    tk_seconds = statistics.median(run.seconds for run in tk)
    print(f"  {'':10} {'epoch s':>9} {'process s':>10} {'peak MiB':>9}  test accuracy")
    print(row("trainkit", tk))
    print(row("reference", ref))
    print(f"  {'ratio':10} {epoch_ratio:9.3f} {process_ratio:10.3f} {memory_ratio:9.3f}")
    met = []
    if job.max_epoch_ratio is not None:
        met.append(check("epoch time ratio", epoch_ratio, job.max_epoch_ratio))
    if job.max_process_ratio is not None:
        met.append(check("whole process ratio", process_ratio, job.max_process_ratio))
    if job.max_memory_ratio is not None:
        met.append(check("peak memory ratio", memory_ratio, job.max_memory_ratio))
    if job.max_seconds is not None:
        met.append(check("trainkit train, seconds", tk_seconds, job.max_seconds))
    if job.min_accuracy is not None:
        lowest = min(run.test_accuracy or 0.0 for run in tk)
        met.append(check("test accuracy (lowest)", lowest, job.min_accuracy, at_most=False))
        first = tk[0]
        reached = [i for i, acc in enumerate(first.val_accuracy) if acc >= job.min_accuracy]
        if reached:
            seconds = sum(first.epoch_times[: reached[0] + 1])
            print(
                f"  val accuracy {job.min_accuracy:.0%} after epoch {reached[0] + 1}, "
                f"{seconds:.1f} s of training"
            )
    return all(met)


def bench_cli(env: dict[str, str], repeats: int) -> bool:
    print("\ncommand line start-up")
    met = []
    for label, args, limit in (
        ("trainkit --help, seconds", ["--help"], 0.3),
        (
            "trainkit validate configs/cifar_resnet.yaml, seconds",
            ["validate", str(ROOT / "configs" / "cifar_resnet.yaml")],
            1.0,
        ),
    ):
        times = [measure([*TRAINKIT, *args], env)[0] for _ in range(repeats)]
        met.append(check(label, statistics.median(times), limit))
    return all(met)


def has_cuda() -> bool:
    probe = "import torch; print(torch.cuda.is_available())"
    return (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
        == "True"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-root", type=Path, help="Folder holding MNIST/raw/.")
    parser.add_argument("--cifar-root", type=Path, help="The unpacked CIFAR-10 JPEG copy.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each side per job.")
    parser.add_argument("--jobs", nargs="*", default=[job.name for job in JOBS])
    args = parser.parse_args()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Load torch's libraries into the page cache once, so no side pays for a cold disk.
    subprocess.run([sys.executable, "-c", "import torch, torchvision"], check=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.repeats} runs each")
    met = [bench_cli(env, 5 * args.repeats)]
    met += [bench_job(job, args, env) for job in JOBS if job.name in args.jobs]
    print("\nall targets met" if all(met) else "\nsome targets MISSED")
    sys.exit(0 if all(met) else 1)


if __name__ == "__main__":
    main()
