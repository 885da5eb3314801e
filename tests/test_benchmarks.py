"""The benchmark's hand-written loop must keep training the same models trainkit builds."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.disk_datasets import write_image_folder
from tests.helpers import tiny_experiment
from trainkit.config.plugins import load_components
from trainkit.config.registry import MODELS
from trainkit.config.schema import validate

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def reference() -> dict:
    return runpy.run_path(str(BENCHMARKS / "reference_loop.py"))


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        ({"name": "mlp", "hidden": [256]}, (1, 28, 28)),
        ({"name": "lenet"}, (1, 28, 28)),
        pytest.param({"name": "resnet34"}, (3, 32, 32), marks=pytest.mark.slow),
    ],
)
def test_reference_models_match_trainkit(reference: dict, model: dict, shape: tuple) -> None:
    load_components()
    params = validate(tiny_experiment(model=model)).model
    ours = MODELS.build(params, shape, 10).state_dict()
    theirs = reference["build_model"](model, shape, 10).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]


@pytest.mark.slow
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


@pytest.mark.slow
def test_reference_loop_reads_an_image_folder_and_augments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CUDA job trains CIFAR-10 as an image folder with crops and flips."""
    write_image_folder(tmp_path / "images", per_class=8, size=24)
    config = tiny_experiment(
        model={"name": "lenet"},
        data={
            "name": "image_folder",
            "root": str(tmp_path / "images"),
            "augment": True,
            "batch_size": 8,
        },
        scheduler={"name": "onecycle"},
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(sys, "argv", ["reference_loop.py", str(path), "--epochs", "1"])
    runpy.run_path(str(BENCHMARKS / "reference_loop.py"), run_name="__main__")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["channels_last"] and len(result["epoch_times"]) == 1
    assert 0.0 <= result["test_accuracy"] <= 1.0
    shutil.rmtree(Path(result["checkpoint"]).parent)


def test_random_crop_flip_shifts_and_mirrors_each_image(reference: dict) -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = reference["random_crop_flip"](images, pad=2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for image, source in zip(out, padded, strict=True):
        windows = [source[:, y : y + 8, x : x + 8] for y in range(5) for x in range(5)]
        assert any(torch.equal(image, w) or torch.equal(image, w.flip(2)) for w in windows)


@pytest.mark.slow
def test_the_streaming_benchmark_compares_like_with_like(tmp_path: Path) -> None:
    """Both pipelines it times yield normalized 224-pixel batches of the same folder, and
    its memory probe sees a process and its children."""
    bench = runpy.run_path(str(BENCHMARKS / "streaming.py"))
    root = bench["write_photos"](tmp_path / "photos", {"train": 20, "test": 10}, (64, 48), 0)
    assert len(list((root / "train").rglob("*.jpg"))) == 20
    # trainkit holds a validation tenth out of its epochs: images per second is unaffected
    ours = next(iter(bench["trainkit_loader"](root, 0, 8)(0)))
    theirs = next(iter(bench["tutorial_loader"](root, 0, 8)(0)))
    assert ours.shape == theirs.shape == (8, 3, 224, 224)
    assert ours.dtype == theirs.dtype == torch.float32
    assert abs(ours.mean().item() - theirs.mean().item()) < 0.5  # both normalized
    grandchild = "x = bytearray(200_000_000); import time; time.sleep(1)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    peak, _ = bench["peak_pss_mib"]([sys.executable, "-c", child], tmp_path)
    assert peak > 150  # the grandchild's 200 MB counted
    with pytest.raises(SystemExit, match="failed"):
        bench["peak_pss_mib"]([sys.executable, "-c", "raise SystemExit(3)"], tmp_path)


@pytest.mark.slow
def test_cifar_folder_writes_an_image_folder_trainkit_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import torchvision.datasets.cifar as cifar

    from tests.disk_datasets import write_cifar10
    from trainkit.config.registry import DATASETS

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    write_cifar10(tmp_path / "raw", per_batch=12, n_test=60)  # every class in both splits
    out = tmp_path / "folder"
    monkeypatch.setattr(sys, "argv", ["cifar_folder.py", str(tmp_path / "raw"), str(out)])
    runpy.run_path(str(BENCHMARKS / "cifar_folder.py"), run_name="__main__")
    assert len(list((out / "train").rglob("*.jpg"))) == 60
    assert len(list((out / "test").rglob("*.jpg"))) == 60
    config = validate(
        tiny_experiment(data={"name": "image_folder", "root": str(out), "workers": 0})
    )
    from tests.disk_datasets import CIFAR_CLASSES

    data = DATASETS.build(config.data, 0)
    assert list(data.info.class_names) == sorted(CIFAR_CLASSES)
    assert len(data.train) + len(data.val) == 60 and len(data.test) == 60


@pytest.mark.slow
def test_the_recipes_benchmark_compares_like_with_like(tmp_path: Path) -> None:
    """Both policy pipelines it times yield normalized 32-pixel batches of the same folder,
    and its accuracy runs are valid configs that differ in the option measured alone."""
    bench = runpy.run_path(str(BENCHMARKS / "recipes.py"))
    root = write_image_folder(tmp_path / "pets", per_class=8, size=32)
    ours = next(iter(bench["trainkit_policy_loader"](root, 0, 8)(0)))
    theirs = next(iter(bench["tutorial_policy_loader"](root, 0, 8)(0)))
    assert ours.shape == theirs.shape == (8, 3, 32, 32)
    assert ours.dtype == theirs.dtype == torch.float32
    assert bench["policy_in_memory"](root, batches=1) > 0  # reads the folder's 24 images
    plain = bench["small_recipe"](root, 2, 0)
    for change in bench["VARIANTS"].values():
        raw = {**plain, **{k: {**plain[k], **v} for k, v in change.items()}}
        validate(raw)
        changed = [(k, key) for k, v in change.items() for key in v]
        assert all(raw[k][key] != plain[k].get(key) for k, key in changed)
