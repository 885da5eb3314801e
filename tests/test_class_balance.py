"""loss.class_weights and data.balanced: imbalanced classes, weighted or resampled,
seeded, resumed exactly, and scored by eval as in training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from tests.helpers import NEVER, assert_same_run, misbehaving_loss, tiny_experiment
from trainkit.config.loading import CommandLine
from trainkit.config.schema import validate
from trainkit.data.batching import BatchPlan, balancing_weights
from trainkit.training.build import build
from trainkit.training.checkpoint import read_payload
from trainkit.training.resume import resume
from trainkit.training.run import train


def imbalanced_table(path: Path, n: int = 500, rare: float = 0.1) -> Path:
    """Two numbers and a label that is 'rare' for about `rare` of the rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    label = np.where(x[:, 0] > np.quantile(x[:, 0], 1 - rare), "rare", "common")
    lines = ["a,b,label", *(f"{a:.5f},{b:.5f},{c}" for (a, b), c in zip(x, label, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return path


def experiment(path: Path, loss: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
    return tiny_experiment(
        data={"name": "table", "path": str(path), "target": "label", "batch_size": 20, **data},
        loss=loss or {"name": "cross_entropy"},
        trainer={"epochs": 3},
    )


@pytest.mark.parametrize("loss_name", ["cross_entropy", "bce"])
def test_auto_class_weights_are_inverse_class_frequency(tmp_path: Path, loss_name: str) -> None:
    path = imbalanced_table(tmp_path / "t.csv")
    raw = experiment(path, {"name": loss_name, "class_weights": "auto"})
    experiment_ = build(validate(raw))
    counts = experiment_.spec.class_counts
    targets = experiment_.data.train_targets()
    assert counts == tuple(torch.bincount(targets, minlength=2).tolist())
    assert counts[1] < counts[0] / 5  # rare is rare
    weights = torch.tensor([sum(counts) / (2 * n) for n in counts])
    outputs = torch.randn(8, 2)
    labels = torch.tensor([0, 1, 1, 0, 0, 0, 1, 0])
    loss = experiment_.parts.objective.loss(outputs, labels)
    if loss_name == "cross_entropy":
        expected = F.cross_entropy(outputs, labels, weight=weights)
    else:
        per_row = F.binary_cross_entropy_with_logits(
            outputs, F.one_hot(labels, 2).float(), reduction="none"
        ).mean(1)
        expected = (per_row * weights[labels]).sum() / weights[labels].sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    unweighted = build(validate(experiment(path, {"name": loss_name})))
    assert unweighted.parts.objective.loss(outputs, labels).item() != pytest.approx(loss.item())


def test_eval_weights_the_loss_with_the_stored_counts(cli, tmp_path: Path) -> None:
    path = imbalanced_table(tmp_path / "t.csv")
    raw = experiment(path, {"name": "cross_entropy", "class_weights": "auto"})
    train(validate(raw), run_dir=tmp_path / "run", quiet=True)
    stored = read_payload(tmp_path / "run" / "last.pt")["inputs"]["class_counts"]
    assert len(stored) == 2 and sum(stored) == 360  # 500 - 100 test - 40 validation
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-2])
    result = cli("eval", "--ckpt", tmp_path / "run" / "last.pt", "--split", "val", "--out",
                 tmp_path / "e.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    scored = json.loads((tmp_path / "e.json").read_text())
    assert scored["loss"] == pytest.approx(last["val/loss"], rel=1e-6)


def test_a_list_of_weights_needs_one_per_class(cli, tmp_path: Path) -> None:
    path = imbalanced_table(tmp_path / "t.csv")
    raw = experiment(path, {"name": "cross_entropy", "class_weights": [1.0, 2.0, 3.0]})
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(raw))
    result = cli("train", tmp_path / "e.yaml", "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "has 3 values, but the data has 2 classes" in " ".join(result.stderr.split())
    assert not (tmp_path / "run").exists()


def test_balanced_epochs_draw_every_class_alike_from_seed_and_epoch() -> None:
    targets = torch.tensor([0] * 900 + [1] * 100)
    weights = balancing_weights(targets)
    plan = BatchPlan(1000, 50, shuffle=True, seed=3, weights=weights)
    order = plan.order(0)
    assert len(order) == 1000 and len(plan) == 20
    share = targets[order].float().mean().item()
    assert 0.45 < share < 0.55  # 10% of the split, half of the draws
    assert torch.equal(order, BatchPlan(1000, 50, shuffle=True, seed=3, weights=weights).order(0))
    assert not torch.equal(order, plan.order(1))


def test_a_stopped_balanced_run_resumes_exactly(tmp_path: Path) -> None:
    path = imbalanced_table(tmp_path / "t.csv")

    def config(stop_at: int) -> dict[str, Any]:
        raw = experiment(path, balanced=True)
        raw.update(misbehaving_loss(tmp_path, "sigterm", stop_at))
        return raw

    whole = train(validate(config(NEVER)), run_dir=tmp_path / "whole", quiet=True)
    assert whole.status == "completed"
    # 360 training rows in batches of 20: 18 steps an epoch; call 25 is in epoch 2.
    stopped = train(validate(config(25)), run_dir=tmp_path / "cut", quiet=True)
    assert stopped.status == "interrupted" and 18 < stopped.step < 36
    resume(tmp_path / "cut", CommandLine([f"loss.at_call={NEVER}"]), quiet=True)
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


def test_balanced_needs_classes(cli, write_config, tmp_path: Path) -> None:
    raw = tiny_experiment(
        data={"name": "synthetic_linear", "balanced": True}, loss={"name": "mse"},
        model={"name": "linear"},
    )  # fmt: skip
    result = cli("train", write_config(raw), "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and "a regression set has none" in result.stderr
