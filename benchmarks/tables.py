"""Tables: the shipped configs against scikit-learn, loading and epoch throughput.

    python benchmarks/tables.py [--rows 1000000] [--columns 50] [--repeats 3]

1. Peers. scikit-learn's breast_cancer and diabetes tables are written to CSV (the
   command in the configs' comments) and `configs/breast_cancer_logistic.yaml` and
   `configs/diabetes_linear.yaml` are trained on them. scikit-learn's LogisticRegression
   (on standardized features, its defaults otherwise) and LinearRegression (least
   squares) are fitted on the same training rows and scored on the same test rows.
   Targets: accuracy within 1 point; test MSE within 2%.
2. Loading. A Parquet table of --rows rows and --columns columns (numbers, one of them
   the two-class target): pyarrow reading it alone, and trainkit's whole dataset build
   (read, split, fit the preparation, prepare every split). Reported, no target.
3. Throughput. An mlp (one hidden layer of 256, Adam, batches of 1024) trained over the
   prepared training rows: trainkit's loop (epoch_time in metrics.jsonl, training only)
   and a hand-written loop over the same tensors (a shuffled index per epoch, forward,
   loss, backward, step). They alternate --repeats times and the medians of rows per
   second are compared. Target: trainkit at least 0.9x.

Every target is printed as met or MISSED; the exit code is 1 if any is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def check(label: str, value: float, limit: float, at_most: bool) -> bool:
    met = value <= limit if at_most else value >= limit
    print(
        f"  {label}: {value:.4g} (target {'<=' if at_most else '>='} {limit:.4g}) "
        f"{'met' if met else 'MISSED'}"
    )
    return met


def trained(config_path: Path, folder: Path, **data: Any) -> tuple[Any, dict[str, Any]]:
    """Train a shipped config with its data path pointed into `folder`: the dataset (for
    its splits) and the run's final metrics."""
    from trainkit.config.registry import DATASETS
    from trainkit.config.schema import validate
    from trainkit.training.run import train

    raw = yaml.safe_load(config_path.read_text())
    raw["data"].update(data)
    raw["trainer"]["device"] = "cpu"
    config = validate(raw)
    result = train(config, run_dir=folder / config.name, quiet=True)
    return DATASETS.build(config.data, config.seed), result.metrics


def peers(folder: Path) -> bool:
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.preprocessing import StandardScaler

    load_breast_cancer(as_frame=True).frame.to_csv(folder / "breast_cancer.csv", index=False)
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(folder / "diabetes.csv", index=False)
    ok = True

    def rows(data: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
        table = data.rows[split]
        target = data.table.target
        features = table.drop_columns([target]).to_pandas().to_numpy()
        return features, table.column(target).to_numpy()

    print("1. the shipped table configs against scikit-learn (same training and test rows)")
    data, metrics = trained(
        ROOT / "configs" / "breast_cancer_logistic.yaml",
        folder,
        path=str(folder / "breast_cancer.csv"),
    )
    x_fit, y_fit = np.concatenate([rows(data, "train")[0], rows(data, "val")[0]]), None
    y_fit = np.concatenate([rows(data, "train")[1], rows(data, "val")[1]])
    x_test, y_test = rows(data, "test")
    scaler = StandardScaler().fit(x_fit)
    reference = LogisticRegression(max_iter=10_000).fit(scaler.transform(x_fit), y_fit)
    theirs = float((reference.predict(scaler.transform(x_test)) == y_test).mean())
    ours = metrics["test/accuracy"]
    print(
        f"  breast_cancer test accuracy: trainkit {ours:.4f}, scikit-learn {theirs:.4f} "
        f"({len(y_test)} test rows)"
    )
    ok &= check("accuracy behind scikit-learn, points", 100 * (theirs - ours), 1.0, at_most=True)

    data, metrics = trained(
        ROOT / "configs" / "diabetes_linear.yaml", folder, path=str(folder / "diabetes.csv")
    )
    x_fit = np.concatenate([rows(data, "train")[0], rows(data, "val")[0]])
    y_fit = np.concatenate([rows(data, "train")[1], rows(data, "val")[1]])
    x_test, y_test = rows(data, "test")
    least_squares = LinearRegression().fit(x_fit, y_fit)
    theirs = float(((least_squares.predict(x_test) - y_test) ** 2).mean())
    ours = metrics["test/loss"]
    print(
        f"  diabetes test MSE: trainkit {ours:.1f}, least squares {theirs:.1f} "
        f"({len(y_test)} test rows)"
    )
    ok &= check("MSE over least squares", ours / theirs, 1.02, at_most=True)
    return ok


def write_big_table(path: Path, rows: int, columns: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    features = rng.standard_normal((rows, columns - 1), dtype=np.float32) * 3 + 1
    weights = rng.standard_normal(columns - 1)
    label = (features @ weights > 0).astype(np.int64)
    table = pa.table({**{f"x{i}": features[:, i] for i in range(columns - 1)}, "y": label})
    pq.write_table(table, path)


def loading(path: Path, config: dict[str, Any], repeats: int) -> Any:
    import pyarrow.parquet as pq

    from trainkit.config.registry import DATASETS
    from trainkit.config.schema import validate
    from trainkit.console import quiet_output

    print(f"2. loading {path.stat().st_size / 2**20:,.0f} MiB of Parquet")
    alone, whole, data = [], [], None
    checked = validate(config)
    for _ in range(repeats):
        start = time.perf_counter()
        pq.read_table(path)
        alone.append(time.perf_counter() - start)
        start = time.perf_counter()
        with quiet_output(True):
            data = DATASETS.build(checked.data, checked.seed)
        whole.append(time.perf_counter() - start)
    print(
        f"  pyarrow read_table alone: {statistics.median(alone):.2f} s; trainkit's dataset "
        f"(read, split, fit, prepare): {statistics.median(whole):.2f} s (medians of {repeats})"
    )
    return data


def hand_loop_epoch(inputs: torch.Tensor, targets: torch.Tensor, seed: int) -> float:
    """Rows per second of one training epoch of the loop a user writes by hand."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(inputs.shape[1], 256), nn.ReLU(), nn.Linear(256, 2)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for _ in range(2):  # the second epoch is timed, as trainkit's is
        start = time.perf_counter()
        order = torch.randperm(len(targets))
        for batch in order.split(1024):
            loss = F.cross_entropy(model(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(len(targets) / (time.perf_counter() - start))
    return rates[-1]


def trainkit_epoch(config: dict[str, Any], folder: Path) -> float:
    from trainkit.config.schema import validate
    from trainkit.training.run import train

    run = Path(tempfile.mkdtemp(dir=folder)) / "run"
    train(validate(config), run_dir=run, quiet=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "epoch_time" in r]
    return epochs[-1]["samples_per_sec"]


def throughput(config: dict[str, Any], data: Any, folder: Path, repeats: int) -> bool:
    print(f"3. one training epoch over {len(data.train):,} prepared rows (mlp [256], Adam, 1024)")
    ours, theirs = [], []
    for repeat in range(repeats):
        ours.append(trainkit_epoch(config, folder))
        theirs.append(hand_loop_epoch(data.train.inputs, data.train.targets, repeat))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"  rows/s: trainkit {a:,.0f}, hand-written loop {b:,.0f} (medians of {repeats})")
    return check("trainkit / hand-written", a / b, 0.9, at_most=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ok = peers(folder)
        path = folder / "big.parquet"
        write_big_table(path, args.rows, args.columns)
        config = {
            "name": "big_table",
            "model": {"name": "mlp", "hidden": [256]},
            "data": {
                "name": "table",
                "path": str(path),
                "target": "y",
                "batch_size": 1024,
                "val_fraction": 0.05,
                "test_fraction": 0.05,
            },
            "optimizer": {"name": "adam", "lr": 1e-3},
            "trainer": {"epochs": 2, "device": "cpu", "test_at_end": False},
            "logging": {"tensorboard": False, "log_every_steps": 10_000},
        }
        data = loading(path, config, args.repeats)
        ok &= throughput(config, data, folder, args.repeats)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
