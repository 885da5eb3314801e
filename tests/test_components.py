"""Every registered component builds and takes part in a real training step."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, get_args

import datasets
import pytest
import torch

from tests.disk_datasets import write_cifar10, write_fashion_mnist, write_image_folder, write_mnist
from tests.helpers import tiny_experiment
from trainkit.config.plugins import load_components
from trainkit.config.registry import DATASETS, LOSSES, MODELS, OPTIMIZERS, SCHEDULERS
from trainkit.config.schema import validate
from trainkit.errors import UserError
from trainkit.models.mlp import Activation
from trainkit.optim.optimizers import parameter_groups
from trainkit.training.build import build, seed_process
from trainkit.training.checkpoint import read_payload
from trainkit.training.run import train


@pytest.fixture
def image_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    import torchvision.datasets.cifar as cifar

    # Fixture pickles cannot match the md5 of the original CIFAR download.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    write_mnist(tmp_path / "mnist", n_train=40, n_test=10)
    write_cifar10(tmp_path / "cifar", per_batch=8, n_test=10)
    write_image_folder(tmp_path / "folder", per_class=4, size=24)
    write_fashion_mnist(tmp_path / "torchvision", n_train=40, n_test=10)
    rows = {"x": [float(i % 5) for i in range(30)], "label": [i % 2 for i in range(30)]}
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "huggingface")
    rows = "\n".join(f"{i % 7 / 7},{'abc'[i % 3]},{'ab'[i % 2]}" for i in range(40))
    (tmp_path / "table.csv").write_text("x,kind,y\n" + rows + "\n")
    return {
        "table": str(tmp_path / "table.csv"),
        "torchvision": str(tmp_path / "torchvision"),
        "huggingface": str(tmp_path / "huggingface"),
        "mnist": str(tmp_path / "mnist"),
        "cifar": str(tmp_path / "cifar"),
        "folder": str(tmp_path / "folder"),
    }


def one_step(raw: dict[str, Any], tmp_path: Path) -> None:
    """Train one short epoch; assert the weights moved and the checkpoint holds them."""
    raw = {**raw, "trainer": {**raw.get("trainer", {}), "epochs": 1, "device": "cpu"}}
    raw["logging"] = {"tensorboard": False}
    config = validate(raw)
    seed_process(config)  # as a run does: the weights it starts from
    before = {k: v.clone() for k, v in build(config).parts.model.state_dict().items()}
    result = train(config, run_dir=tmp_path / "run", quiet=True)
    assert result.status == "completed" and result.step >= 1
    after = read_payload(tmp_path / "run" / "last.pt")["model"]
    assert before.keys() == after.keys()
    assert any(
        not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point()
    )
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


SYNTHETIC = {"name": "synthetic_logistic", "n_train": 64, "n_test": 16, "batch_size": 16}
REGRESSION = {"name": "synthetic_linear", "n_train": 64, "n_test": 16, "batch_size": 16}

MODEL_CASES = {
    "mlp": (
        {"name": "mlp", "hidden": [8], "dropout": 0.1, "init": "scaled"},
        SYNTHETIC,
        "cross_entropy",
    ),
    "convnet": (
        {
            "name": "convnet",
            "conv": [{"channels": 4, "kernel": 3, "padding": 1}, {"channels": 6, "pool": 1}],
            "hidden": [8],
            "batch_norm": True,
            "dropout": 0.2,
        },
        {"name": "mnist", "root": "mnist", "batch_size": 8},
        "cross_entropy",
    ),
    "linear": ({"name": "linear"}, REGRESSION, "mse"),
    "logistic": ({"name": "logistic"}, SYNTHETIC, "bce"),
    "lenet": (
        {"name": "lenet"},
        {"name": "mnist", "root": "mnist", "batch_size": 8},
        "cross_entropy",
    ),
    "resnet34": (
        {"name": "resnet34"},
        {"name": "cifar10", "root": "cifar", "batch_size": 8},
        "cross_entropy",
    ),
    "cifar_fast": (
        {"name": "cifar_fast"},
        {"name": "cifar10", "root": "cifar", "batch_size": 8},
        "cross_entropy",
    ),
    "torchvision": (
        {"name": "torchvision", "arch": "mobilenet_v3_small"},
        {"name": "image_folder", "root": "folder", "batch_size": 4, "workers": 0},
        "cross_entropy",
    ),
}


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(m, marks=pytest.mark.slow) if m == "resnet34" else m
        for m in sorted(MODEL_CASES)
    ],
)
def test_every_model_trains(model: str, image_roots: dict[str, str], tmp_path: Path) -> None:
    params, data, loss = MODEL_CASES[model]
    if "root" in data:
        data = {**data, "root": image_roots[data["root"]]}
    one_step(tiny_experiment(model=params, data=data, loss={"name": loss}), tmp_path)


@pytest.mark.slow
def test_lenet_and_resnet_fit_other_image_shapes(
    image_roots: dict[str, str], tmp_path: Path
) -> None:
    cifar = {"name": "cifar10", "root": image_roots["cifar"], "batch_size": 8}
    one_step(tiny_experiment(model={"name": "lenet"}, data=cifar), tmp_path / "lenet")
    folder = {
        "name": "image_folder",
        "root": image_roots["folder"],
        "image_size": 72,
        "workers": 0,
        "val_fraction": 0.5,
        "batch_size": 6,
    }
    one_step(tiny_experiment(model={"name": "resnet34"}, data=folder), tmp_path / "resnet")
    net = build(validate(tiny_experiment(model={"name": "resnet34"}, data=folder))).parts.model
    assert net.conv1.kernel_size == (7, 7)  # the ImageNet stem for larger images


@pytest.mark.parametrize("activation", get_args(Activation))
def test_lenet_pooling_first_computes_the_textbook_network(activation: str) -> None:
    """LeNet pools before its activation; that must equal conv, activation, pool."""
    params = validate(tiny_experiment(model={"name": "lenet", "activation": activation})).model
    net = MODELS.build(params, (1, 28, 28), 10)
    conv1, pool1, act1, conv2, pool2, act2, *head = net
    textbook = torch.nn.Sequential(conv1, act1, pool1, conv2, act2, pool2, *head)
    images = torch.randn(4, 1, 28, 28)
    ours, theirs = net(images), textbook(images)
    torch.testing.assert_close(ours, theirs)
    (grad_ours,) = torch.autograd.grad(ours.square().sum(), conv1.weight)
    (grad_theirs,) = torch.autograd.grad(theirs.square().sum(), conv1.weight)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_convnet_is_the_network_its_config_describes() -> None:
    """Nielsen's chapter 6 network with dropout: two conv-pool stages, two FC-1000."""
    params = validate(
        tiny_experiment(
            model={
                "name": "convnet",
                "conv": [{"channels": 20}, {"channels": 40}],
                "hidden": [1000, 1000],
                "dropout": 0.5,
            }
        )
    ).model
    net = MODELS.build(params, (1, 28, 28), 10)
    kinds = [type(layer).__name__ for layer in net]
    assert kinds == [
        *["Conv2d", "MaxPool2d", "ReLU"] * 2,
        "Flatten",
        *["Dropout", "Linear", "ReLU"] * 2,
        "Dropout",
        "Linear",
    ]
    linears = [layer for layer in net if isinstance(layer, torch.nn.Linear)]
    assert [(x.in_features, x.out_features) for x in linears] == [
        (640, 1000),
        (1000, 1000),
        (1000, 10),
    ]
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    too_deep = validate(
        tiny_experiment(model={"name": "convnet", "conv": [{"channels": 4, "kernel": 11}] * 2})
    ).model
    with pytest.raises(UserError, match="conv stage 2 of 2 leaves no pixels"):
        MODELS.build(too_deep, (1, 28, 28), 10)


@pytest.mark.parametrize(("init", "weight_std"), [("normal", 1.0), ("scaled", 784**-0.5)])
def test_mlp_starts_from_nielsens_initializations(init: str, weight_std: float) -> None:
    params = validate(tiny_experiment(model={"name": "mlp", "hidden": [300], "init": init})).model
    first = MODELS.build(params, (1, 28, 28), 10)[1]
    assert first.weight.std().item() == pytest.approx(weight_std, rel=0.02)
    assert first.bias.std().item() == pytest.approx(1.0, rel=0.2)


def test_nielsens_costs_are_his_sums_over_outputs() -> None:
    """half_sum is C = 1/2 ||y - a||^2 per image, sum is -sum[y ln a + (1-y) ln(1-a)]
    per image, both averaged over the mini-batch: K/2 and K times PyTorch's means."""
    from trainkit.data.dataset import DataInfo

    info = DataInfo((1, 28, 28), 10, tuple("0123456789"))
    outputs, targets = torch.rand(6, 10), torch.tensor([0, 3, 9, 1, 1, 7])
    y = torch.nn.functional.one_hot(targets, 10).float()

    def loss(name: str, reduction: str) -> torch.Tensor:
        params = validate(tiny_experiment(loss={"name": name, "reduction": reduction})).loss
        return LOSSES.build(params, info).loss(outputs, targets)

    quadratic = (0.5 * ((y - outputs) ** 2).sum(dim=1)).mean()
    torch.testing.assert_close(loss("mse", "half_sum"), quadratic)
    torch.testing.assert_close(loss("mse", "mean"), quadratic / 5)
    a = outputs.sigmoid()
    cross_entropy = -(y * a.log() + (1 - y) * (1 - a).log()).sum(dim=1).mean()
    torch.testing.assert_close(loss("bce", "sum"), cross_entropy)
    torch.testing.assert_close(loss("bce", "mean"), cross_entropy / 10)


def test_weight_decay_can_leave_biases_and_norm_layers_alone() -> None:
    """With decay_biases_and_norms: false, a step with zero gradients shrinks only the
    weight matrices and kernels."""
    model = {"name": "convnet", "conv": [{"channels": 3}], "hidden": [5], "batch_norm": True}
    for everything in (True, False):
        optimizer = {
            "name": "sgd",
            "lr": 0.5,
            "momentum": 0.0,
            "weight_decay": 0.1,
            "decay_biases_and_norms": everything,
        }
        config = validate(tiny_experiment(model=model, optimizer=optimizer))
        module = MODELS.build(config.model, (1, 28, 28), 10)
        torch.nn.init.constant_(module[1].weight, 2.0)  # the batch norm's scale
        before = {name: p.detach().clone() for name, p in module.named_parameters()}
        sgd = OPTIMIZERS.build(config.optimizer, parameter_groups(module, config.optimizer))
        for p in module.parameters():
            p.grad = torch.zeros_like(p)
        sgd.step()
        for name, p in module.named_parameters():
            shrunk = everything or p.ndim > 1
            expected = before[name] * (0.95 if shrunk else 1.0)
            torch.testing.assert_close(p.detach(), expected, msg=name)


DATASET_CASES = {
    "synthetic_logistic": SYNTHETIC,
    "synthetic_linear": REGRESSION,
    "mnist": {"name": "mnist", "root": "mnist", "batch_size": 16},
    "cifar10": {"name": "cifar10", "root": "cifar", "batch_size": 16},
    "image_folder": {"name": "image_folder", "root": "folder", "batch_size": 4, "workers": 0},
    "table": {"name": "table", "path": "table", "target": "y", "batch_size": 8},
    "huggingface": {"name": "huggingface", "path": "huggingface", "batch_size": 8},
    "torchvision": {
        "name": "torchvision",
        "dataset": "FashionMNIST",
        "root": "torchvision",
        "batch_size": 8,
        "workers": 0,
    },
}


@pytest.mark.parametrize("dataset", sorted(DATASET_CASES))
def test_every_dataset_trains(dataset: str, image_roots: dict[str, str], tmp_path: Path) -> None:
    data = dict(DATASET_CASES[dataset])
    for key in ("root", "path"):
        if key in data:
            data[key] = image_roots[data[key]]
    loss = "mse" if dataset == "synthetic_linear" else "cross_entropy"
    one_step(tiny_experiment(data=data, loss={"name": loss}), tmp_path)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_trains(optimizer: str, tmp_path: Path) -> None:
    one_step(tiny_experiment(optimizer={"name": optimizer, "lr": 0.01}), tmp_path)


SCHEDULER_CASES = {
    "step": {"name": "step", "step_size": 0.5, "warmup_epochs": 0.25},
    "multistep": {"name": "multistep", "milestones": [0.5]},
    "cosine": {"name": "cosine", "warmup_epochs": 0.5},
    "onecycle": {"name": "onecycle"},
}


@pytest.mark.parametrize("scheduler", sorted(SCHEDULER_CASES))
def test_every_scheduler_trains(scheduler: str, tmp_path: Path) -> None:
    one_step(tiny_experiment(scheduler=SCHEDULER_CASES[scheduler]), tmp_path)


LOSS_CASES = {
    "cross_entropy": ({"name": "mlp"}, SYNTHETIC),
    "mse": ({"name": "mlp", "output_activation": "sigmoid"}, SYNTHETIC),  # Nielsen's quadratic cost
    "bce": ({"name": "mlp"}, SYNTHETIC),
}


@pytest.mark.parametrize("loss", sorted(LOSS_CASES))
def test_every_loss_trains(loss: str, tmp_path: Path) -> None:
    model, data = LOSS_CASES[loss]
    one_step(tiny_experiment(model=model, data=data, loss={"name": loss}), tmp_path)


def test_every_registered_component_has_a_case_above() -> None:
    load_components()
    assert set(MODELS.names()) == set(MODEL_CASES)
    assert set(DATASETS.names()) == set(DATASET_CASES)
    assert set(SCHEDULERS.names()) == set(SCHEDULER_CASES)
    assert set(LOSSES.names()) == set(LOSS_CASES)
    assert set(OPTIMIZERS.names()) == {"sgd", "adam", "adamw", "rmsprop"}


def test_schedules_count_epochs_in_optimizer_steps() -> None:
    config = validate(
        tiny_experiment(
            data={"n_train": 400, "batch_size": 36},  # 360 train samples: 10 steps per epoch
            scheduler={"name": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 1},
        )
    )
    parts = build(config).parts
    lrs = []
    for _ in range(40):
        lrs.append(parts.optimizer.param_groups[0]["lr"])
        parts.optimizer.step()
        parts.scheduler.step()
    assert lrs[0] == pytest.approx(0.01)  # warmup starts at 0.1 x lr
    assert lrs[10] == pytest.approx(0.1)  # warmup over after one epoch
    assert lrs[29] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.05)  # halved 2 epochs later


def test_model_loss_mismatch_is_reported_before_anything_is_written(tmp_path: Path) -> None:
    from trainkit.errors import UserError

    config = validate(tiny_experiment(model={"name": "logistic"}, loss={"name": "cross_entropy"}))
    with pytest.raises(UserError, match=r"cross_entropy needs model outputs of shape \(batch, 2\)"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    regression = validate(tiny_experiment(data=REGRESSION, loss={"name": "cross_entropy"}))
    with pytest.raises(UserError, match="regression set; use loss mse"):
        train(regression, run_dir=tmp_path / "run")
