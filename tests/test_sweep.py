"""trainkit sweep: trials as ordinary runs, pruning, a study that survives being stopped."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_experiment
from trainkit.sweep.coordinator import check_space, free_device, read_spec
from trainkit.training.checkpoint import read_payload

# Seed 3 visits the grid as good, good, bad, good, bad, bad (lr 1e-7 learns nothing): with
# two trials at a time, every bad one reports its first epoch after a good one completed.
SWEEP = {
    "name": "search",
    "base": "experiment.yaml",
    "metric": "val/accuracy",
    "trials": 6,
    "parallel": 2,
    "sampler": "grid",
    "startup_trials": 1,
    "seed": 3,
    "space": {
        "optimizer.lr": {"choice": [1.0e-7, 0.3]},
        "model.hidden": {"choice": [[8], [16], [32]]},
    },
}


@pytest.fixture
def sweep_file(write_config, tmp_path: Path) -> Path:
    write_config(
        tiny_experiment(trainer={"epochs": 4}, logging={"log_every_steps": 5, "tensorboard": False})
    )
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    return path


def trials(directory: Path) -> list[dict[str, str]]:
    with (directory / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_sweep_prunes_the_hopeless_and_its_best_config_retrains_alike(
    cli, sweep_file: Path, tmp_path: Path
) -> None:
    result = cli("sweep", sweep_file)
    assert result.exit_code == 0, result.output
    directory = tmp_path / "checkpoints" / "search"
    rows = trials(directory)
    assert len(rows) == 6 and {r["state"] for r in rows} <= {"complete", "pruned"}
    pruned = [r for r in rows if r["state"] == "pruned"]
    completed = [r for r in rows if r["state"] == "complete"]
    # Every hopeless trial (lr 1e-7 learns nothing) is pruned and only learning ones
    # complete. Whether a learning one is pruned too depends on which of two running at
    # once finished first (its first epoch against the median of the finished): a race.
    assert [r for r in rows if r["optimizer.lr"] == "1.0e-07"] == [
        r for r in pruned if r["optimizer.lr"] == "1.0e-07"
    ]
    assert completed and all(r["optimizer.lr"] == "0.3" for r in completed)
    assert float(completed[0]["val/accuracy"]) == max(float(r["val/accuracy"]) for r in completed)
    assert "pruned at epoch" in result.stdout and "best config" in result.stdout
    # every trial is a normal run directory, and a pruned one says so
    for row in rows:
        run = directory / f"trial-{int(row['trial']):04d}"
        assert read_payload(run / "last.pt")["config"]["optimizer"]["lr"] == float(
            row["optimizer.lr"]
        )
    listed = json.loads(cli("runs", directory, "--json").stdout)
    assert sorted(r["status"] for r in listed).count("pruned") == len(pruned)
    assert cli("runs", directory).stdout.splitlines()[1].startswith(completed[0]["trial"])
    # best.yaml is the best trial's resolved config; trained again, it scores the same
    best = directory / "best.yaml"
    assert best.read_text().startswith(f"# best trial {completed[0]['trial']} of sweep search")
    again = cli("train", best, "--run-dir", tmp_path / "again", "-q")
    assert again.exit_code == 0, again.output
    final = [json.loads(x) for x in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    last_val = [r["val/accuracy"] for r in final if "val/accuracy" in r][-1]
    assert last_val == pytest.approx(float(completed[0]["val/accuracy"]), abs=1e-6)
    assert cli("plot", directory, "--out", tmp_path / "sweep.png").exit_code == 0
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    # the same command again finds the sweep done; more trials in the file extend it
    assert cli("sweep", sweep_file, "-q").exit_code == 0 and len(trials(directory)) == 6
    sweep_file.write_text(yaml.safe_dump(dict(SWEEP, trials=7, sampler="random")))
    assert cli("sweep", sweep_file, "-q").exit_code == 0 and len(trials(directory)) == 7
    sweep_file.write_text(yaml.safe_dump(dict(SWEEP, space={"optimizer.lr": {"choice": [0.1]}})))
    changed = cli("sweep", sweep_file, "-q")
    assert changed.exit_code == 2 and "another search space" in changed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_sweep_continues_without_repeating_trials(
    sig: int, sweep_file: Path, tmp_path: Path
) -> None:
    """Stopped (SIGTERM: its trials stop with it) or killed (SIGKILL: its trials go on
    alone, and a journal lock may be left) once two trials have finished; `trainkit
    resume SWEEP_DIR` completes it (4 trials of the 6-point grid)."""
    sweep_file.write_text(yaml.safe_dump(dict(SWEEP, trials=4)))
    directory = tmp_path / "checkpoints" / "search"
    command = [sys.executable, "-m", "trainkit", "sweep", str(sweep_file), "-q"]
    coordinator = subprocess.Popen(command, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while len([r for r in _rows(directory) if r["state"] in ("complete", "pruned")]) < 2:
        assert coordinator.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    done = [r["trial"] for r in _rows(directory) if r["state"] in ("complete", "pruned")]
    last = {t: directory / f"trial-{int(t):04d}" / "last.pt" for t in done}
    finished = {trial: path.stat().st_mtime_ns for trial, path in last.items()}
    coordinator.send_signal(sig)
    code = coordinator.wait(timeout=120)
    assert code == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    lock = directory / "study.journal.lock"
    if sig == signal.SIGKILL and not os.path.lexists(lock):  # as if killed mid-write
        lock.symlink_to("gone/study.journal")  # (it may have been, and left one itself)
    resume = [sys.executable, "-m", "trainkit", "resume", str(directory), "-q"]
    result = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = trials(directory)
    assert len(rows) == 4 and all(r["state"] in ("complete", "pruned") for r in rows)
    for trial, mtime in finished.items():  # finished trials were not run again
        assert (directory / f"trial-{int(trial):04d}" / "last.pt").stat().st_mtime_ns == mtime


def _rows(directory: Path) -> list[dict[str, str]]:
    return trials(directory) if (directory / "trials.csv").is_file() else []


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"optimizer.lr": {"float": [0.0, 1.0]}}, "optimizer.lr = 0.0 does not make a valid"),
        ({"optimizer.lrr": {"float": [0.1, 1.0]}}, "unknown key 'lrr'; did you mean 'lr'?"),
        ({"model.activation": {"choice": ["relu", "gelu"]}}, "model.activation = gelu"),
        ({"optimizer.lr": {"float": [0.0, 1.0], "log": True}}, "log: true needs a numeric range"),
        ({"optimizer.lr": {"float": [0.5, 0.1]}}, "low must be below high"),
        ({"optimizer.lr": {"float": [0.1, 0.5]}, "model.hidden": {"choice": [[8]]}}, None),
    ],
)
def test_every_point_of_the_space_is_checked_before_anything_runs(
    space: dict, expected: str | None, cli, sweep_file: Path, tmp_path: Path
) -> None:
    spec = dict(SWEEP, space=space, sampler="grid" if expected is None else "tpe")
    sweep_file.write_text(yaml.safe_dump(spec))
    result = cli("sweep", sweep_file)
    assert result.exit_code == 2, result.output
    if expected is None:
        expected = "sampler: grid needs every parameter of the space as a choice"
    assert expected in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "Pass the path of a sweep file (YAML)"),
        ("- a list", "must hold a mapping of sections (name, base, metric, space, ...)"),
    ],
)
def test_a_missing_or_shapeless_sweep_file_is_named_as_one(
    text: str | None, expected: str, cli, tmp_path: Path
) -> None:
    path = tmp_path / "search.yaml"
    if text is not None:
        path.write_text(text)
    result = cli("sweep", path)
    assert result.exit_code == 2 and expected in result.stderr
    assert "experiment" not in result.stderr and "Traceback" not in result.output


def test_without_the_sweep_extra_it_says_how_to_install_it(
    cli, sweep_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "optuna" else find_spec(name, *a),
    )
    result = cli("sweep", sweep_file)
    assert result.exit_code == 2 and "pip install 'trainkit[sweep]'" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


SHIPPED = sorted((Path(__file__).parents[1] / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweeps_are_valid_at_every_point(path: Path) -> None:
    spec, base = read_spec(path)
    check_space(spec, base, spec.base)
    assert spec.trials >= 1


def test_a_new_trial_gets_a_gpu_no_running_trial_holds() -> None:
    """Trial 0 ended on GPU 0 while trial 1 still runs on GPU 1: the next goes to 0."""
    assert free_device([0, 1], [1]) == 0
    assert free_device([0, 1], [None]) == 0  # an adopted trial's device is unknown
    assert free_device([0, 1, 2], [0, 2]) == 1
    assert free_device([0, 1], [0, 1, 1]) == 0  # more trials than GPUs: the least loaded


FAILING = {
    "name": "fixable",
    "base": "experiment.yaml",
    "metric": "val/accuracy",
    "trials": 3,
    "parallel": 2,
    "sampler": "grid",
    "pruner": "none",
    "space": {"optimizer.lr": {"choice": [0.05, 0.1, 0.2]}},
}


@pytest.mark.slow
def test_a_sweep_that_fails_alike_stops_says_why_and_retries_once_fixed(
    cli, write_config, tmp_path: Path
) -> None:
    from tests.disk_datasets import write_image_folder

    missing = {"name": "image_folder", "root": str(tmp_path / "nowhere"), "workers": 0}
    write_config(model={"name": "mlp", "hidden": [8]}, data=missing, trainer={"epochs": 1})
    sweep_file = tmp_path / "fixable.yaml"
    sweep_file.write_text(yaml.safe_dump(FAILING))
    directory = tmp_path / "checkpoints" / "fixable"

    failed = cli("sweep", sweep_file, "-q")
    assert failed.exit_code == 1, failed.output
    assert "its first trials all failed with the same error" in failed.stderr
    # the trial's whole message, down to its last words (the fix), not a cut first line
    assert "image_folder expects ROOT/train/<class>/<image> and ROOT/test/<class>/<image>" in (
        failed.stderr.replace("\n", " ")
    )
    assert "best config" not in failed.output and not (directory / "best.yaml").exists()
    first = {r["optimizer.lr"]: r["state"] for r in trials(directory)}
    assert sorted(first.values()).count("fail") == 3

    folder = write_image_folder(tmp_path / "pets", per_class=6, size=12)
    fixed = cli("sweep", sweep_file, "--set", f"data.root={folder}", "--set", "data.image_size=8")
    assert fixed.exit_code == 0, fixed.output
    rows = trials(directory)
    assert [r["state"] for r in rows] == ["complete"] * 3  # the failed ones, tried again
    assert {r["optimizer.lr"] for r in rows} == set(first)
    assert all(int(r["trial"]) >= 3 for r in rows)  # new trials, the failed ones left out
    assert "3 completed" in fixed.stdout and (directory / "best.yaml").is_file()
    assert f"--set data.root={folder}" in (directory / "base.yaml").read_text().splitlines()[0]
    # another base for a sweep whose trials finished: refused, naming the difference
    other = cli("sweep", sweep_file, "--set", f"data.root={folder}", "--set", "data.image_size=12")
    assert other.exit_code == 2 and "data.image_size" in other.stderr
    # trainkit runs shows the sweep as one row; its folder lists its trials
    train = write_config(name="lone.yaml")
    assert (
        cli("train", train, "--run-dir", tmp_path / "checkpoints" / "lone" / "r", "-q").exit_code
        == 0
    )
    listed = cli("runs", tmp_path / "checkpoints").stdout
    assert "1 run and 1 sweep" in listed and "3/3 trials" in listed and "trial-" not in listed
    assert len(json.loads(cli("runs", directory, "--json").stdout)) == 3  # its trials, as runs


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe"])  # TPE's first trials come from its random sampler
def test_a_continued_sweep_proposes_what_an_uninterrupted_one_would(
    sampler: str, cli, write_config, tmp_path: Path
) -> None:
    """A new coordinator (after a stop, or to extend a sweep) must not start the
    sampler's sequence over: the proposals depend on the seed and the history only."""
    write_config(trainer={"epochs": 1}, logging={"tensorboard": False})
    spec = {
        "name": "again",
        "base": "experiment.yaml",
        "metric": "val/loss",
        "trials": 3,
        "sampler": sampler,
        "pruner": "none",
        "seed": 7,
        "space": {"optimizer.lr": {"float": [0.01, 0.5], "log": True}},
    }
    sweep_file = tmp_path / "again.yaml"

    def proposals(directory: Path, steps: list[int]) -> list[str]:
        for count in steps:
            sweep_file.write_text(yaml.safe_dump(dict(spec, trials=count)))
            assert cli("sweep", sweep_file, "--dir", directory, "-q").exit_code == 0
        return [r["optimizer.lr"] for r in sorted(trials(directory), key=lambda r: int(r["trial"]))]

    whole = proposals(tmp_path / "whole", [3])
    pieces = proposals(tmp_path / "pieces", [1, 2, 3])
    assert pieces == whole and len(set(whole)) == 3
