"""trainkit export: every built-in model in every format, checked here again independently."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.disk_datasets import write_cifar10, write_image_folder, write_mnist
from tests.helpers import tiny_experiment
from trainkit.config.schema import validate
from trainkit.inference.trained_model import load_trained_model
from trainkit.training.run import train

SYNTHETIC = {"name": "synthetic_logistic", "n_train": 64, "n_test": 16, "batch_size": 16}

MODELS = {
    "mlp": ({"name": "mlp", "hidden": [8], "dropout": 0.1}, SYNTHETIC, "cross_entropy"),
    "linear": ({"name": "linear"}, {**SYNTHETIC, "name": "synthetic_linear"}, "mse"),
    "logistic": ({"name": "logistic"}, SYNTHETIC, "bce"),
    "lenet": ({"name": "lenet"}, {"name": "mnist", "root": "mnist"}, "cross_entropy"),
    "convnet": (
        {"name": "convnet", "conv": [{"channels": 4}], "hidden": [8], "batch_norm": True},
        {"name": "mnist", "root": "mnist", "standardize": False},
        "cross_entropy",
    ),
    "resnet34": ({"name": "resnet34"}, {"name": "cifar10", "root": "cifar"}, "cross_entropy"),
    "cifar_fast": (
        {"name": "cifar_fast", "widths": [8, 8, 16, 16]},
        {"name": "cifar10", "root": "cifar"},
        "cross_entropy",
    ),
    "torchvision": (
        {"name": "torchvision", "arch": "squeezenet1_1"},
        {"name": "image_folder", "root": "folder", "workers": 0},
        "cross_entropy",
    ),
}


def test_every_built_in_model_is_covered() -> None:
    from trainkit.config.registry import MODELS as REGISTERED

    assert set(REGISTERED.names()) == set(MODELS)


# The large networks (and ONNX's seconds per model) belong to the full suite.
SLOW_EXPORTS = {"resnet34", "torchvision", "convnet", "linear", "lenet", "logistic", "cifar_fast"}


@pytest.mark.parametrize(
    "model",
    [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_EXPORTS else m for m in sorted(MODELS)],
)
def test_every_model_exports_in_all_formats(
    model: str, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime
    import torchvision.datasets.cifar as cifar
    from safetensors.torch import load_file, safe_open

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    roots = {
        "mnist": write_mnist(tmp_path / "mnist", n_train=40, n_test=10),
        "cifar": write_cifar10(tmp_path / "cifar", per_batch=4, n_test=10),
        "folder": write_image_folder(tmp_path / "folder", per_class=4, size=24),
    }
    params, data, loss = MODELS[model]
    if "root" in data:
        data = {**data, "root": str(roots[data["root"]]), "batch_size": 8}
    config = tiny_experiment(model=params, data=data, loss={"name": loss}, trainer={"epochs": 1})
    config["logging"] = {"tensorboard": False}
    train(validate(config), run_dir=tmp_path / "run", quiet=True)

    formats = ("--format", "onnx", "--format", "torch-export", "--format", "safetensors")
    result = cli("export", "--ckpt", tmp_path / "run", *formats)
    assert result.exit_code == 0, result.output
    out = tmp_path / "run" / "export"
    assert sorted(p.name for p in out.iterdir()) == [
        "model.json",
        "model.onnx",
        "model.pt2",
        "model.safetensors",
    ]
    card = json.loads((out / "model.json").read_text())
    assert card["files"] == {
        "onnx": "model.onnx",
        "torch-export": "model.pt2",
        "safetensors": "model.safetensors",
    }
    assert all(c["max_abs_diff"] <= c["tolerance"] for c in card["checks"].values())

    # Run each artefact again here, on a batch of 5 (export traced a batch of 2).
    trained = load_trained_model(tmp_path / "run", device="cpu", precision="fp32")
    module = trained.model.to(memory_format=torch.contiguous_format)
    shape = tuple(card["input"]["shape"][1:])
    assert shape == trained.spec.input_shape
    inputs = torch.randn(5, *shape)
    with torch.no_grad():
        expected = module(inputs)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    (onnx_out,) = session.run(None, {"input": inputs.numpy()})
    torch.testing.assert_close(torch.from_numpy(onnx_out), expected, rtol=1e-4, atol=1e-4)
    program = torch.export.load(out / "model.pt2").module()
    with torch.no_grad():
        torch.testing.assert_close(program(inputs), expected, rtol=1e-5, atol=1e-5)
    weights = load_file(out / "model.safetensors")
    stored = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    assert weights.keys() == stored.keys()
    assert all(torch.equal(weights[k], stored[k]) for k in stored)
    with safe_open(out / "model.safetensors", "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["trainkit_config"])["model"]["name"] == model
    assert json.loads(metadata["trainkit_inputs"]) == card["inputs"]


WEIRD_OP_PLUGIN = '''
import torch
from torch import nn
from trainkit.plugin import register_model


@torch.library.custom_op("tk_export::weird", mutates_args=())
def weird(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@weird.register_fake
def _(x):
    return torch.empty_like(x)


class Weird(nn.Module):
    def __init__(self, features, outputs):
        super().__init__()
        self.linear = nn.Linear(features, outputs)

    def forward(self, x):
        return self.linear(weird(x))


@register_model("tk_weird")
def build(params, input_shape, num_outputs):
    """A model with an operator ONNX has no translation for."""
    return Weird(input_shape[0], num_outputs)
'''


@pytest.mark.slow
def test_an_unexportable_model_names_the_operator_and_writes_nothing(
    cli, write_config, tmp_path: Path
) -> None:
    (tmp_path / "tk_weird_model.py").write_text(WEIRD_OP_PLUGIN)
    config = write_config(plugins=["tk_weird_model"], model={"name": "tk_weird"})
    assert cli("train", config, "--run-dir", tmp_path / "run", "-q").exit_code == 0
    result = cli("export", "--ckpt", tmp_path / "run", "--format", "onnx", "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert "export to onnx failed at operator tk_export.weird.default" in result.stderr
    assert "\x1b[" not in result.stderr and "Traceback" not in result.output
    assert not list((tmp_path / "x").glob("*.onnx")) and not list((tmp_path / "x").glob(".*"))
    # torch.export knows the operator, and safetensors never depends on operators; the
    # card describes the files that passed even when a later format fails.
    mixed = ("--format", "safetensors", "--format", "onnx", "--out", tmp_path / "x")
    assert cli("export", "--ckpt", tmp_path / "run", *mixed).exit_code == 2
    assert json.loads((tmp_path / "x" / "model.json").read_text())["files"] == {
        "safetensors": "model.safetensors"
    }
    fine = ("--format", "torch-export", "--out", tmp_path / "x")
    assert cli("export", "--ckpt", tmp_path / "run", *fine).exit_code == 0
    assert set(json.loads((tmp_path / "x" / "model.json").read_text())["files"]) == {
        "safetensors",
        "torch-export",
    }


def test_onnx_without_the_export_extra_says_how_to_install_it(
    cli, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a),
    )
    assert cli("train", write_config(), "--run-dir", tmp_path / "run", "-q").exit_code == 0
    result = cli("export", "--ckpt", tmp_path / "run", "--format", "onnx")
    assert result.exit_code == 2 and "pip install 'trainkit[export]'" in result.stderr
    assert not (tmp_path / "run" / "export").exists()


def test_an_output_path_that_is_a_file_is_refused_first(cli, write_config, tmp_path: Path) -> None:
    assert cli("train", write_config(), "--run-dir", tmp_path / "run", "-q").exit_code == 0
    (tmp_path / "taken").write_text("mine")
    result = cli(
        "export", "--ckpt", tmp_path / "run", "--format", "onnx", "--out", tmp_path / "taken"
    )
    assert result.exit_code == 2 and "is a file" in result.stderr
    assert (tmp_path / "taken").read_text() == "mine"


def test_an_exporter_failure_that_is_not_about_the_model_is_a_bug(
    cli, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracing errors are the model's (exit 2, the operator named); anything else the
    exporter raises is not blamed on the model."""
    assert cli("train", write_config(), "--run-dir", tmp_path / "run", "-q").exit_code == 0

    def broken(*args, **kwargs):
        raise TypeError("export() got an unexpected keyword argument")

    monkeypatch.setattr(torch.export, "export", broken)
    result = cli("export", "--ckpt", tmp_path / "run", "--format", "torch-export")
    assert result.exit_code == 1
    assert "unexpected TypeError" in result.stderr and "bug in trainkit" in result.stderr
    assert not (tmp_path / "run" / "export" / "model.pt2").exists()
