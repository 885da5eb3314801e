"""data.name: torchvision: any of torchvision's image-classification datasets by name,
read from files the tests write in each dataset's own format."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.disk_datasets import (
    CIFAR100_CLASSES,
    EUROSAT_CLASSES,
    striped_images,
    write_cifar100,
    write_eurosat,
    write_fashion_mnist,
    write_svhn,
)
from tests.helpers import NEVER, assert_same_run, misbehaving_loss, tiny_experiment
from trainkit.config.registry import DATASETS
from trainkit.config.schema import validate
from trainkit.training.checkpoint import read_payload
from trainkit.training.run import train


@pytest.fixture(autouse=True)
def _fixture_files_pass_the_md5_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR-100's and SVHN's files are checked against the originals' md5; the tests'
    own files cannot match it."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    for module in (cifar, svhn):
        monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def experiment(dataset: str, root: Path, **data: Any) -> dict[str, Any]:
    return tiny_experiment(
        model={"name": "lenet"},
        data={"name": "torchvision", "dataset": dataset, "root": str(root), "batch_size": 16,
              "workers": 0, **data},
        trainer={"epochs": 2},
    )  # fmt: skip


def built(config: dict[str, Any]) -> Any:
    checked = validate(config)
    return DATASETS.build(checked.data, checked.seed)


def test_fashion_mnist_from_its_idx_files(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, n_train=100, n_test=30)
    data = built(experiment("FashionMNIST", tmp_path))
    assert data.info.input_shape == (1, 28, 28) and data.info.class_names[0] == "T-shirt/top"
    assert len(data.train) + len(data.val) == 100 and len(data.test) == 30
    images, labels = striped_images(30, 1, 28, seed=1)  # what the test file holds
    assert torch.equal(data.test.inputs, torch.from_numpy(images))
    assert data.test.targets.tolist() == labels.tolist()


def test_cifar100_from_its_pickles_with_its_fine_labels(tmp_path: Path) -> None:
    write_cifar100(tmp_path, n_train=50, n_test=20)
    data = built(experiment("CIFAR100", tmp_path))
    assert data.info.num_classes == 100 and data.info.class_names == tuple(CIFAR100_CLASSES)
    images, labels = striped_images(20, 3, 32, seed=1)
    assert torch.equal(data.test.inputs, torch.from_numpy(images))
    assert data.test.targets.tolist() == labels.tolist()


def test_svhn_from_its_mat_files_with_split_train_and_test(tmp_path: Path) -> None:
    write_svhn(tmp_path, n_train=50, n_test=20)
    data = built(experiment("SVHN", tmp_path))
    images, labels = striped_images(20, 3, 32, seed=1)
    assert torch.equal(data.test.inputs, torch.from_numpy(images))
    assert data.test.targets.tolist() == labels.tolist()  # 10 in the file is the digit 0
    assert 0 in labels.tolist()


def test_a_dataset_with_one_split_gets_a_seeded_test_split(tmp_path: Path, capsys) -> None:
    write_eurosat(tmp_path, per_class=10)
    data = built(experiment("EuroSAT", tmp_path, image_size=32))
    assert data.info.class_names == tuple(EUROSAT_CLASSES)
    assert data.info.input_shape == (3, 32, 32)
    assert len(data.test) == 6 and len(data.train) + len(data.val) == 24
    assert "its one split, 20% held out for test (split_seed)" in capsys.readouterr().out
    again = built({**experiment("EuroSAT", tmp_path, image_size=32), "seed": 5})
    assert torch.equal(again.test.inputs, data.test.inputs)  # not the experiment seed's
    other = built(experiment("EuroSAT", tmp_path, image_size=32, split_seed=1))
    assert not torch.equal(other.test.targets, data.test.targets)


@pytest.fixture
def fashion(tmp_path: Path) -> Path:
    return write_fashion_mnist(tmp_path / "data", n_train=300, n_test=40)


def test_train_eval_and_predict_through_the_cli(cli, fashion: Path, write_config, tmp_path):
    raw = experiment("FashionMNIST", fashion)
    raw.update(optimizer={"name": "adam", "lr": 0.003}, trainer={"epochs": 4})
    config = write_config(raw)
    trained = cli("train", config, "--run-dir", tmp_path / "run")
    assert trained.exit_code == 0, trained.output
    assert "torchvision FashionMNIST under" in trained.stdout
    assert "data: torchvision, in memory (340 images" in trained.stdout
    scored = cli("eval", "--ckpt", tmp_path / "run", "--out", tmp_path / "e.json")
    assert scored.exit_code == 0, scored.output
    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["samples"] == 40 and scores["accuracy"] > 0.5  # stripes are learnable
    images, labels = striped_images(40, 1, 28, seed=1)
    names = built(experiment("FashionMNIST", fashion)).info.class_names
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(
            tmp_path / f"{i:02d}-{names[labels[i]].replace('/', '_')}.png"
        )
    predicted = cli("predict", "--ckpt", tmp_path / "run", *sorted(tmp_path.glob("*.png")),
                    "--out", tmp_path / "p.json")  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads((tmp_path / "p.json").read_text())
    correct = sum(
        row["prediction"].replace("/", "_") == Path(row["input"]).stem.split("-", 1)[1]
        for row in rows
    )
    assert correct == round(scores["accuracy"] * 40)


def test_streamed_and_in_memory_train_alike_and_resume_exactly(
    cli, write_config, tmp_path: Path
) -> None:
    write_cifar100(tmp_path / "data", n_train=160, n_test=20)

    def config(in_memory: bool, stop_at: int = NEVER) -> dict[str, Any]:
        raw = experiment("CIFAR100", tmp_path / "data", in_memory=in_memory, augment="crop_flip")
        raw.update(misbehaving_loss(tmp_path, "sigterm", stop_at))
        return raw

    train(validate(config(True)), run_dir=tmp_path / "memory", quiet=True)
    train(validate(config(False)), run_dir=tmp_path / "streamed", quiet=True)
    assert_same_run(tmp_path / "memory", tmp_path / "streamed")
    # 144 training images in batches of 16: 9 steps an epoch; call 13 is in epoch 2.
    cut = cli("train", write_config(config(True, stop_at=13)), "--run-dir", tmp_path / "cut")
    assert cut.exit_code == 143, cut.output
    assert 9 < read_payload(tmp_path / "cut" / "last.pt")["state"]["step"] < 18
    resumed = cli("resume", tmp_path / "cut", "--set", f"loss.at_call={NEVER}", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(tmp_path / "memory", tmp_path / "cut")


def test_a_misspelt_dataset_gets_the_closest_name(cli, write_config, tmp_path: Path) -> None:
    result = cli("validate", write_config(experiment("FashionMnist", tmp_path)))
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "'FashionMnist' is not one of torchvision's image-classification datasets" in message
    assert "did you mean 'FashionMNIST'?" in message


def test_missing_files_offline_are_a_clear_error(cli, write_config, tmp_path: Path) -> None:
    config = write_config(experiment("CIFAR100", tmp_path / "nothing-here"))
    result = cli("train", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "cannot read CIFAR100 under data.root=" in message
    assert "or set data.download=true to fetch them" in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "nothing-here").exists()


def test_ls_lists_the_catalog_and_where_it_comes_from(cli) -> None:
    result = cli("ls", "datasets")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for name in ("FashionMNIST", "CIFAR100", "SVHN", "Flowers102", "EuroSAT"):
        assert name in text
    assert "torchvision's image-classification datasets whose splits trainkit knows" in text


def test_every_catalog_entry_is_a_torchvision_dataset_with_its_split_keyword() -> None:
    import inspect

    import torchvision.datasets

    from trainkit.data.torchvision_catalog import CATALOG

    for name, entry in CATALOG.items():
        cls = getattr(torchvision.datasets, name)
        parameters = inspect.signature(cls).parameters
        if entry.splits == "train":
            assert "train" in parameters or name == "QMNIST", name
        elif entry.splits is not None:
            assert "split" in parameters, name
        else:
            assert "split" not in parameters and "train" not in parameters, name
    assert np.all([e.channels in (1, 3) for e in CATALOG.values()])
