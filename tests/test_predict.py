"""trainkit predict: the same answers as eval, from files, with bad files listed not fatal."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.disk_datasets import write_image_folder, write_mnist
from tests.helpers import tiny_experiment
from trainkit.config.schema import validate
from trainkit.training.run import train

# The module's tests share what its module-scoped fixtures make: with pytest-xdist they
# all run in one worker, so it is made once.
pytestmark = pytest.mark.xdist_group("folder_run")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LeNet trained briefly on a small image folder (PNG train, JPEG test images of
    several sizes): (the folder, the run)."""
    base = tmp_path_factory.mktemp("folder_run")
    root = write_image_folder(base / "pets", per_class=10, size=20)
    config = tiny_experiment(
        model={"name": "lenet"},
        data={"name": "image_folder", "root": str(root), "image_size": 16, "workers": 0},
        trainer={"epochs": 2},
    )
    train(validate(config), run_dir=base / "run", quiet=True)
    return root, base / "run"


def label_of(row: dict) -> str:
    return Path(row["input"]).parent.name


def test_predict_on_the_test_split_agrees_with_eval_to_the_sample(
    cli, folder_run, tmp_path: Path
) -> None:
    root, run = folder_run
    result = cli("predict", "--ckpt", run, root / "test", "--out", tmp_path / "p.json", "--topk", 3)
    assert result.exit_code == 0, result.output
    assert "predictions by" in result.stdout
    rows = json.loads((tmp_path / "p.json").read_text())
    assert cli("eval", "--ckpt", run, "--out", tmp_path / "e.json").exit_code == 0
    scored = json.loads((tmp_path / "e.json").read_text())
    assert len(rows) == scored["samples"] == 30
    correct = sum(row["prediction"] == label_of(row) for row in rows)
    assert correct == round(scored["accuracy"] * scored["samples"])
    # the mean cross-entropy of predict's probabilities is eval's loss: same outputs
    true_probability = [
        next(t["probability"] for t in row["top"] if t["class"] == label_of(row)) for row in rows
    ]
    loss = -sum(math.log(p) for p in true_probability) / len(rows)
    assert loss == pytest.approx(scored["loss"], rel=1e-5)
    assert all(len(row["top"]) == 3 for row in rows)
    assert all(row["probability"] == row["top"][0]["probability"] for row in rows)


def test_predict_reads_mnist_digits_saved_as_png_like_eval(cli, tmp_path: Path) -> None:
    """Greyscale images through MNIST's fixed normalization: a PNG of a test digit gets
    what eval gave the same pixels read from the IDX file."""
    from torchvision.datasets import MNIST

    write_mnist(tmp_path / "mnist", n_train=200, n_test=40)
    config = tiny_experiment(
        model={"name": "lenet"},
        data={"name": "mnist", "root": str(tmp_path / "mnist"), "batch_size": 16},
        trainer={"epochs": 2},
    )
    train(validate(config), run_dir=tmp_path / "run", quiet=True)
    test = MNIST(str(tmp_path / "mnist"), train=False)
    for i, (image, label) in enumerate(zip(test.data, test.targets, strict=True)):
        folder = tmp_path / "digits" / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.numpy()).save(folder / f"{i:03d}.png")
    out = tmp_path / "p.csv"
    args = ("--ckpt", tmp_path / "run", tmp_path / "digits", "--out", out, "--topk", 10)
    assert cli("predict", *args).exit_code == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40
    assert cli("eval", "--ckpt", tmp_path / "run", "--out", tmp_path / "e.json").exit_code == 0
    scored = json.loads((tmp_path / "e.json").read_text())
    # torchvision names MNIST's classes "0 - zero", "1 - one", ...
    correct = sum(row["prediction"].split(" - ")[0] == label_of(row) for row in rows)
    assert correct == round(scored["accuracy"] * 40)
    probability_of_label = [
        float(row[f"probability_{k}"])
        for row in rows
        for k in range(1, 11)
        if row[f"class_{k}"].split(" - ")[0] == label_of(row)
    ]
    loss = -sum(math.log(p) for p in probability_of_label) / len(rows)
    assert loss == pytest.approx(scored["loss"], rel=1e-4)  # the CSV keeps 6 digits


def test_unreadable_files_are_listed_and_fail_the_command_unless_skip_bad(
    cli, folder_run, tmp_path: Path
) -> None:
    root, run = folder_run
    images = tmp_path / "mixed"
    images.mkdir()
    for name in ("0.jpg", "1.jpg"):
        (images / name).write_bytes((root / "test" / "cat" / name).read_bytes())
    (images / "notes.png").write_text("not an image")
    (images / "half.jpg").write_bytes((root / "test" / "dog" / "0.jpg").read_bytes()[:60])
    out = tmp_path / "p.jsonl"
    failed = cli("predict", "--ckpt", run, images, "--out", out)
    assert failed.exit_code == 1
    assert "2 file(s) could not be read" in failed.stderr and "Traceback" not in failed.output
    assert "notes.png: not a readable image" in failed.stderr and "half.jpg" in failed.stderr
    assert "--skip-bad" in failed.stderr
    assert [json.loads(line)["input"] for line in out.read_text().splitlines()] == [
        str(images / "0.jpg"),
        str(images / "1.jpg"),
    ]
    accepted = cli("predict", "--ckpt", run, images, "--skip-bad")
    assert accepted.exit_code == 0 and "warning:" in accepted.stderr
    nothing = cli("predict", "--ckpt", run, images / "notes.png")  # a text file, nothing else
    assert nothing.exit_code == 2 and "predictions" not in nothing.stdout
    assert "none of the 1 inputs could be read" in nothing.stderr
    assert "notes.png: not a readable image (a text file" in nothing.stderr
    # worker processes decoding in batches of 3 report the same rows and the same skips
    parallel = tmp_path / "parallel.jsonl"
    args = ("--workers", 2, "--batch-size", 3, "--skip-bad", "--out", parallel)
    assert cli("predict", "--ckpt", run, images, *args).exit_code == 0
    assert parallel.read_text() == out.read_text()


def test_bad_arguments_stop_before_any_work(cli, folder_run, tmp_path: Path) -> None:
    root, run = folder_run
    cases = {
        "--out FILE.txt": (["--out", tmp_path / "p.txt"], "must end in .csv, .json, .jsonl"),
        "--out a folder": (["--out", tmp_path], "is a folder"),
        "--out in no folder": (["--out", tmp_path / "no" / "p.csv"], "does not exist"),
        "a missing input": ([], "does not exist"),
    }
    for args, expected in cases.values():
        inputs = [tmp_path / "nothing"] if not args else [root / "test"]
        result = cli("predict", "--ckpt", run, *inputs, *args)
        assert result.exit_code == 2 and expected in result.stderr, result.output
    assert not (tmp_path / "no").exists()
    rows = tmp_path / "rows.csv"
    rows.write_text("1,2\n")
    refused = cli("predict", "--ckpt", run, rows)
    assert refused.exit_code == 2 and "this model takes images" in refused.stderr
    missing = cli("predict", "--ckpt", tmp_path / "no-run", root / "test")
    assert missing.exit_code == 2 and "Traceback" not in missing.output


@pytest.fixture
def logistic_run(tmp_path: Path) -> Path:
    config = tiny_experiment(model={"name": "logistic"}, loss={"name": "bce"})
    train(validate(config), run_dir=tmp_path / "logistic", quiet=True)
    return tmp_path / "logistic"


def test_feature_rows_from_csv_npy_and_pt_files(cli, logistic_run: Path, tmp_path: Path) -> None:
    rows = np.array([[2.0, -1.0], [-3.0, 0.5], [0.1, 0.2]], dtype=np.float32)
    (tmp_path / "rows.csv").write_text("x1,x2\n" + "\n".join(f"{a},{b}" for a, b in rows))
    np.save(tmp_path / "rows.npy", rows)
    torch.save(torch.from_numpy(rows), tmp_path / "rows.pt")
    out = tmp_path / "p.json"
    files = [tmp_path / f"rows.{ext}" for ext in ("csv", "npy", "pt")]
    result = cli("predict", "--ckpt", logistic_run, *files, "--out", out)
    assert result.exit_code == 0, result.output
    predicted = json.loads(out.read_text())
    assert [p["input"] for p in predicted[:3]] == [f"{files[0]}:{i}" for i in (1, 2, 3)]
    # one logit: P(class 1) = sigmoid(w.x + b), class 0 gets the rest
    weights = torch.load(logistic_run / "best.pt", weights_only=True)["model"]
    logits = torch.from_numpy(rows) @ weights["1.weight"].T + weights["1.bias"]
    expected = torch.sigmoid(logits[:, 0]).tolist() * 3
    for row, p1 in zip(predicted, expected, strict=True):
        probabilities = {t["class"]: t["probability"] for t in row["top"]}
        assert probabilities["1"] == pytest.approx(p1, abs=1e-6)
        assert probabilities["0"] == pytest.approx(1 - p1, abs=1e-6)
        assert row["prediction"] == ("1" if p1 > 0.5 else "0")
    (tmp_path / "wide.csv").write_text("1,2,3\n")
    wrong = cli("predict", "--ckpt", logistic_run, tmp_path / "wide.csv")
    assert wrong.exit_code == 2 and "takes rows of 2 features" in wrong.stderr
    folder = cli("predict", "--ckpt", logistic_run, tmp_path)
    assert folder.exit_code == 2 and "is a folder" in folder.stderr


def test_a_regression_model_predicts_values(cli, tmp_path: Path) -> None:
    config = tiny_experiment(
        model={"name": "linear"},
        data={"name": "synthetic_linear", "n_train": 400, "n_test": 50, "noise": 0.01},
        loss={"name": "mse"},
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.0},
        scheduler=None,
        trainer={"epochs": 20},
    )
    train(validate(config), run_dir=tmp_path / "run", quiet=True)
    (tmp_path / "x.csv").write_text("0\n1\n-2\n")
    out = tmp_path / "y.csv"
    result = cli("predict", "--ckpt", tmp_path / "run", tmp_path / "x.csv", "--out", out)
    assert result.exit_code == 0, result.output
    with out.open() as handle:
        values = [float(row["value"]) for row in csv.DictReader(handle)]
    assert values == pytest.approx([3.0, 5.0, -1.0], abs=0.05)  # y = 2x + 3
