"""`trainkit predict`: a trained model applied to new files.

Images go through the reader and normalization the model was trained and evaluated
with (`data.images.read_image`, the checkpoint's stored format), batched like `eval`,
so a file of the test set gets the class `eval` counted for it. A model trained on a
table reads tables with its columns and prepares their rows with the stored
`TableFormat`, so a test row gets the prediction `eval` scored; other feature models
read rows from .csv, .npy or .pt files. A file that cannot be read is skipped and listed,
never a traceback; the caller decides whether that fails the command.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trainkit.data.images import IMAGE_EXTENSIONS, FileList, Images, find_images, load_decoders
from trainkit.data.table import TABLE_SUFFIXES, read_table
from trainkit.data.workers import leave_stop_signals_to_parent
from trainkit.errors import UserError, first_line
from trainkit.files import UNREADABLE_TORCH_FILE, atomic_write_bytes, check_writable
from trainkit.inference.trained_model import TrainedModel

FEATURE_SUFFIXES = (".csv", ".npy", ".pt")
OUTPUT_SUFFIXES = (".csv", ".json", ".jsonl")


@dataclass
class Prediction:
    input: str  # an image path, or `rows.csv:3` (the third data row)
    prediction: str | None = None  # the class, as eval counts it; None for regression
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability or score)
    values: list[float] = field(default_factory=list)  # regression outputs

    def as_dict(self, score: str) -> dict[str, Any]:
        if self.prediction is None:
            return {"input": self.input, "values": self.values}
        return {
            "input": self.input,
            "prediction": self.prediction,
            score: next((v for name, v in self.top if name == self.prediction), None),
            "top": [{"class": name, score: value} for name, value in self.top],
        }


@dataclass
class Predictions:
    rows: list[Prediction]
    skipped: list[str]  # "path: why", for files that could not be read
    score: str  # "probability" where the loss defines one, else "score"
    seconds: float = 0.0


def check_output(path: Path | None) -> None:
    """Refuse an output path that cannot work, before any prediction is made."""
    if path is None:
        return
    check_writable(path, "--out")
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(
            f"--out {path}: the name must end in {', '.join(OUTPUT_SUFFIXES)}, which picks "
            "the format."
        )


def collect(trained: TrainedModel, inputs: list[Path]) -> list[Path]:
    """The files to read: image files, and the images inside folders (recursively) for an
    image model; .csv/.npy/.pt files of rows for a feature model."""
    images = trained.spec.image is not None
    table = trained.spec.table
    files: list[Path] = []
    for path in inputs:
        if not path.exists():
            raise UserError(f"predict: {path} does not exist.")
        if table is not None:
            if path.is_dir() or path.suffix.lower() not in TABLE_SUFFIXES:
                raise UserError(
                    f"predict: {path} is not a {', '.join(TABLE_SUFFIXES)} file; this model "
                    f"takes rows of a table with the columns {', '.join(table.feature_columns)}."
                )
            files.append(path)
        elif path.is_dir():
            if not images:
                raise UserError(
                    f"predict: {path} is a folder, but this model takes rows of "
                    f"{_width(trained)} features: pass .csv, .npy or .pt files."
                )
            found = find_images(path)
            if not found:
                raise UserError(
                    f"predict: no image files under {path} (looked for "
                    f"{', '.join(IMAGE_EXTENSIONS)})."
                )
            files.extend(found)
        elif not images and path.suffix.lower() not in FEATURE_SUFFIXES:
            raise UserError(
                f"predict: {path} is not a .csv, .npy or .pt file; this model takes rows of "
                f"{_width(trained)} features."
            )
        elif images and path.suffix.lower() in FEATURE_SUFFIXES:
            raise UserError(
                f"predict: {path} is a file of rows, but this model takes images: pass image "
                "files or folders."
            )
        else:
            files.append(path)
    return files


def _width(trained: TrainedModel) -> int:
    return math.prod(trained.spec.input_shape)


def _image_batches(
    trained: TrainedModel, files: list[Path], batch_size: int, workers: int, skipped: list[str]
) -> Iterator[tuple[list[str], Tensor]]:
    image = trained.spec.image
    assert image is not None
    loader = torch.utils.data.DataLoader(
        Images(FileList([str(f) for f in files]), image.channels, image.size, image.resize),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=Images.collate,
        generator=torch.Generator(),  # not the global one: predicting must not move it
        worker_init_fn=leave_stop_signals_to_parent,
    )
    start = 0
    for images, good, errors in loader:
        skipped.extend(errors)
        yield [str(files[start + i]) for i in good], images
        start += len(good) + len(errors)


def read_rows(path: Path, width: int) -> Tensor:
    """The float rows of a .csv (an optional header line), .npy or .pt file, (N, width)."""
    import numpy as np

    try:
        if path.suffix.lower() == ".csv":
            rows = list(csv.reader(path.read_text().splitlines()))
            if rows and not _numeric(rows[0]):
                rows = rows[1:]  # a header
            array = np.array([[float(v) for v in row] for row in rows if row], dtype=np.float32)
        elif path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(loaded, Tensor):
                raise ValueError(f"it holds a {type(loaded).__name__}, not a tensor")
            array = loaded.float().numpy()
    except UNREADABLE_TORCH_FILE as exc:
        raise UserError(f"predict: cannot read rows from {path} ({first_line(exc)}).") from None
    if array.ndim == 1:  # one feature per row, or a single row
        array = array[:, None] if width == 1 else array[None, :]
    rows = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)
    if rows.shape[1] != width or not len(rows):
        raise UserError(
            f"predict: {path} has {len(rows)} rows of {rows.shape[1]} values; this model "
            f"takes rows of {width} features."
        )
    return torch.from_numpy(np.ascontiguousarray(rows))


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _table_rows(trained: TrainedModel, path: Path) -> Tensor:
    """The rows of a table file, prepared as the model's training rows were."""
    table_format = trained.spec.table
    assert table_format is not None
    table = read_table(path, "predict")
    table_format.check_columns(table, f"predict: {path}", target=False)
    return table_format.features(table, f"predict: {path}")


def _row_batches(
    trained: TrainedModel, files: list[Path], batch_size: int
) -> Iterator[tuple[list[str], Tensor]]:
    shape = trained.spec.input_shape
    for path in files:
        if trained.spec.table is not None:
            rows = _table_rows(trained, path)
        else:
            rows = read_rows(path, _width(trained)).view(-1, *shape)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            names = [f"{path}:{start + i + 1}" for i in range(len(chunk))]
            yield names, chunk


def predict(
    trained: TrainedModel,
    files: list[Path],
    *,
    topk: int = 5,
    batch_size: int | None = None,
    workers: int = 0,
    advance: Callable[[int], None] = lambda n: None,
) -> Predictions:
    """The model's prediction for every readable input in `files` (see `collect`).

    Batches default to the run's evaluation batch size, the one `eval` scores with.
    `advance(n)` is called as n more inputs are done.
    """
    config, spec, objective = trained.config, trained.spec, trained.objective
    size = batch_size or config.data.eval_batch_size or config.data.batch_size
    skipped: list[str] = []
    batches = (
        _image_batches(trained, files, size, workers, skipped)
        if spec.image is not None
        else _row_batches(trained, files, size)
    )
    score = "probability" if objective.probabilities is not None else "score"
    rows: list[Prediction] = []
    if spec.image is not None:
        load_decoders()  # a one-time import, not part of the throughput
    start = time.perf_counter()
    before = 0
    for names, inputs in batches:
        if names:
            rows.extend(_rows(trained, names, trained(inputs), topk))
        advance(len(rows) + len(skipped) - before)
        before = len(rows) + len(skipped)
    return Predictions(rows, skipped, score, time.perf_counter() - start)


def _rows(trained: TrainedModel, names: list[str], outputs: Tensor, topk: int) -> list[Prediction]:
    objective, spec = trained.objective, trained.spec
    if objective.classify is None:  # regression
        return [Prediction(name, values=v) for name, v in zip(names, outputs.tolist(), strict=True)]
    classes = spec.class_names or tuple(str(i) for i in range(spec.num_outputs))
    scores = objective.probabilities(outputs) if objective.probabilities else outputs
    k = min(topk, scores.shape[1])
    values, indices = scores.topk(k, dim=1)
    predicted = objective.classify(outputs).tolist()
    return [
        Prediction(
            name,
            prediction=classes[label],
            top=[(classes[i], v) for i, v in zip(index, value, strict=True)],
        )
        for name, label, index, value in zip(
            names, predicted, indices.tolist(), values.tolist(), strict=True
        )
    ]


def write(predictions: Predictions, path: Path) -> None:
    """Every row to a .csv, .json (one list) or .jsonl (one object a line) file."""
    score = predictions.score
    records = [row.as_dict(score) for row in predictions.rows]
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(records, indent=2) + "\n"
    elif suffix == ".jsonl":
        text = "".join(json.dumps(record) + "\n" for record in records)
    else:
        text = _csv(predictions)
    atomic_write_bytes(path, text.encode())


def _csv(predictions: Predictions) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    rows = predictions.rows
    if rows and rows[0].prediction is None:
        width = len(rows[0].values)
        writer.writerow(
            ["input", *(["value"] if width == 1 else [f"value_{i + 1}" for i in range(width)])]
        )
        for row in rows:
            writer.writerow([row.input, *row.values])
        return buffer.getvalue()
    k = max((len(row.top) for row in rows), default=1)
    score = predictions.score
    header = ["input", "prediction"]
    for i in range(1, k + 1):
        header += [f"class_{i}", f"{score}_{i}"]
    writer.writerow(header)
    for row in rows:
        cells: list[Any] = [row.input, row.prediction]
        for name, value in row.top:
            cells += [name, f"{value:.6g}"]
        writer.writerow(cells)
    return buffer.getvalue()
