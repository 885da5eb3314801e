"""A checkpoint is usable on its own: from any folder, after the data changed, from old versions."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.disk_datasets import write_image_folder
from tests.helpers import tiny_experiment
from trainkit.config.schema import validate
from trainkit.training.checkpoint import read_payload
from trainkit.training.run import train

PLUGIN = '''
from trainkit.plugin import register_model


@register_model("tk_two_layer")
def build(params, input_shape, num_outputs):
    """A plugin model."""
    from torch import nn

    return nn.Sequential(nn.Linear(input_shape[0], 8), nn.ReLU(), nn.Linear(8, num_outputs))
'''


def test_a_plugin_run_is_used_from_any_folder(
    cli, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "tk_plugin_model.py").write_text(PLUGIN)
    config = write_config(plugins=["tk_plugin_model"], model={"name": "tk_two_layer"})
    monkeypatch.chdir(project)
    assert cli("train", config, "--run-dir", tmp_path / "run", "-q").exit_code == 0
    assert read_payload(tmp_path / "run" / "last.pt")["plugins"] == {
        "tk_plugin_model": str(project)
    }

    def forget() -> None:  # what a new process would know: nothing of the plugin
        sys.modules.pop("tk_plugin_model", None)
        while str(project) in sys.path:
            sys.path.remove(str(project))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    forget()
    assert cli("eval", "--ckpt", tmp_path / "run").exit_code == 0
    forget()
    rows = elsewhere / "rows.csv"
    rows.write_text("0.5,-0.5\n")
    assert cli("predict", "--ckpt", tmp_path / "run", rows).exit_code == 0
    forget()
    (project / "tk_plugin_model.py").rename(project / "moved.py")
    result = cli("eval", "--ckpt", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot import 'tk_plugin_model'" in result.stderr
    assert f"recorded it as loaded from {project}" in result.stderr.replace("\n", "")


def test_eval_normalizes_with_the_stored_statistics_after_the_images_change(
    cli, tmp_path: Path
) -> None:
    root = write_image_folder(tmp_path / "pets", per_class=8)
    config = tiny_experiment(
        model={"name": "lenet"},
        data={"name": "image_folder", "root": str(root), "image_size": 16, "workers": 0},
        trainer={"epochs": 1},
    )
    train(validate(config), run_dir=tmp_path / "run", quiet=True)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (logged,) = [r for r in records if "test/loss" in r]
    # New, much brighter training images change the folder's mean and std ...
    white = np.full((20, 20, 3), 250, dtype=np.uint8)
    for i in range(8):
        Image.fromarray(white).save(root / "train" / "cat" / f"new{i}.png")
    result = cli("eval", "--ckpt", tmp_path / "run" / "last.pt", "--out", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    # ... but the model is scored with the normalization it learned with.
    assert json.loads((tmp_path / "e.json").read_text())["loss"] == pytest.approx(
        logged["test/loss"], rel=1e-9
    )
    stored = read_payload(tmp_path / "run" / "last.pt")["inputs"]
    assert stored["class_names"] == ["cat", "dog", "owl"]
    assert stored["image"]["size"] == [16, 16] and stored["image"]["channels"] == 3
    for split in ("train", "test"):  # another set of classes
        (root / split / "owl").rename(root / split / "zebra")
    renamed = cli("eval", "--ckpt", tmp_path / "run" / "last.pt")
    assert renamed.exit_code == 2 and "not the ones the model was trained on" in renamed.stderr


def test_format_1_checkpoints_still_evaluate_resume_and_predict(
    cli, write_config, tmp_path: Path
) -> None:
    assert cli("train", write_config(), "--run-dir", tmp_path / "run", "-q").exit_code == 0
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "run", old)
    for path in old.glob("*.pt"):
        payload = read_payload(path)
        payload["format"] = 1
        del payload["inputs"], payload["plugins"], payload["state"]["logged"]
        path.unlink()
        torch.save(payload, path)
    scores = cli("eval", "--ckpt", old / "last.pt", "--out", tmp_path / "old.json")
    assert scores.exit_code == 0, scores.output
    assert (
        cli(
            "eval", "--ckpt", tmp_path / "run" / "last.pt", "--out", tmp_path / "new.json"
        ).exit_code
        == 0
    )
    assert (
        json.loads((tmp_path / "old.json").read_text())["loss"]
        == json.loads((tmp_path / "new.json").read_text())["loss"]
    )
    rows = tmp_path / "rows.csv"
    rows.write_text("0.1,0.2\n")
    predicted = cli("predict", "--ckpt", old / "last.pt", rows)
    assert predicted.exit_code == 0 and "checkpoint format 1" in predicted.stderr
    resumed = cli("resume", old, "--set", "trainer.epochs=4", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert read_payload(old / "last.pt")["format"] == 2  # what it writes from now on


def test_a_file_that_is_not_a_trainkit_checkpoint_says_what_it_is(cli, tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2)}, tmp_path / "w.pt")
    result = cli("eval", "--ckpt", tmp_path / "w.pt")
    assert result.exit_code == 2 and "a plain state_dict of 2 tensors" in result.stderr
    assert "model.init_from" in result.stderr
    torch.save([1, 2, 3], tmp_path / "list.pt")
    listed = cli("predict", "--ckpt", tmp_path / "list.pt", tmp_path)
    assert listed.exit_code == 2 and "it holds a list" in listed.stderr
    torch.save({"format": 2, "config": {}}, tmp_path / "partial.pt")
    partial = cli("eval", "--ckpt", tmp_path / "partial.pt")
    assert partial.exit_code == 2 and "it lacks model, state" in partial.stderr


def test_eval_and_loading_a_model_leave_the_callers_random_state_alone(tmp_path: Path) -> None:
    """Library calls that only use a model do not reseed, consume or reconfigure the
    process's generators and kernels (training seeds them; scoring must not)."""
    import random

    from trainkit.inference.evaluate import evaluate_checkpoint
    from trainkit.inference.trained_model import load_trained_model

    config = validate(tiny_experiment(model={"name": "mlp", "hidden": [8], "dropout": 0.5}))
    train(config, run_dir=tmp_path / "run", quiet=True)
    for use in (
        lambda: evaluate_checkpoint(tmp_path / "run"),
        lambda: load_trained_model(tmp_path / "run", device="cpu"),
    ):
        torch.manual_seed(1234)
        random.seed(1234)
        np.random.seed(1234)
        torch.backends.cudnn.benchmark = False
        expected = (torch.rand(3), random.random(), np.random.rand())
        torch.manual_seed(1234)
        random.seed(1234)
        np.random.seed(1234)
        use()
        assert torch.equal(torch.rand(3), expected[0])
        assert (random.random(), np.random.rand()) == expected[1:]
        assert torch.backends.cudnn.benchmark is False
