"""Hugging Face datasets, through the `datasets` library (the `huggingface` extra).

`path` is a Hub dataset id (read from the local Hugging Face cache, or fetched into it
where the network allows), a folder written by `save_to_disk`, or a folder of data
files the library reads (Parquet, CSV, JSON, or class folders of images). A dataset
with an image column is an image dataset like an image folder (`data.image_data`: the
same options, in memory or streamed by the same rule); its images are decoded from
their stored bytes by the same decoders as image files. A dataset without one is a
table (`data.table`), its label column the target. Class names come from the label
column's `ClassLabel` names where it has them, else from its values.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from trainkit.config.registry import register_dataset, suggest
from trainkit.console import print_status
from trainkit.data.image_data import CACHE_VERSION, DEFAULT_SIZE, ImageParams, cache_folder
from trainkit.data.images import UnreadableImage, decode_bytes
from trainkit.data.table import TableOptions
from trainkit.errors import UserError, first_line, missing_extra

if TYPE_CHECKING:
    import torch

    from trainkit.data.dataset import Dataset


class HuggingFaceParams(ImageParams, TableOptions):
    path: str = Field(
        description="A Hub dataset id (user/name), a folder written by save_to_disk, or a "
        "folder of data files (Parquet, CSV, JSON, class folders of images)."
    )
    subset: str | None = Field(None, description="The dataset's configuration, if it has several.")
    image_column: str | None = Field(
        None,
        description="The column of images; null: the dataset's one column of type Image, "
        "if it has one (else the dataset is a table).",
    )
    label_column: str = Field("label", description="The column of classes (or values) to predict.")
    train_split: str = Field("train", description="The split trained on (validation is held out).")
    test_split: str | None = Field(
        None,
        description="The split scored at the end; null: 'test' if the dataset has it, else "
        "test_fraction of the training split is held out.",
    )
    channels: Literal[1, 3] = Field(3, description="Images: 3 decodes RGB, 1 greyscale.")

    def prepare(self) -> None:
        if importlib.util.find_spec("datasets") is None:
            raise missing_extra("data.name: huggingface", ["datasets"], "huggingface")
        looks_local = self.path.startswith((".", "/", "~")) or Path(self.path).exists()
        if looks_local and not Path(self.path).expanduser().exists():
            raise UserError(f"data.path={self.path!r}: no such folder or file.")


_SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes
_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


class DatasetImages:
    """One split's image column as an ImageSource: each cell's stored bytes, decoded."""

    def __init__(self, dataset: Any, column: str, label: str) -> None:
        import datasets

        self.dataset = dataset.select_columns([column]).cast_column(
            column, datasets.Image(decode=False)
        )
        self.column, self.label = column, label

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        return f"{self.label} row {index}"

    def decode(self, index: int, channels: int) -> torch.Tensor:
        cell = self.dataset[index][self.column]
        if not cell or not (cell.get("bytes") or cell.get("path")):
            raise UnreadableImage(f"{self.name(index)}: no image")
        try:
            data = cell["bytes"] or Path(cell["path"]).read_bytes()
        except OSError as exc:
            raise UnreadableImage(f"{self.name(index)}: {first_line(exc)}") from None
        return decode_bytes(data, channels, self.name(index))


def _load(params: HuggingFaceParams) -> Any:
    """The dataset's splits (a DatasetDict), with errors in words."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    datasets.disable_progress_bars()  # the run's own status lines say what is happening
    local = Path(params.path).expanduser()
    saved = local.is_dir() and any((local / f).is_file() for f in _SAVED_MARKERS)
    try:
        if saved:
            loaded = datasets.load_from_disk(str(local))
        elif local.is_file():  # one data file: the library's reader for its format
            builder = _FILE_BUILDERS.get(local.suffix.lower())
            if builder is None:
                raise UserError(
                    f"data.path={params.path!r}: a single file must be one of "
                    f"{', '.join(_FILE_BUILDERS)}; or point data.path at a folder."
                )
            loaded = datasets.load_dataset(builder, data_files=str(local))
        else:
            source = str(local) if local.exists() else params.path
            loaded = datasets.load_dataset(source, params.subset)
    except (ConnectionError, DatasetNotFoundError) as exc:
        if local.exists():
            raise UserError(f"data.path={params.path!r}: {first_line(exc)}.") from None
        raise UserError(
            f"data.path={params.path!r} is not in the Hugging Face cache here, and the Hub "
            f"cannot be reached ({first_line(exc)}). Where the network is, run: python -c "
            f"\"import datasets; datasets.load_dataset('{params.path}').save_to_disk('saved')\""
            f", copy the folder saved/ here and set data.path to it (or copy the Hugging Face "
            f"cache, ~/.cache/huggingface, and set HF_DATASETS_OFFLINE=1)."
        ) from None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"data.path={params.path!r}: the datasets library cannot load it ({first_line(exc)})."
        ) from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({params.train_split: loaded})
    return loaded


def _splits(params: HuggingFaceParams, loaded: Any) -> tuple[str, str | None]:
    names = list(loaded)
    for key, wanted in (("train_split", params.train_split), ("test_split", params.test_split)):
        if wanted is not None and wanted not in loaded:
            raise UserError(
                f"data.{key}={wanted!r}: {params.path} has no such split"
                f"{suggest(wanted, names)} Its splits: {', '.join(names)}."
            )
    test = params.test_split or ("test" if "test" in loaded else None)
    return params.train_split, test


def _column(params: HuggingFaceParams, features: Any, key: str, name: str) -> None:
    if name not in features:
        raise UserError(
            f"data.{key}={name!r}: {params.path} has no such column"
            f"{suggest(name, list(features))} Its columns: {', '.join(features)}."
        )


def _labels(split: Any, column: str, classes: tuple[str, ...], what: str) -> torch.Tensor:
    """A split's class indices: ClassLabel codes, or the values' places among `classes`."""
    import torch

    from trainkit.data.table_format import TableFormat

    rows = split.select_columns([column]).with_format("arrow")[:]
    if _is_class_label(split.features[column]):
        codes = rows.column(column).to_numpy(zero_copy_only=False)
        return torch.tensor(codes, dtype=torch.long)
    as_table = TableFormat(column, "classification", (), (), classes=classes)
    return as_table.targets(rows, what)


def _is_class_label(feature: Any) -> bool:
    import datasets

    return isinstance(feature, datasets.ClassLabel)


def _square_side(images: DatasetImages, channels: int) -> int:
    """The side of the first image when it is square (MNIST's 28, CIFAR's 32), else the
    default size."""
    try:
        height, width = images.decode(0, channels).shape[-2:]
    except UnreadableImage:
        return DEFAULT_SIZE
    return height if height == width else DEFAULT_SIZE


@register_dataset("huggingface", HuggingFaceParams)
def huggingface(params: HuggingFaceParams, seed: int) -> Dataset:
    """A Hugging Face dataset: Hub id (cached), save_to_disk folder, or data files."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    from trainkit.data.image_data import Subset, image_dataset
    from trainkit.data.streaming import LabelledImages
    from trainkit.data.table import table_dataset
    from trainkit.data.table_format import sorted_values

    params.prepare()
    loaded = _load(params)
    train_name, test_name = _splits(params, loaded)
    train_split = loaded[train_name]
    features = train_split.features
    _column(params, features, "label_column", params.label_column)
    images = [n for n, f in features.items() if isinstance(f, datasets.Image)]
    image_column = params.image_column or (images[0] if len(images) == 1 else None)
    if params.image_column is not None:
        _column(params, features, "image_column", params.image_column)
    label = features[params.label_column]
    where = f"{params.path} [{train_name}]"
    test_where = f"{params.path} [{test_name}]"

    if image_column is None:  # a table
        rows = train_split.with_format("arrow")[:]
        test_rows = loaded[test_name].with_format("arrow")[:] if test_name else None
        classes = None
        if _is_class_label(label):
            classes = tuple(label.names)
            names = pa.array(classes)

            def named(table: pa.Table) -> pa.Table:
                at = table.column_names.index(params.label_column)
                return table.set_column(
                    at, params.label_column, pc.take(names, table.column(params.label_column))
                )

            rows, test_rows = named(rows), test_rows and named(test_rows)
        return table_dataset(
            params,
            seed,
            rows,
            test_rows,
            target=params.label_column,
            target_key="data.label_column",
            what=(where, test_where),
            label=params.path,
            classes=classes,
        )

    if _is_class_label(label):
        classes = tuple(label.names)
    else:
        column = train_split.select_columns([params.label_column]).with_format("arrow")[:]
        classes = sorted_values(column.column(params.label_column))
    train_source = DatasetImages(train_split, image_column, where)
    train_labels = _labels(train_split, params.label_column, classes, where)
    if test_name is not None:
        test_split = loaded[test_name]
        train = LabelledImages(train_source, train_labels)
        test = LabelledImages(
            DatasetImages(test_split, image_column, test_where),
            _labels(test_split, params.label_column, classes, test_where),
        )
        how = f"splits {train_name!r} and {test_name!r}"
    else:
        test_split = None
        rest, held = params.hold_out_test(len(train_source))
        train = LabelledImages(Subset(train_source, rest.tolist()), train_labels[rest])
        test = LabelledImages(Subset(train_source, held.tolist()), train_labels[held])
        how = f"split {train_name!r}, {params.test_fraction:.0%} held out for test (split_seed)"
    print_status(
        f"huggingface {params.path}: {len(train):,} training and {len(test):,} test images "
        f"in {len(classes)} classes ({how}; images {image_column!r}, labels "
        f"{params.label_column!r})"
    )
    side = params.image_size or _square_side(train_source, params.channels)
    size = (side, side)

    def cache() -> Path:  # keyed by the datasets library's fingerprints of the splits
        prints = [getattr(s, "_fingerprint", None) for s in (train_split, test_split) if s]
        key = f"{CACHE_VERSION} {params.path} {train_name} {test_name} {prints} {size} "
        key += f"{params.resize} {params.channels} {params.skip_bad} {params.test_fraction} "
        key += f"{params.split_seed} {image_column} {params.label_column}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        return cache_folder(params, "huggingface") / f"{Path(params.path).name}-{digest}.pt"

    return image_dataset(
        params,
        seed,
        train=train,
        test=test,
        classes=classes,
        channels=params.channels,
        size=size,
        cache=cache,
    )
