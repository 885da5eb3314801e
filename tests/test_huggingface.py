"""data.name: huggingface: datasets the tests build with the datasets library itself
(save_to_disk folders, Parquet files, class folders of images), never the network."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from tests.disk_datasets import striped_images
from tests.helpers import NEVER, assert_same_run, misbehaving_loss, tiny_experiment
from trainkit.config.registry import DATASETS
from trainkit.config.schema import validate
from trainkit.training.checkpoint import read_payload
from trainkit.training.run import train

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image_split(n: int, seed: int, *, class_label: bool = True) -> datasets.Dataset:
    """Striped 3x16x16 images as PNG bytes, with a ClassLabel (or text) label column."""
    images, labels = striped_images(n, 3, 16, seed)
    label_feature = datasets.ClassLabel(names=DIGITS) if class_label else datasets.Value("string")
    return datasets.Dataset.from_dict(
        {
            "picture": [{"bytes": png(i.transpose(1, 2, 0)), "path": None} for i in images],
            "label": [int(v) if class_label else DIGITS[v] for v in labels],
        },
        features=datasets.Features({"picture": datasets.Image(), "label": label_feature}),
    )


def experiment(path: Path | str, **data: Any) -> dict[str, Any]:
    return tiny_experiment(
        model={"name": "lenet"},
        data={"name": "huggingface", "path": str(path), "batch_size": 16, "workers": 0, **data},
        optimizer={"name": "adam", "lr": 0.003},
        trainer={"epochs": 3},
    )


def built(config: dict[str, Any]) -> Any:
    checked = validate(config)
    return DATASETS.build(checked.data, checked.seed)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A DatasetDict with train and test splits, written by save_to_disk."""
    splits = {"train": image_split(240, 0), "test": image_split(40, 1)}
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "saved")
    return tmp_path / "saved"


def test_a_saved_dataset_reads_its_images_labels_and_class_names(saved: Path) -> None:
    data = built(experiment(saved))
    assert data.info.class_names == tuple(DIGITS) and data.info.input_shape == (3, 16, 16)
    assert len(data.train) + len(data.val) == 240 and len(data.test) == 40
    images, labels = striped_images(40, 3, 16, seed=1)
    assert torch.equal(data.test.inputs, torch.from_numpy(images))  # PNG is lossless
    assert data.test.targets.tolist() == labels.tolist()


def test_parquet_files_and_image_folders_through_the_library(tmp_path: Path, capsys) -> None:
    image_split(50, 0, class_label=False).to_parquet(str(tmp_path / "pictures.parquet"))
    data = built(experiment(tmp_path / "pictures.parquet"))
    assert data.info.class_names == tuple(sorted(set(DIGITS)))  # text labels: sorted values
    assert len(data.test) == 10  # no test split: 20% held out
    assert "20% held out for test (split_seed)" in capsys.readouterr().out
    folder = tmp_path / "photos"
    for split, n in (("train", 30), ("test", 12)):
        images, labels = striped_images(n, 3, 16, seed=len(split))
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            (folder / split / DIGITS[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(
                folder / split / DIGITS[label] / f"{i}.png"
            )
    photos = built(experiment(folder))
    assert len(photos.test) == 12 and set(photos.info.class_names) <= set(DIGITS)


def test_train_eval_predict_on_the_cli(cli, saved: Path, write_config, tmp_path: Path) -> None:
    trained = cli("train", write_config(experiment(saved)), "--run-dir", tmp_path / "run")
    assert trained.exit_code == 0, trained.output
    assert "data: huggingface, in memory (280 images" in trained.stdout
    scored = cli("eval", "--ckpt", tmp_path / "run", "--out", tmp_path / "e.json")
    assert scored.exit_code == 0, scored.output
    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["samples"] == 40 and scores["accuracy"] > 0.5
    images, labels = striped_images(40, 3, 16, seed=1)
    for i, image in enumerate(images):
        Image.fromarray(image.transpose(1, 2, 0)).save(
            tmp_path / f"{i:02d}-{DIGITS[labels[i]]}.png"
        )
    files = sorted(tmp_path.glob("*.png"))
    predicted = cli("predict", "--ckpt", tmp_path / "run", *files, "--out", tmp_path / "p.json")
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads((tmp_path / "p.json").read_text())
    correct = sum(row["prediction"] == Path(row["input"]).stem.split("-")[1] for row in rows)
    assert correct == round(scores["accuracy"] * 40)


def test_streamed_and_in_memory_train_alike_and_resume_exactly(
    cli, write_config, saved: Path, tmp_path: Path
) -> None:
    def config(in_memory: bool, stop_at: int = NEVER) -> dict[str, Any]:
        raw = experiment(saved, in_memory=in_memory, augment="crop_flip")
        raw.update(misbehaving_loss(tmp_path, "sigterm", stop_at))
        return raw

    train(validate(config(True)), run_dir=tmp_path / "memory", quiet=True)
    train(validate(config(False)), run_dir=tmp_path / "streamed", quiet=True)
    assert_same_run(tmp_path / "memory", tmp_path / "streamed")
    # 216 training images in batches of 16: 14 steps an epoch; call 20 is in epoch 2.
    cut = cli("train", write_config(config(False, stop_at=20)), "--run-dir", tmp_path / "cut")
    assert cut.exit_code == 143, cut.output
    assert 14 < read_payload(tmp_path / "cut" / "last.pt")["state"]["step"] < 28
    resumed = cli("resume", tmp_path / "cut", "--set", f"loss.at_call={NEVER}", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(tmp_path / "memory", tmp_path / "cut")


def test_a_dataset_without_images_is_a_table(cli, write_config, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    rows = {
        "x1": x[:, 0].tolist(),
        "x2": x[:, 1].tolist(),
        "kind": (x[:, 0] > 0).astype(int).tolist(),
    }
    features = datasets.Features(
        {"x1": datasets.Value("float64"), "x2": datasets.Value("float64"),
         "kind": datasets.ClassLabel(names=["low", "high"])}
    )  # fmt: skip
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(tmp_path / "table")
    raw = tiny_experiment(
        data={"name": "huggingface", "path": str(tmp_path / "table"), "label_column": "kind"}
    )
    train(validate(raw), run_dir=tmp_path / "run", quiet=True)
    data = built(raw)
    assert data.table is not None and data.table.classes == ("low", "high")  # ClassLabel order
    (tmp_path / "new.csv").write_text("x1,x2\n2.0,0.1\n-2.0,0.3\n")
    result = cli("predict", "--ckpt", tmp_path / "run", tmp_path / "new.csv", "--out",
                 tmp_path / "p.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["prediction"] for r in json.loads((tmp_path / "p.json").read_text())] == [
        "high",
        "low",
    ]
    # Whether a Hugging Face dataset has images is known once it is read, and only then
    # are image-only options refused (for a table file, the config already says so).
    tta = cli("train", write_config(raw), "--set", "trainer.tta=flip", "--run-dir", "flip")
    assert tta.exit_code == 2 and not (tmp_path / "flip").exists(), tta.output
    assert "mirrors images, but huggingface gives inputs of shape (2,)" in tta.stderr


def test_a_hub_dataset_that_is_not_cached_offline_says_what_to_run(cli, write_config, tmp_path):
    result = cli("train", write_config(experiment("someone/not-cached")), "--run-dir",
                 tmp_path / "run")  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "data.path='someone/not-cached' is not in the Hugging Face cache here" in message
    assert "datasets.load_dataset('someone/not-cached').save_to_disk('saved')" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"label_column": "labels"}, "data.label_column='labels': "),
        ({"image_column": "pic"}, "data.image_column='pic': "),
        ({"test_split": "tset"}, "data.test_split='tset': "),
        ({"path": "./missing-folder"}, "data.path='./missing-folder': no such folder or file"),
    ],
)
def test_bad_columns_and_splits_name_the_closest(
    cli, saved, write_config, tmp_path, data, expected
):
    raw = experiment(saved)
    raw["data"].update(data)
    result = cli("train", write_config(raw), "--run-dir", tmp_path / "run")
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert expected in message
    if "path" not in data:
        assert "did you mean" in message
    assert not (tmp_path / "run").exists()
