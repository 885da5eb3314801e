"""data.name: table: .csv, .tsv and .parquet files, preparation fitted on the training
rows and stored with the model, train / eval / resume / predict / export on the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from tests.helpers import NEVER, assert_same_run, misbehaving_loss, tiny_experiment
from trainkit.config.registry import DATASETS
from trainkit.config.schema import validate
from trainkit.data.table import TableDataset
from trainkit.training.checkpoint import read_payload
from trainkit.training.run import train

COLOURS = ("red", "green", "blue")


def measurements(n: int, seed: int = 0) -> dict[str, list[Any]]:
    """A learnable table: the class is 'high' when size + 2 (colour is red) > 1.

    `size` is standardized-ish, `weight` is noise with missing values, `colour` a category
    with a missing value now and then, `id` an identifier to drop.
    """
    rng = np.random.default_rng(seed)
    size = rng.normal(5.0, 2.0, n)
    colour = rng.choice(COLOURS, n).tolist()
    weight = rng.normal(70.0, 10.0, n).round(1).tolist()
    for i in range(0, n, 7):
        weight[i] = None
    for i in range(3, n, 11):
        colour[i] = None
    score = (size - 5.0) / 2.0 + 2.0 * np.array([c == "red" for c in colour])
    label = np.where(score > 1.0, "high", "low").tolist()
    return {
        "id": list(range(n)),
        "size": size.tolist(),
        "weight": weight,
        "colour": colour,
        "label": label,
    }


def write_table(path: Path, columns: dict[str, list[Any]]) -> Path:
    table = pa.table(columns)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        delimiter = "\t" if path.suffix == ".tsv" else ","
        pa_csv.write_csv(table, path, pa_csv.WriteOptions(delimiter=delimiter))
    return path


def table_experiment(path: Path, **data: Any) -> dict[str, Any]:
    return tiny_experiment(
        model={"name": "mlp", "hidden": [16]},
        data={
            "name": "table",
            "path": str(path),
            "target": "label",
            "batch_size": 16,
            "features": {"id": "drop"},
            **data,
        },
        optimizer={"name": "adam", "lr": 0.01},
        trainer={"epochs": 4},
    )


def built(config: dict[str, Any]) -> TableDataset:
    checked = validate(config)
    return DATASETS.build(checked.data, checked.seed)


def test_csv_tsv_and_parquet_give_the_same_rows(tmp_path: Path) -> None:
    columns = measurements(60)
    prepared = [
        built(table_experiment(write_table(tmp_path / f"t.{ext}", columns)))
        for ext in ("csv", "tsv", "parquet")
    ]
    for other in prepared[1:]:
        assert other.table == prepared[0].table
        for split in ("train", "val", "test"):
            assert torch.equal(other.split(split).inputs, prepared[0].split(split).inputs)
            assert torch.equal(other.split(split).targets, prepared[0].split(split).targets)


def test_the_preparation_is_fitted_on_the_training_rows_alone(tmp_path: Path) -> None:
    columns = measurements(200)
    data = built(table_experiment(write_table(tmp_path / "t.csv", columns)))
    fmt = data.table
    assert fmt is not None and fmt.task == "classification" and fmt.classes == ("high", "low")
    assert [c.name for c in fmt.numbers] == ["size", "weight"] and fmt.dropped == ("id",)
    assert [c.name for c in fmt.categories] == ["colour"]
    assert fmt.categories[0].values == ("blue", "green", "red", "(missing)")
    rows = data.rows["train"].to_pydict()
    assert len(rows["id"]) == len(data.train) == 144  # 200 - 40 test - 16 validation
    size = np.array(rows["size"])
    assert fmt.numbers[0].mean == pytest.approx(size.mean())
    assert fmt.numbers[0].std == pytest.approx(size.std())
    assert not fmt.numbers[0].indicator
    weight = np.array([np.nan if w is None else w for w in rows["weight"]])
    median = np.nanmedian(weight)
    filled = np.where(np.isnan(weight), median, weight)
    assert fmt.numbers[1].median == pytest.approx(median) and fmt.numbers[1].indicator
    assert fmt.numbers[1].mean == pytest.approx(filled.mean())
    # the tensor: size, weight, weight's missing indicator, colour's index
    inputs = data.train.inputs
    assert inputs.shape == (144, 4) and fmt.width == 4 and fmt.cardinalities == (5,)
    assert torch.allclose(inputs[:, 0], torch.tensor((size - size.mean()) / size.std()).float())
    assert inputs[:, 2].tolist() == [float(w is None) for w in rows["weight"]]
    expected = [fmt.categories[0].values.index(c or "(missing)") for c in rows["colour"]]
    assert inputs[:, 3].tolist() == expected
    assert data.train.targets.tolist() == [fmt.classes.index(v) for v in rows["label"]]
    # the test rows are prepared with the training figures, never their own
    test = data.rows["test"].to_pydict()
    assert torch.allclose(
        data.test.inputs[:, 0],
        torch.tensor((np.array(test["size"]) - size.mean()) / size.std()).float(),
    )


def test_a_value_never_seen_in_training_gets_its_own_index(tmp_path: Path) -> None:
    train_columns = measurements(80)
    test_columns = measurements(20, seed=1)
    test_columns["colour"] = ["purple"] * 20
    config = table_experiment(
        write_table(tmp_path / "train.csv", train_columns),
        test_path=str(write_table(tmp_path / "test.csv", test_columns)),
    )
    data = built(config)
    assert len(data.test) == 20 and len(data.train) + len(data.val) == 80
    assert set(data.test.inputs[:, 3].tolist()) == {4.0}  # len(values): never seen


@pytest.mark.parametrize(
    ("target", "task", "why"),
    [
        ([float(i) / 3 for i in range(30)], "regression", "float column with 30 distinct"),
        ([float(i % 3) for i in range(30)], "classification", "3 distinct values"),
        (list(range(30)), "classification", "30 distinct values"),  # integers are classes
    ],
)
def test_auto_task(tmp_path: Path, target: list, task: str, why: str, capsys) -> None:
    path = write_table(tmp_path / "t.csv", {"x": [float(i) for i in range(30)], "y": target})
    config = table_experiment(path, target="y", features="auto")
    assert built(config).table.task == task
    assert why in capsys.readouterr().out


# The module's tests share what its module-scoped fixtures make: with pytest-xdist they
# all run in one worker, so it is made once.
pytestmark = pytest.mark.xdist_group("table_run")


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small mlp trained on train.csv, scored on test.csv: (folder, run)."""
    folder = tmp_path_factory.mktemp("table")
    write_table(folder / "train.csv", measurements(400))
    write_table(folder / "test.csv", measurements(100, seed=1))
    config = table_experiment(folder / "train.csv", test_path=str(folder / "test.csv"))
    train(validate(config), run_dir=folder / "run", quiet=True)
    return folder, folder / "run"


def test_predict_agrees_with_eval_to_the_row(cli, table_run, tmp_path: Path) -> None:
    folder, run = table_run
    scored = cli("eval", "--ckpt", run, "--out", tmp_path / "e.json")
    assert scored.exit_code == 0, scored.output
    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["samples"] == 100 and scores["accuracy"] > 0.85  # it learned the rule
    result = cli("predict", "--ckpt", run, folder / "test.csv", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    with (tmp_path / "p.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    truth = measurements(100, seed=1)["label"]
    assert [row["input"] for row in rows] == [f"{folder / 'test.csv'}:{i}" for i in range(1, 101)]
    correct = sum(row["prediction"] == label for row, label in zip(rows, truth, strict=True))
    assert correct == round(scores["accuracy"] * 100)
    # The same rows without the target column (and in parquet) get the same answers.
    unlabelled = measurements(100, seed=1)
    del unlabelled["label"]
    write_table(tmp_path / "new.parquet", unlabelled)
    again = cli("predict", "--ckpt", run, tmp_path / "new.parquet", "--out", tmp_path / "q.csv")
    assert again.exit_code == 0, again.output
    with (tmp_path / "q.csv").open() as handle:
        assert [r["prediction"] for r in csv.DictReader(handle)] == [r["prediction"] for r in rows]


def test_a_predict_table_with_other_columns_is_refused(cli, table_run, tmp_path: Path) -> None:
    _, run = table_run
    columns = measurements(10)
    columns["size_cm"] = columns.pop("size")
    write_table(tmp_path / "renamed.csv", columns)
    out = tmp_path / "p.csv"
    result = cli("predict", "--ckpt", run, tmp_path / "renamed.csv", "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = result.stderr
    assert "it lacks 'size'" in message and "it has 'size_cm', which training did not" in message
    assert not out.exists()
    columns = measurements(10)
    columns["size"] = [str(v) for v in columns["size"]]
    columns["size"][4] = "big"
    write_table(tmp_path / "typo.csv", columns)
    typo = cli("predict", "--ckpt", run, tmp_path / "typo.csv", "--out", out)
    assert typo.exit_code == 2 and "column 'size'" in typo.stderr and "row 5" in typo.stderr
    assert "'big'" in typo.stderr and not out.exists()


def test_eval_prepares_a_changed_table_as_the_model_learned(cli, table_run, tmp_path) -> None:
    """Scaling the training file changes what a refit would compute; eval uses the
    checkpoint's preparation, so its test score does not move."""
    _, run = table_run
    before = cli("eval", "--ckpt", run, "--out", tmp_path / "a.json")
    assert before.exit_code == 0, before.output
    columns = measurements(400)
    columns["size"] = [s * 10 for s in columns["size"]]
    write_table(tmp_path / "train.csv", columns)
    changed = cli(
        "eval",
        "--ckpt",
        run,
        "--set",
        f"data.path={tmp_path / 'train.csv'}",
        "--out",
        tmp_path / "b.json",
    )
    assert changed.exit_code == 0, changed.output
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["loss"] == b["loss"] and a["accuracy"] == b["accuracy"]


def test_a_stopped_table_run_resumes_exactly_on_the_cli(cli, write_config, tmp_path) -> None:
    path = write_table(tmp_path / "t.csv", measurements(300))

    def config(stop_at: int, name: str) -> Path:
        raw = table_experiment(path, features={"id": "drop", "colour": "category"})
        raw.update(misbehaving_loss(tmp_path, "sigterm", stop_at))
        raw["model"]["dropout"] = 0.2
        return write_config(raw, name=name)

    whole = cli("train", config(NEVER, "whole.yaml"), "--run-dir", tmp_path / "whole", "-q")
    assert whole.exit_code == 0, whole.output
    # 192 training rows in batches of 16: 12 steps an epoch; call 20 is in epoch 2.
    cut = cli("train", config(20, "cut.yaml"), "--run-dir", tmp_path / "cut", "-q")
    assert cut.exit_code == 143
    assert 12 < read_payload(tmp_path / "cut" / "last.pt")["state"]["step"] < 24
    resumed = cli("resume", tmp_path / "cut", "--set", f"loss.at_call={NEVER}", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


def test_categories_are_embedded_by_mlp_and_one_hot_for_linear_models(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.csv", measurements(100))
    train(validate(table_experiment(path)), run_dir=tmp_path / "mlp", quiet=True)
    weights = read_payload(tmp_path / "mlp" / "last.pt")["model"]
    assert weights["inputs.embeddings.0.weight"].shape == (5, 4)  # round(1.6 * 5**0.56)
    assert weights["network.1.weight"].shape == (16, 3 + 4)
    narrow = table_experiment(path)
    narrow["model"]["category_embedding"] = 2
    train(validate(narrow), run_dir=tmp_path / "narrow", quiet=True)
    weights = read_payload(tmp_path / "narrow" / "last.pt")["model"]
    assert weights["inputs.embeddings.0.weight"].shape == (5, 2)
    logistic = table_experiment(path)
    logistic["model"] = {"name": "logistic"}
    logistic["loss"] = {"name": "bce"}
    train(validate(logistic), run_dir=tmp_path / "logistic", quiet=True)
    weights = read_payload(tmp_path / "logistic" / "last.pt")["model"]
    # size, weight, weight missing, then colour one-hot over 5 values
    assert weights["network.1.weight"].shape == (1, 3 + 5)
    assert not any(name.startswith("inputs.") for name in weights)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"target": "lable"},
            "data.target='lable': data.path has no such column; did you mean 'label'?",
        ),
        ({"rows": {"x": [1.0, 2.0, 3.0], "label": ["a", "a", "a"]}}, "has only one value ('a')"),
        (
            {"rows": {"x": [None, None, None], "z": [1.0, 2.0, 3.0], "label": ["a", "b", "a"]}},
            "column 'x' is missing in every training row",
        ),
        (
            {
                "rows": {"x": ["1", "2", "two", "4", "5"], "label": ["a", "b", "a", "b", "a"]},
                "features": {"x": "number"},
            },
            "column 'x' is a number column, but data row 3 holds 'two'",
        ),
        ({"text": ""}, "is empty; it needs a header line and rows"),
        ({"text": "x,label\n"}, "has a header but no rows"),
        ({"text": "x,label\n1,a\n2,b,7\n"}, "cannot read"),
        (
            {"rows": {"x": [1.0, 2.0, 3.0], "label": ["a", None, "b"]}},
            "the target 'label' is missing in 1 row(s) (the first is data row 2)",
        ),
        ({"features": {"colour": "number"}}, "column 'colour' is a number column, but data row 1"),
        ({"features": {"size": "float"}}, "data.features.size"),
        ({"path_name": "t.xlsx"}, "must end in .csv, .tsv, .parquet"),
        ({"path_name": "none.csv", "no_file": True}, "data.path='none.csv': no such file"),
    ],
)
def test_bad_tables_stop_before_any_run_directory(
    cli, tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    path = tmp_path / change.get("path_name", "t.csv")
    if "text" in change:
        path.write_text(change["text"])
    elif not change.get("no_file"):
        columns = change.get("rows") or measurements(40)
        if path.suffix == ".csv":
            write_table(path, columns)
    data: dict[str, Any] = {"features": change.get("features", "auto")}
    if "target" in change:
        data["target"] = change["target"]
    config = table_experiment(Path(path.name), **data)  # relative to the working folder
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(config))
    result = cli("train", tmp_path / "e.yaml", "--run-dir", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert expected in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_an_exported_table_model_takes_the_prepared_tensor(cli, table_run, tmp_path) -> None:
    import onnxruntime

    folder, run = table_run
    result = cli("export", "--ckpt", run, "--format", "onnx", "--out", tmp_path / "export")
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "export" / "model.json").read_text())
    assert "standardized" in card["input"]["preprocessing"]
    assert card["inputs"]["table"]["categories"][0]["name"] == "colour"
    data = built(table_experiment(folder / "train.csv", test_path=str(folder / "test.csv")))
    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"))
    outputs = session.run(None, {"input": data.test.inputs.numpy()})[0]
    predicted = [card["inputs"]["class_names"][i] for i in outputs.argmax(1)]
    on_cli = cli("predict", "--ckpt", run, folder / "test.csv", "--out", tmp_path / "p.json")
    assert on_cli.exit_code == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    assert predicted == [row["prediction"] for row in rows]
