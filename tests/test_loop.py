"""The training loop's own rules: non-finite losses, early stopping, accumulation, clipping."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import misbehaving_loss, tiny_experiment
from trainkit.config.schema import validate
from trainkit.training.checkpoint import read_payload
from trainkit.training.run import train


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    cli, write_config, tmp_path: Path
) -> None:
    # 12 training steps an epoch; the probe and epoch 1's evaluation add 3 calls.
    config = write_config(**misbehaving_loss(tmp_path, "nan", 21), trainer={"epochs": 4})
    result = cli("train", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 1
    assert "non-finite" in result.stderr and "Traceback" not in result.output
    saved = read_payload(tmp_path / "run" / "last.pt")
    assert saved["state"]["epoch"] == 1
    assert all(torch.isfinite(w).all() for w in saved["model"].values())
    assert not (tmp_path / "run" / "epoch_0002.pt").exists()


def test_early_stopping_ends_when_the_monitor_stalls(tmp_path: Path) -> None:
    config = validate(
        tiny_experiment(
            optimizer={"name": "sgd", "lr": 1e-9, "momentum": 0},  # nothing improves
            trainer={"epochs": 10, "early_stopping": {"patience": 2, "min_delta": 0.01}},
        )
    )
    result = train(config, run_dir=tmp_path / "run", quiet=True)
    assert result.status == "early_stopped"
    assert result.epoch == 3  # the first evaluation sets the best, two more fail to beat it


def test_best_checkpoint_follows_the_monitor(tmp_path: Path) -> None:
    config = validate(tiny_experiment(trainer={"epochs": 4}, checkpoint={"monitor": "val/loss"}))
    train(config, run_dir=tmp_path / "run", quiet=True)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val/loss"] for r in records if "val/loss" in r]
    best = read_payload(tmp_path / "run" / "best.pt")
    assert best["metrics"]["val/loss"] == min(val)
    assert best["state"]["best"] == min(val)


def final_weights(tmp_path: Path, name: str, **sections: object) -> dict[str, torch.Tensor]:
    config = validate(tiny_experiment(**sections))
    train(config, run_dir=tmp_path / name, quiet=True)
    return read_payload(tmp_path / name / "last.pt")["model"]


def test_gradient_accumulation_matches_the_larger_batch(tmp_path: Path) -> None:
    common = {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0}, "scheduler": None}
    big = final_weights(tmp_path, "big", data={"batch_size": 40}, trainer={"epochs": 2}, **common)
    accumulated = final_weights(
        tmp_path,
        "acc",
        data={"batch_size": 20},
        trainer={"epochs": 2, "accumulate_steps": 2},
        **common,
    )
    for name, tensor in big.items():
        torch.testing.assert_close(accumulated[name], tensor, rtol=1e-5, atol=1e-6)


def test_gradient_clipping_changes_the_update(tmp_path: Path) -> None:
    plain = final_weights(tmp_path, "plain", optimizer={"name": "sgd", "lr": 0.5})
    clipped = final_weights(
        tmp_path, "clip", optimizer={"name": "sgd", "lr": 0.5}, trainer={"grad_clip": 0.01}
    )
    assert any(not torch.equal(plain[k], clipped[k]) for k in plain)


def test_same_config_same_seed_same_weights(tmp_path: Path) -> None:
    first = final_weights(tmp_path, "a")
    second = final_weights(tmp_path, "b")
    other_seed = final_weights(tmp_path, "c", seed=4)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other_seed[k]) for k in first)


def test_evaluation_only_every_n_epochs(tmp_path: Path) -> None:
    config = validate(tiny_experiment(trainer={"epochs": 5, "eval_every_epochs": 2}))
    train(config, run_dir=tmp_path / "run", quiet=True)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "val/loss" in r] == [2, 4, 5]


def test_bf16_autocast_trains_on_cpu(tmp_path: Path) -> None:
    weights = final_weights(tmp_path, "run", trainer={"precision": "bf16", "epochs": 1})
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_failure_before_the_first_checkpoint_says_nothing_was_saved(
    cli, write_config, tmp_path: Path
) -> None:
    config = write_config(**misbehaving_loss(tmp_path, "nan", 4))
    result = cli("train", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 1
    assert "No checkpoint had been written yet, so nothing was saved" in result.stderr
    assert "last good checkpoint" not in result.stderr


HUNGRY_MODEL = """
import torch
from trainkit.plugin import register_model


class Hungry(torch.nn.Module):
    def forward(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")


@register_model("tk_hungry")
def build(params, input_shape, num_outputs):
    '''A model too large for any device.'''
    return Hungry()
"""


def test_running_out_of_memory_at_start_is_not_called_a_shape_mismatch(
    cli, write_config, tmp_path: Path
) -> None:
    (tmp_path / "tk_hungry.py").write_text(HUNGRY_MODEL)
    config = write_config(plugins=["tk_hungry"], model={"name": "tk_hungry"})
    result = cli("train", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 2
    assert "ran out of memory on cpu with only two samples" in result.stderr
    assert "does not fit data" not in result.stderr and not (tmp_path / "run").exists()
