"""A fault-injection campaign against trainkit: signals, kills, bad input, a full disk.

    python benchmarks/faults.py [--trials 20] [--kills 20] [--seed 0]

1. Signals at random moments. One uninterrupted run is the reference. Each trial starts
   the same run, sends SIGTERM or SIGKILL (chosen at random) at a random moment between
   launch and the reference's end (start-up included), then resumes it to the end. It
   passes if the stopped process ended as promised (143 with last.pt written, or no run
   directory at all; SIGKILL: whatever it left) and the finished run matches the
   reference bit for bit: weights, optimizer state, and metrics.jsonl without its
   wall-clock fields.
2. Kills during checkpoint writes: a process writes 16 MB checkpoints in a loop and is
   killed at a random moment; every checkpoint file left must load and hold one whole
   version.
3. Bad input: a catalogue of malformed configs, options, paths, checkpoints, image files
   and plugins, each through the CLI; each must end with its exit code (2, or 1 for a run
   that failed) and one message, never a traceback.
4. A full disk (a small tmpfs, where the machine lets this process mount one): the run
   fails with exit 1 and keeps its checkpoints; once space is freed, resume finishes it.
5. Two writers: a resume of a run that is still training is refused and names the
   process that holds the run.

It prints every count and exits with 1 if anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# About 1,700 steps an epoch, 4 epochs: training takes most of the process's life, so
# random moments land in start-up, mid-epoch, in evaluation and in checkpoint writes.
# Dropout and accumulation make any lost RNG state show.
EXPERIMENT = {
    "name": "faults",
    "seed": 3,
    "model": {"name": "mlp", "hidden": [32], "dropout": 0.2},
    "data": {"name": "synthetic_logistic", "n_train": 60000, "n_test": 200, "batch_size": 32},
    "optimizer": {"name": "adam", "lr": 0.003},
    "scheduler": {"name": "onecycle"},
    "trainer": {"epochs": 4, "device": "cpu", "accumulate_steps": 2},
    "checkpoint": {"every_steps": 50},
    "logging": {"log_every_steps": 20},
}


def command(*args: Any) -> list[str]:
    """`python -m trainkit ARGS...` with this interpreter."""
    return [sys.executable, "-m", "trainkit", *map(str, args)]


def trainkit(*args: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), cwd=cwd, capture_output=True, text=True, timeout=300)


def same_run(a: Path, b: Path) -> bool:
    import torch

    from trainkit.training.checkpoint import read_payload

    first, second = read_payload(a / "last.pt"), read_payload(b / "last.pt")
    if any(not torch.equal(t, second["model"][k]) for k, t in first["model"].items()):
        return False
    for key, state in first["optimizer"]["state"].items():
        for name, value in state.items():
            other = second["optimizer"]["state"][key][name]
            if not torch.equal(torch.as_tensor(value), torch.as_tensor(other)):
                return False
    return records(a) == records(b)


def records(run: Path) -> list[dict[str, Any]]:
    timing = {"epoch_time", "samples_per_sec"}
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in timing} for x in lines]


def signals(args: argparse.Namespace, scratch: Path, rng: random.Random) -> dict[str, Any]:
    config = scratch / "faults.yaml"
    config.write_text(yaml.safe_dump(EXPERIMENT))
    start = time.perf_counter()
    reference = trainkit("train", config, "--run-dir", scratch / "reference", "-q", cwd=scratch)
    duration = time.perf_counter() - start
    assert reference.returncode == 0, reference.stderr
    outcome: Counter[str] = Counter()
    for trial in range(args.trials):
        run = scratch / f"trial{trial}"
        sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
        moment = rng.uniform(0, duration)
        argv = command("train", config, "--run-dir", run, "-q")
        process = subprocess.Popen(
            argv, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(moment)
        process.send_signal(sig)
        _, err = process.communicate(timeout=300)
        code = process.returncode
        name = signal.Signals(sig).name
        if code == 0:
            verdict = "finished before the signal"
        elif sig == signal.SIGTERM and code == -signal.SIGTERM and not run.exists():
            # Python was still importing, before trainkit's handler: the default action
            # ends it (a shell sees 143), and nothing was written yet.
            verdict = "ended while Python started, nothing written"
        elif sig == signal.SIGTERM and code != 143:
            verdict = f"FAILED: SIGTERM gave exit code {code}: {err[-300:]}"
        elif not run.exists():
            verdict = "stopped before its run directory existed"
        elif not any(run.glob("*.pt")):
            if sig == signal.SIGTERM:
                verdict = "FAILED: SIGTERM left a run with no checkpoint"
            else:  # killed before its first checkpoint: there is nothing to resume
                shutil.rmtree(run)
                verdict = "killed before its first checkpoint"
        else:
            resumed = trainkit("resume", run, "-q", cwd=scratch)
            if resumed.returncode != 0:
                verdict = f"FAILED: resume exit code {resumed.returncode}: {resumed.stderr[-300:]}"
            elif same_run(scratch / "reference", run):
                verdict = "resumed, bit-identical"
            else:
                verdict = "FAILED: resumed, but differs from the reference"
        outcome[f"{name}: {verdict}"] += 1
        shutil.rmtree(run, ignore_errors=True)
    return {"reference seconds": round(duration, 1), "trials": dict(sorted(outcome.items()))}


def kills_mid_write(args: argparse.Namespace, scratch: Path, rng: random.Random) -> dict[str, Any]:
    from tests.test_checkpoint import kill_a_writer  # kills a loop of 16 MB checkpoint writes

    outcome: Counter[str] = Counter()
    for trial in range(args.kills):
        run = scratch / f"write{trial}"
        run.mkdir()
        whole = kill_a_writer(run, rng.uniform(0, 0.3))
        outcome["every checkpoint whole" if whole else "FAILED: a torn checkpoint"] += 1
        shutil.rmtree(run)
    return dict(outcome)


CLASHING_PLUGIN = (
    "from trainkit.plugin import register_model\n"
    "@register_model('lenet')\n"
    "def lenet(params, input_shape, num_outputs):\n"
    "    return None\n"
)


def bad_inputs(scratch: Path) -> dict[str, Any]:
    """Each case: CLI arguments, and the exit code it must end with."""
    from typer.testing import CliRunner

    from tests.disk_datasets import write_image_folder
    from trainkit.cli import app

    os.chdir(scratch)
    good = dict(EXPERIMENT, data={"name": "synthetic_logistic", "n_train": 300, "n_test": 50})
    cases: list[tuple[str, list[str], int]] = []

    def config_case(label: str, raw: Any, code: int = 2, command: str = "train") -> None:
        path = scratch / f"case{len(cases)}.yaml"
        path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
        cases.append((label, [command, str(path)], code))

    for section, key, value in [
        ("optimizer", "lr", 0),
        ("optimizer", "lr", -1),
        ("optimizer", "lr", "fast"),
        ("optimizer", "momentum", 2),
        ("optimizer", "name", "sgdd"),
        ("model", "hidden", "wide"),
        ("model", "hidden", [-3]),
        ("model", "dropout", 1.5),
        ("model", "name", "lenett"),
        ("model", "activation", "gelu"),
        ("data", "batch_size", 0),
        ("data", "val_fraction", 1),
        ("data", "name", "imagenet"),
        ("trainer", "epochs", 0),
        ("trainer", "device", "tpu"),
        ("trainer", "precision", "fp8"),
        ("trainer", "grad_clip", -1),
        ("trainer", "devise", "cpu"),
        ("checkpoint", "monitor", "val/f1"),
        ("checkpoint", "keep_last", 0),
        ("scheduler", "name", "cosin"),
        ("loss", "name", "hinge"),
        ("loss", "label_smoothing", 2),
        ("logging", "log_every_steps", 0),
        ("model", "init_from", "missing.pt"),
        ("model", "freeze", ["layer9"]),
    ]:
        raw = json.loads(json.dumps(good))
        raw.setdefault(section, {})
        raw[section][key] = value
        config_case(f"{section}.{key}={value!r}", raw)
    for label, raw in [
        ("empty file", ""),
        ("a list", "- 1\n- 2\n"),
        ("invalid YAML", "name: [x\n"),
        ("tabs", "name:\tx\n\tmodel: 1\n"),
        ("no model", {"name": "x", "data": good["data"]}),
        ("bad name", dict(good, name="a b/c")),
        ("plugins not a list", dict(good, plugins="x")),
        ("huge YAML", dict(good, optimizer={"lr": ["x" * 1000] * 5000})),
        ("base cycle", dict(good, base="case_cycle.yaml")),
        ("missing base", dict(good, base="nope.yaml")),
        ("component without parameters", dict(good, loss={"name": "mse", "smoothing": 1})),
        (
            "mse on image classes",
            dict(good, loss={"name": "cross_entropy"}, model={"name": "logistic"}),
        ),
    ]:
        config_case(label, raw)
    (scratch / "case_cycle.yaml").write_text("base: case_cycle.yaml\n")
    binary = scratch / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 8)
    cases.append(("a binary config", ["train", str(binary)], 2))
    cases.append(("a missing config", ["train", str(scratch / "none.yaml")], 2))
    for flag in ["optimizer.lr", "=3", "name.x=1", "optimizer.lr=[", "scheduler.name=nope"]:
        cases.append((f"--set {flag}", ["validate", str(scratch / "case0.yaml"), "--set", flag], 2))
    cases.append(
        (
            "--unset of an unset key",
            ["validate", str(scratch / "case0.yaml"), "--unset", "trainer.nothing"],
            2,
        )
    )
    # a real run to point other commands at
    (scratch / "good.yaml").write_text(yaml.safe_dump(good))
    runner = CliRunner()
    assert runner.invoke(app, ["train", "good.yaml", "--run-dir", "goodrun", "-q"]).exit_code == 0
    (scratch / "afile").write_text("x")
    for label, argv in [
        ("eval --out a folder", ["eval", "--ckpt", "goodrun", "--out", "goodrun"]),
        ("eval --out under a file", ["eval", "--ckpt", "goodrun", "--out", "afile/x.json"]),
        ("predict --out .txt", ["predict", "--ckpt", "goodrun", "good.yaml", "--out", "p.txt"]),
        ("predict of images with a feature model", ["predict", "--ckpt", "goodrun", str(scratch)]),
        ("predict a missing input", ["predict", "--ckpt", "goodrun", "nothing.csv"]),
        (
            "export --out a file",
            ["export", "--ckpt", "goodrun", "--format", "safetensors", "--out", "afile"],
        ),
        ("train --run-dir under a file", ["train", "good.yaml", "--run-dir", "afile/run"]),
        ("train --run-dir not empty", ["train", "good.yaml", "--run-dir", "goodrun"]),
        ("resume a missing run", ["resume", "nowhere"]),
        ("resume a finished run", ["resume", "goodrun"]),
        ("resume a folder without checkpoints", ["resume", str(scratch / "emptyrun")]),
        ("runs of a missing folder", ["runs", "nowhere"]),
        ("plot a missing run", ["plot", "nowhere", "--out", "p.png"]),
        ("plot to .jpg", ["plot", "goodrun", "--out", "p.jpg"]),
        ("ls of a misspelt kind", ["ls", "model"]),
        ("ls with a missing plugin", ["ls", "--plugin", "no_such_module"]),
    ]:
        cases.append((label, argv, 2))
    (scratch / "emptyrun").mkdir()
    import torch

    checkpoints = {
        "a truncated checkpoint": (scratch / "goodrun" / "last.pt").read_bytes()[:1000],
        "random bytes": os.urandom(5000),
        "an empty file": b"",
    }
    for label, data in checkpoints.items():
        path = scratch / f"{label.replace(' ', '_')}.pt"
        path.write_bytes(data)
        cases.append((f"eval of {label}", ["eval", "--ckpt", str(path)], 2))
    for label, obj in [
        ("a plain state_dict", {"w": torch.zeros(3)}),
        ("a list", [1, 2]),
        ("a future format", {"format": 99, "config": {}, "model": {}, "state": {}}),
        ("an incomplete checkpoint", {"format": 2, "config": {}}),
    ]:
        path = scratch / f"{label.replace(' ', '_')}.pt"
        torch.save(obj, path)
        cases.append((f"eval of {label}", ["eval", "--ckpt", str(path)], 2))
        cases.append((f"resume of {label}", ["resume", str(path)], 2))
    images = write_image_folder(scratch / "pets", per_class=3)
    (images / "train" / "cat" / "text.png").write_text("not an image")
    (images / "train" / "dog" / "cut.jpg").write_bytes(
        (images / "test" / "dog" / "0.jpg").read_bytes()[:50]
    )
    (images / "train" / "owl" / "empty.png").write_bytes(b"")
    for mode in ("true", "false"):
        raw = dict(
            good,
            data={
                "name": "image_folder",
                "root": str(images),
                "in_memory": mode == "true",
                "workers": 0,
                "mean": [0.5] * 3,
                "std": [0.5] * 3,
            },
            model={"name": "lenet"},
        )
        config_case(f"unreadable images, in_memory {mode}", raw)
    for label, source in [
        ("a plugin with an ImportError", "import no_such_dependency\n"),
        ("a plugin with a SyntaxError", "def (:\n"),
        ("a plugin that raises at import", "raise RuntimeError('boom')\n"),
        ("a plugin taking the name lenet", CLASHING_PLUGIN),
    ]:
        module = f"tk_fault_{len(cases)}"
        (scratch / f"{module}.py").write_text(source)
        config_case(label, dict(good, plugins=[module]))
    outcome: Counter[str] = Counter()
    failures = []
    for label, argv, code in cases:
        result = runner.invoke(app, argv)
        escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
        text = (result.stdout or "") + (result.stderr or "")
        ok = (
            not escaped
            and result.exit_code == code
            and "Traceback" not in text
            and len(text) < 4000
        )
        outcome["clear message, right exit code" if ok else "FAILED"] += 1
        if not ok:
            failures.append(f"{label}: exit {result.exit_code}, {type(result.exception).__name__}")
    return {"inputs tried": len(cases), **dict(outcome), "failures": failures}


def full_disk(scratch: Path) -> dict[str, Any]:
    disk = scratch / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4096k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        return {"skipped": f"cannot mount a tmpfs here: {mounted.stderr.strip()}"}
    try:
        config = scratch / "big.yaml"
        config.write_text(
            yaml.safe_dump(
                dict(
                    EXPERIMENT,
                    model={"name": "mlp", "hidden": [256]},
                    data={"name": "synthetic_logistic", "n_features": 200, "n_train": 3000},
                    checkpoint={"every_steps": 20},
                )
            )
        )
        process = subprocess.Popen(
            command("train", str(config), "--run-dir", str(disk / "run"), "-q"),
            cwd=scratch,
            stderr=subprocess.PIPE,
            text=True,
        )
        while not (disk / "run" / "best.pt").exists() and process.poll() is None:
            time.sleep(0.05)
        with (disk / "filler").open("wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        _, err = process.communicate(timeout=300)
        from trainkit.training.checkpoint import read_payload

        intact = all(read_payload(path) for path in (disk / "run").glob("*.pt"))
        leftovers = list((disk / "run").glob(".*.tmp"))
        (disk / "filler").unlink()
        resumed = trainkit("resume", disk / "run", "-q", cwd=scratch)
        return {
            "exit code when the disk filled": process.returncode,
            "one message, no traceback": "Traceback" not in err and "error:" in err,
            "checkpoints intact": intact,
            "temporary files left": len(leftovers),
            "resume after freeing space": resumed.returncode,
        }
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def two_writers(scratch: Path) -> dict[str, Any]:
    config = scratch / "long.yaml"
    config.write_text(yaml.safe_dump(dict(EXPERIMENT, trainer={"epochs": 30, "device": "cpu"})))
    run = scratch / "busy"
    process = subprocess.Popen(
        command("train", str(config), "--run-dir", str(run), "-q"),
        cwd=scratch,
    )
    while not (run / "best.pt").exists():
        time.sleep(0.05)
    second = trainkit("resume", run, cwd=scratch)
    reader = trainkit("eval", "--ckpt", run, cwd=scratch)
    process.terminate()
    process.wait(timeout=120)
    return {
        "second writer's exit code": second.returncode,
        "names the holder": f"process {process.pid}" in second.stderr,
        "a reader meanwhile": reader.returncode,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="random-moment signal trials")
    parser.add_argument("--kills", type=int, default=20, help="kills during checkpoint writes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    report = {}
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        start = time.perf_counter()
        report["signals at random moments"] = signals(args, scratch, rng)
        report["kills during checkpoint writes"] = kills_mid_write(args, scratch, rng)
        report["bad inputs"] = bad_inputs(scratch)
        report["full disk"] = full_disk(scratch)
        report["two writers"] = two_writers(scratch)
        report["seconds"] = round(time.perf_counter() - start)
    print(json.dumps(report, indent=2))
    return 1 if "FAILED" in json.dumps(report) else 0


if __name__ == "__main__":
    sys.exit(main())
