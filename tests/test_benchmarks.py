"""The benchmark's hand-written loop must keep training the same models trainkit builds."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_experiment
from trainkit.config import validate
from trainkit.registry import MODELS, load_components

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def reference() -> dict:
    return runpy.run_path(str(BENCHMARKS / "reference_loop.py"))


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        ({"name": "mlp", "hidden": [256]}, (1, 28, 28)),
        ({"name": "lenet"}, (1, 28, 28)),
        ({"name": "resnet34"}, (3, 32, 32)),
    ],
)
def test_reference_models_match_trainkit(reference: dict, model: dict, shape: tuple) -> None:
    load_components()
    params = validate(tiny_experiment(model=model)).model
    ours = MODELS.build(params, shape, 10).state_dict()
    theirs = reference["build_model"](model, shape, 10).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]


def test_reference_loop_trains_the_quickstart(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
    monkeypatch.setattr(sys, "argv", ["reference_loop.py", str(config), "--epochs", "2"])
    runpy.run_path(str(BENCHMARKS / "reference_loop.py"), run_name="__main__")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["epoch_times"]) == 2 and len(result["val_accuracy"]) == 2
    assert result["test_accuracy"] > 0.9
    Path(result["checkpoint"]).unlink()
    Path(result["checkpoint"]).parent.rmdir()
