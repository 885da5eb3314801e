"""trainkit runs: what each run is doing or how it ended, read without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import misbehaving_loss, tiny_experiment
from trainkit.training.run_dir import read_status


def test_runs_lists_every_way_a_run_ends(cli, write_config, tmp_path: Path) -> None:
    ok = write_config(checkpoint={"monitor": "val/accuracy"})
    assert cli("train", ok, "--run-dir", tmp_path / "runs" / "done", "-q").exit_code == 0
    early = write_config(
        tiny_experiment(
            name="flat",
            optimizer={"name": "sgd", "lr": 1e-9, "momentum": 0},
            trainer={"epochs": 10, "early_stopping": {"patience": 1, "min_delta": 0.01}},
        ),
        name="early.yaml",
    )
    assert cli("train", early, "--run-dir", tmp_path / "runs" / "early", "-q").exit_code == 0
    stopped = tiny_experiment(name="stopped")
    stopped.update(misbehaving_loss(tmp_path, "sigterm", 20))  # SIGTERM in epoch 2
    result = cli(
        "train",
        write_config(stopped, name="stop.yaml"),
        "--run-dir",
        tmp_path / "runs" / "cut",
        "-q",
    )
    assert result.exit_code == 143
    broken = tiny_experiment(name="broken", data={"name": "image_folder", "root": str(tmp_path)})
    assert (
        cli(
            "train", write_config(broken, name="b.yaml"), "--run-dir", tmp_path / "runs" / "x"
        ).exit_code
        == 2
    )
    assert not (tmp_path / "runs" / "x").exists()  # a bad config is no run at all

    listed = cli("runs", tmp_path / "runs", "--json")
    assert listed.exit_code == 0, listed.output
    runs = {run["run_id"]: run for run in json.loads(listed.stdout)}
    assert set(runs) == {"done", "early", "cut"}
    assert runs["done"]["status"] == "completed"
    assert (runs["done"]["epochs_done"], runs["done"]["epochs_planned"]) == (3, 3)
    assert runs["done"]["monitor"] == "val/accuracy" and runs["done"]["best"] > 0.85
    assert runs["done"]["test_accuracy"] > 0.85 and runs["done"]["wall_seconds"] > 0
    assert runs["early"]["status"] == "early_stopped" and runs["early"]["epochs_done"] == 2
    assert runs["cut"]["status"] == "interrupted" and runs["cut"]["epochs_done"] == 1
    assert runs["cut"]["test_accuracy"] is None

    # A resumed run adds a session; the time is the sum of both.
    assert (
        cli("resume", tmp_path / "runs" / "cut", "--set", "loss.at_call=1000000", "-q").exit_code
        == 0
    )
    assert [s["status"] for s in read_status(tmp_path / "runs" / "cut")["sessions"]] == [
        "interrupted",
        "completed",
    ]
    table = cli("runs", tmp_path / "runs").stdout.splitlines()
    assert table[0] == "3 runs under " + str(tmp_path / "runs")
    assert table[1].split() == [
        "name",
        "run",
        "status",
        "epochs",
        "best",
        "test",
        "acc",
        "time",
        "started",
    ]
    assert sum("completed" in line for line in table) == 2
    assert sum("early-stopped" in line for line in table) == 1
    only = cli("runs", tmp_path / "runs", "--name", "stop*", "--json").stdout
    assert [run["name"] for run in json.loads(only)] == ["stopped"]


def test_a_run_killed_without_a_word_is_interrupted_and_a_live_one_running(
    cli, write_config, tmp_path: Path
) -> None:
    assert cli("train", write_config(), "--run-dir", tmp_path / "run", "-q").exit_code == 0
    status = read_status(tmp_path / "run")
    status["sessions"][-1] = {**status["sessions"][-1], "status": "running"}
    status["sessions"][-1].pop("ended")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    cases = [(int(dead.stdout), "interrupted"), (os.getpid(), "running")]
    cases += [(0, "interrupted"), (None, "interrupted")]  # no process recorded: not alive
    for pid, expected in cases:
        status["sessions"][-1]["pid"] = pid
        if pid is None:
            status["sessions"][-1].pop("pid")
        (tmp_path / "run" / "run.json").write_text(json.dumps(status))
        [run] = json.loads(cli("runs", tmp_path / "run", "--json").stdout)
        assert run["status"] == expected


def test_a_failed_run_says_why(cli, write_config, tmp_path: Path) -> None:
    config = write_config(**misbehaving_loss(tmp_path, "nan", 21))
    assert cli("train", config, "--run-dir", tmp_path / "run").exit_code == 1
    [run] = json.loads(cli("runs", tmp_path / "run", "--json").stdout)
    assert run["status"] == "failed" and run["epochs_done"] == 1
    detail = read_status(tmp_path / "run")["sessions"][-1]["detail"]
    assert detail.startswith("RunFailed: the training loss became non-finite")


def test_runs_of_a_missing_folder_is_a_user_error(cli, tmp_path: Path) -> None:
    result = cli("runs", tmp_path / "nowhere")
    assert result.exit_code == 2 and "is not a folder" in result.stderr


@pytest.mark.slow
def test_runs_never_imports_torch(cli, write_config, tmp_path: Path) -> None:
    assert cli("train", write_config(), "--run-dir", tmp_path / "runs" / "a", "-q").exit_code == 0
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['trainkit', 'runs', {str(tmp_path / 'runs')!r}]\n"
        "try:\n"
        "    runpy.run_module('trainkit', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "completed" in result.stdout
