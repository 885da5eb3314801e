"""A campaign of worker kills under torchrun's elastic agent: does every run finish, and
match its uninterrupted twin? How long from a kill to training again?

    python benchmarks/restarts.py [--trials 10] [--nproc 2] [--seed 0]

Each trial launches `torchrun --standalone --nproc-per-node N --max-restarts 3 -m
trainkit train` on a synthetic experiment of some seconds, waits a random time after
training starts (within the first 80% of the twin's training time), and SIGKILLs one
of the workers, chosen at random. The agent
restarts the workers and trainkit continues the run from its newest checkpoint. The
trial passes if the job exits 0 and its final checkpoint and metrics.jsonl equal those of
the twin trained without a kill (weights and optimizer state bit for bit). The recovery
time runs from the kill to the first progress line after the restart. The exit code is 1
if any trial fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import assert_same_run, tiny_experiment  # noqa: E402

EXPERIMENT = tiny_experiment(
    data={"n_train": 24000, "n_test": 200, "batch_size": 16},
    trainer={"epochs": 3, "distributed_timeout_minutes": 1},
    checkpoint={"every_steps": 20},
    logging={"log_every_steps": 10, "tensorboard": False},
)
STARTUP = 6.0  # seconds a launch takes before training (imports, data), roughly
ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def workers_of(agent: int) -> list[int]:
    """The worker processes torchrun's agent (pid `agent`) started."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == agent:
            children.append(int(stat.parent.name))
    return children


def trial(
    config: Path, runs: Path, nproc: int, rng: random.Random, span: float
) -> dict[str, object]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "--max-restarts=3", "-m", "trainkit", "train",
               str(config), "--set", f"checkpoint.runs_dir={runs}"]  # fmt: skip
    job = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    lines: list[tuple[float, str]] = []
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(job.stderr or []), daemon=True)
    reader.start()
    assert job.stdout is not None
    delay, started, killed_at, victim = rng.uniform(0.2, span), None, None, None
    for line in job.stdout:
        now = time.monotonic()
        lines.append((now, line))
        if killed_at is None and line.startswith("epoch ") and " batch " in line:
            started = started or now  # the first progress line: training has begun
            if now - started >= delay:
                workers = workers_of(job.pid)
                if workers:
                    victim = rng.choice(sorted(workers))
                    os.kill(victim, signal.SIGKILL)
                    killed_at = now
    code = job.wait(timeout=600)
    reader.join(timeout=10)
    said = "".join(errors)
    recovery = None
    if killed_at is not None and "restart 1 of this torchrun job" in said:
        # Lines the dead attempt had printed may still arrive just after the kill.
        after = [t for t, line in lines if t > killed_at + 0.5 and " batch " in line]
        recovery = after[0] - killed_at if after else None
    return {"code": code, "killed": victim is not None, "delay": delay,
            "recovery": recovery, "stderr": said}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        config = folder / "experiment.yaml"
        config.write_text(json.dumps(EXPERIMENT))
        twin = folder / "twin"
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "trainkit", "train", str(config), "--nproc",
             str(args.nproc), "--run-dir", str(twin), "-q"],
            capture_output=True, text=True, env=ENV, timeout=600,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"the twin failed:\n{done.stderr[-3000:]}")
        # Kills land in the first 80% of the training time (the twin's, less start-up).
        span = max(1.0, 0.8 * (time.monotonic() - began - STARTUP))
        results, passed = [], 0
        for number in range(args.trials):
            runs = folder / f"trial{number}"
            result = trial(config, runs, args.nproc, rng, span)
            (run,) = (runs / "tiny").iterdir()
            try:
                assert result["code"] == 0, result["stderr"][-2000:]
                assert_same_run(run, twin)
                verdict, passed = "equal to the twin", passed + 1
            except AssertionError as failure:
                verdict = f"FAILED: {str(failure)[:300]}"
            recovery = result["recovery"]
            shown = f"{recovery:.1f} s" if isinstance(recovery, float) else "-"
            print(f"trial {number + 1}: kill {result['delay']:.1f} s into training "
                  f"({'a worker' if result['killed'] else 'none: the run had ended'}), "
                  f"training again after {shown}: {verdict}", flush=True)  # fmt: skip
            results.append(result)
    recoveries = [r["recovery"] for r in results if isinstance(r["recovery"], float)]
    print(f"{passed} of {args.trials} runs finished equal to their uninterrupted twin")
    if recoveries:
        print(f"kill to training again: median {statistics.median(recoveries):.1f} s, "
              f"range {min(recoveries):.1f} to {max(recoveries):.1f} s "
              f"({len(recoveries)} restarts)")  # fmt: skip
    sys.exit(0 if passed == args.trials else 1)


if __name__ == "__main__":
    main()
