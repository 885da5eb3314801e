"""Data-parallel training: 2 worker processes (gloo, CPU) under torchrun's agent.

Each test launches `trainkit ... --nproc 2` as a subprocess; run them alone with
`pytest -m distributed`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import tiny_experiment
from trainkit.training.checkpoint import read_payload

# With pytest-xdist one worker runs all the torchrun tests, one after another: two jobs of
# 2 processes at once would slow each other toward their collective timeout.
pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.xdist_group("torchrun")]

# 360 training samples: 15 global batches of 24 (12 per process), none left over, in
# optimizer steps of 2 batches (ranks hold their gradients back on the first).
EXPERIMENT = tiny_experiment(
    data={"n_train": 400, "batch_size": 12},
    scheduler={"name": "onecycle"},
    trainer={"epochs": 2, "accumulate_steps": 2, "ema": {"decay": 0.8}},  # scored: the average
    logging={"log_every_steps": 5, "tensorboard": False},
)


def trainkit(*args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "trainkit", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(run: Path) -> dict[str, torch.Tensor]:
    """The trained weights, and the weight average as `ema.*`."""
    payload = read_payload(run / "last.pt")
    return {**payload["model"], **{f"ema.{k}": v for k, v in payload.get("ema", {}).items()}}


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_with_the_same_global_batch(
    write_config, cli, tmp_path: Path
) -> None:
    config = write_config(EXPERIMENT)
    result = trainkit("train", config, "--nproc", 2, "--run-dir", tmp_path / "two")
    assert result.stdout.count("completed:") == 1  # rank 0 alone reports
    assert "batches of 24 samples (12 per process x 2 processes) per epoch" in result.stdout
    one = cli("train", config, "--set", "data.batch_size=24", "--run-dir", tmp_path / "one", "-q")
    assert one.exit_code == 0, one.output

    two_weights, one_weights = weights(tmp_path / "two"), weights(tmp_path / "one")
    for name, value in one_weights.items():
        torch.testing.assert_close(two_weights[name], value, rtol=0, atol=1e-6)
    two_logged, one_logged = records(tmp_path / "two"), records(tmp_path / "one")
    assert [r["step"] for r in two_logged] == [r["step"] for r in one_logged]
    assert two_logged[-1]["test/accuracy"] == one_logged[-1]["test/accuracy"]

    # The figures the 2-process run logged are over whole splits: eval agrees.
    final_val = [r for r in two_logged if "val/loss" in r][-1]
    for split, logged in (("val", final_val), ("test", two_logged[-1])):
        out = tmp_path / f"{split}.json"
        scored = cli("eval", "--ckpt", tmp_path / "two" / "last.pt", "--split", split, "--out", out)
        assert scored.exit_code == 0, scored.output
        scores = json.loads(out.read_text())
        # Shards batch the split differently: the float32 batch means round differently.
        assert scores["loss"] == pytest.approx(logged[f"{split}/loss"], rel=1e-6)
        assert scores["accuracy"] == logged[f"{split}/accuracy"]


def test_a_stopped_two_process_run_resumes_to_the_same_weights(
    write_config, cli, tmp_path: Path
) -> None:
    long = tiny_experiment(
        data={"n_train": 2000, "batch_size": 12},
        scheduler={"name": "onecycle"},
        trainer={"epochs": 6},
        logging={"log_every_steps": 5, "tensorboard": False},
    )
    config = write_config(long)
    trainkit("train", config, "--nproc", 2, "--run-dir", tmp_path / "whole")

    stopped = tmp_path / "stopped"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "trainkit", "train", config, "--nproc", "2", "--run-dir", stopped],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while (
        not (stopped / "metrics.jsonl").is_file()
        or "val/loss" not in (stopped / "metrics.jsonl").read_text()
    ):
        assert launcher.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    launcher.send_signal(signal.SIGTERM)
    out, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert out.count("stopped by SIGTERM") == 1
    state = read_payload(stopped / "last.pt")["state"]
    assert 1 <= state["epoch"] < 6

    trainkit("resume", stopped, "--nproc", 2)
    resumed, whole = weights(stopped), weights(tmp_path / "whole")
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6)

    # One process can take over a 2-process run: from its last completed epoch, warned.
    onward = cli("resume", stopped, "--set", "trainer.epochs=7")
    assert onward.exit_code == 0, onward.output
    assert "trained by 2 process(es) and resumes with 1" in onward.stderr


def test_a_failing_worker_reports_its_error_once(write_config, tmp_path: Path) -> None:
    config = write_config(
        tiny_experiment(data={"name": "mnist", "root": str(tmp_path / "nowhere")})
    )
    result = trainkit("train", config, "--nproc", 2, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("error:") == 1
    assert "cannot read MNIST" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_a_streamed_folder_trains_alike_in_two_processes_and_one(
    write_config, cli, tmp_path: Path
) -> None:
    """Each rank streams only its share of every global batch (with per-image crops drawn
    from (seed, epoch, sample)), and reads its shard of the evaluation splits."""
    from tests.disk_datasets import write_image_folder

    root = write_image_folder(tmp_path / "pets", per_class=16, size=20)
    data = {
        "name": "image_folder",
        "root": str(root),
        "image_size": 16,
        "in_memory": False,
        "augment": "random_resized_crop",
        "workers": 1,
        "batch_size": 6,
        "val_fraction": 0.125,  # 42 training images: 7 global batches of 6 x 2 processes
    }
    config = write_config(
        tiny_experiment(
            model={"name": "lenet"},
            data=data,
            optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
            trainer={"epochs": 2},
            logging={"log_every_steps": 2, "tensorboard": False},
        )
    )
    result = trainkit("train", config, "--nproc", 2, "--run-dir", tmp_path / "two")
    assert "data: image_folder, streaming (" in result.stdout
    one = cli("train", config, "--set", "data.batch_size=12", "--run-dir", tmp_path / "one", "-q")
    assert one.exit_code == 0, one.output
    two_weights, one_weights = weights(tmp_path / "two"), weights(tmp_path / "one")
    for name, value in one_weights.items():
        torch.testing.assert_close(two_weights[name], value, rtol=0, atol=1e-5)
    assert (
        records(tmp_path / "two")[-1]["test/accuracy"]
        == records(tmp_path / "one")[-1]["test/accuracy"]
    )
