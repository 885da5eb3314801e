"""A disk that fills up, at start or mid-run: one message, nothing lost, resume once freed."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from tests.helpers import misbehaving_loss, tiny_experiment
from trainkit.training import checkpoint
from trainkit.training.checkpoint import read_payload

# About 400 KB a checkpoint (weights and momentum), 12 steps an epoch.
EXPERIMENT = tiny_experiment(
    model={"name": "mlp", "hidden": [256]},
    data={"name": "synthetic_logistic", "n_features": 200},
    trainer={"epochs": 4},
)


def test_a_disk_that_fills_mid_run_ends_it_cleanly_and_resume_finishes_it(
    cli, write_config, small_disk, tmp_path: Path
) -> None:
    disk = small_disk(4096)
    # call 1 is the probe, then 12 steps and 2 validation batches an epoch: in epoch 3
    raw = dict(
        EXPERIMENT, **misbehaving_loss(tmp_path, "fill_disk", 1 + 2 * 14 + 5, disk=str(disk))
    )
    run = disk / "run"
    result = cli("train", write_config(raw), "--run-dir", run)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Exception in thread" not in result.output
    message = result.stderr
    assert "No space left on device" in message and "free some space" in message
    assert f"trainkit resume {run}" in message
    assert read_payload(run / "last.pt")["state"]["epoch"] == 2  # the last checkpoint written whole
    assert not list(run.glob(".*.tmp"))  # no temporary file left behind
    (disk / "filler").unlink()
    resumed = cli("resume", run, "--set", "loss.at_call=1000000", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert read_payload(run / "last.pt")["state"]["epoch"] == 4


def test_a_disk_full_at_start_leaves_no_half_made_run(
    cli, write_config, small_disk, tmp_path: Path
) -> None:
    disk = small_disk(256)
    with (disk / "filler").open("wb") as filler, pytest.raises(OSError):
        while True:
            filler.write(b"\0" * 65536)
            filler.flush()
    result = cli("train", write_config(EXPERIMENT), "--run-dir", disk / "run")
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.stderr and "nothing was saved" in result.stderr
    assert "Traceback" not in result.output
    assert not (disk / "run").exists()


def test_a_read_only_place_is_refused_before_any_work(
    cli, write_config, small_disk, tmp_path: Path
) -> None:
    disk = small_disk(64, read_only=True)
    result = cli("train", write_config(EXPERIMENT), "--run-dir", disk / "run")
    assert result.exit_code == 2 and "is not writable" in result.stderr
    root = cli("train", write_config(EXPERIMENT), "--set", f"checkpoint.root={disk}")
    assert root.exit_code == 2 and "checkpoint.root" in root.stderr


def test_torch_reporting_a_full_disk_as_runtime_error_is_a_write_failure(
    cli, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save raises RuntimeError('... unexpected pos ...') when the disk fills."""
    saves = [0]
    real_save = torch.save

    def save(obj: object, handle: object) -> None:
        saves[0] += 1
        if saves[0] == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704")
        real_save(obj, handle)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    run = tmp_path / "run"
    result = cli("train", write_config(EXPERIMENT), "--run-dir", run)
    assert result.exit_code == 1 and "could not write a checkpoint" in result.stderr
    assert (
        "unexpected pos" in result.stderr
        and "checkpoints written before are intact" in result.stderr
    )
    assert read_payload(run / "last.pt")["state"]["epoch"] == 1
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "epoch_0001.pt", "last.pt"]


def test_a_metrics_write_that_fails_is_a_write_failure(
    cli, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainkit.training import metrics_log

    real_dumps = metrics_log.json.dumps
    records = [0]

    def dumps(value: object, *args: object, **kwargs: object) -> str:
        if isinstance(value, dict) and value.get("scope") == "interval":
            records[0] += 1
            if records[0] == 4:  # in epoch 2
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_dumps(value, *args, **kwargs)

    monkeypatch.setattr(metrics_log.json, "dumps", dumps)
    result = cli("train", write_config(EXPERIMENT), "--run-dir", tmp_path / "run")
    assert result.exit_code == 1
    assert "could not write the metrics (metrics.jsonl, TensorBoard events)" in result.stderr
    assert "checkpoints written before are intact" in result.stderr
    early = cli("train", write_config(EXPERIMENT), "--run-dir", tmp_path / "early")
    assert early.exit_code == 0  # (records counts on: this run logs without failing)
