"""A table of rows, one column the target: `.csv`, `.tsv` or `.parquet`, read by pyarrow.

The rows are split first (a test file, or a seeded `test_fraction` of the rows; then
the validation rows), and only then is the preparation of the features fitted, on the
training rows alone (`data.table_format`). What each column is, which task the target
makes and why, and how many rows each split got are said in the first lines of a run.

The `Dataset` this returns is an in-memory one that also keeps its rows as read: a
resumed or evaluated run re-prepares them with the format stored in its checkpoint,
so a model is always fed the way it was trained, even if the file changed since.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from trainkit.config.registry import register_dataset, suggest
from trainkit.console import print_status, warn
from trainkit.data.dataset import DataInfo
from trainkit.data.memory import HoldOutParams, InMemoryDataset, Split
from trainkit.data.table_format import TableFormat, Task, fit, sorted_values
from trainkit.errors import UserError, first_line, missing_extra

if TYPE_CHECKING:
    import pyarrow as pa

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
AUTO_REGRESSION_VALUES = 20  # task auto: a float target with more distinct values is regression
Kind = Literal["number", "category", "drop"]


class TableOptions(HoldOutParams):
    """How a table's columns are read: shared by table files and Hugging Face tables."""

    task: Literal["auto", "classification", "regression"] = Field(
        "auto",
        description=f"auto: regression for a float target with more than "
        f"{AUTO_REGRESSION_VALUES} distinct values, else classification.",
    )
    features: Literal["auto"] | dict[str, Kind] = Field(
        "auto",
        description="What each column is: number, category or drop. auto: numeric columns "
        "are numbers, the rest categories; a mapping sets the columns it names and leaves "
        "the rest to auto.",
    )


class TableParams(TableOptions):
    gives_images = False

    path: str = Field(description="The table: a .csv, .tsv or .parquet file with a header.")
    target: str = Field(description="The column to predict.")
    test_path: str | None = Field(
        None,
        description="A table of test rows with the same columns; null: test_fraction of the "
        "rows of path are held out.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TableParams:
        for key in ("path", "test_path"):
            value = getattr(self, key)
            if value is not None and Path(value).suffix.lower() not in TABLE_SUFFIXES:
                raise ValueError(
                    f"{key} {value!r} must end in {', '.join(TABLE_SUFFIXES)}, which says how "
                    "to read it"
                )
        if isinstance(self.features, dict) and self.target in self.features:
            raise ValueError(
                f"features names the target {self.target!r}; the target is never a feature"
            )
        return self

    def prepare(self) -> None:
        if importlib.util.find_spec("pyarrow") is None:
            raise missing_extra("data.name: table", ["pyarrow"], "tables")
        for key in ("path", "test_path"):
            value = getattr(self, key)
            if value is not None and not Path(value).expanduser().is_file():
                raise UserError(f"data.{key}={value!r}: no such file.")


def read_table(path: Path, what: str) -> pa.Table:
    """The table in `path` (by its suffix), with an error in words for a file that is
    missing, empty or not in that format."""
    if importlib.util.find_spec("pyarrow") is None:
        raise missing_extra("reading tables", ["pyarrow"], "tables")
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UserError(f"{what}: {path} is not a {', '.join(TABLE_SUFFIXES)} file.")
    if not path.is_file():
        raise UserError(f"{what}: {path}: no such file.")
    if path.stat().st_size == 0:
        raise UserError(f"{what}: {path} is empty; it needs a header line and rows.")
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
        else:
            table = pa_csv.read_csv(
                path,
                parse_options=pa_csv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","),
                convert_options=pa_csv.ConvertOptions(strings_can_be_null=True),
            )
    except (pa.ArrowInvalid, OSError) as exc:
        kind = "Parquet" if suffix == ".parquet" else suffix[1:].upper()
        raise UserError(f"{what}: cannot read {path} as {kind} ({first_line(exc)}).") from None
    if table.num_rows == 0:
        raise UserError(f"{what}: {path} has a header but no rows.")
    names = table.column_names
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise UserError(
            f"{what}: {path} has more than one column named {', '.join(map(repr, doubled))}; "
            "give every column its own name."
        )
    return table


@dataclass
class TableDataset(InMemoryDataset):
    """An in-memory dataset that keeps its rows as read, to prepare them again."""

    rows: dict[str, pa.Table] = field(default_factory=dict)
    source_file: str = ""

    def with_format(self, table_format: TableFormat) -> TableDataset:
        """The same rows prepared by `table_format` (a checkpoint's) instead."""
        splits = {name: _split(rows, table_format, name) for name, rows in self.rows.items()}
        return TableDataset(
            **splits,
            info=_info(table_format),
            table=table_format,
            source=self.source,
            rows=self.rows,
            source_file=self.source_file,
        )


@register_dataset("table", TableParams)
def table(params: TableParams, seed: int) -> TableDataset:
    """Rows of a .csv, .tsv or .parquet table; one column is the target."""
    params.prepare()
    path = Path(params.path).expanduser()
    rows = read_table(path, "data.path")
    test_rows = None
    if params.test_path is not None:
        test_rows = read_table(Path(params.test_path).expanduser(), "data.test_path")
    return table_dataset(
        params,
        seed,
        rows,
        test_rows,
        target=params.target,
        target_key="data.target",
        what=("data.path", "data.test_path"),
        label=str(path),
    )


def table_dataset(
    params: TableOptions,
    seed: int,
    rows: pa.Table,
    test_rows: pa.Table | None,
    *,
    target: str,
    target_key: str,
    what: tuple[str, str],
    label: str,
    classes: tuple[str, ...] | None = None,
) -> TableDataset:
    """The dataset of a table's rows and, if it has them, its test rows: checked, split,
    and prepared by a format fitted on the training rows. `what` names the two tables
    in messages, `label` the source in the run's first lines; `classes` gives the class
    order where the source defines one (else the target's values, sorted)."""
    import pyarrow as pa
    import torch

    from trainkit.data.memory import hold_out

    _check_target(rows, target, what[0], target_key)
    kinds = _kinds(rows, params, target, what[0])
    task, why = _task(rows, params, target)
    _check_values(rows, kinds, target, task, f"{what[0]} {label}")
    if test_rows is not None:
        _check_target(test_rows, target, what[1], target_key)
        _check_values(test_rows, kinds, target, task, what[1])
    if task == "classification" and classes is None:
        classes = sorted_values(rows.column(target))
    classes = classes if task == "classification" else ()
    if task == "classification" and len(classes) < 2:
        raise UserError(
            f"data: the target {target!r} has only one value ({classes[0] if classes else ''!r})"
            f" in {label}; classification needs at least two classes. Check the column, or set "
            "data.task: regression."
        )

    positions = torch.arange(rows.num_rows)
    if test_rows is None:
        rest, held = params.hold_out_test(rows.num_rows)
        test_rows = rows.take(pa.array(held.numpy()))
        rows = rows.take(pa.array(rest.numpy()))
        positions = torch.arange(rows.num_rows)
    fit_index, val_index = hold_out(Split(positions, positions), params.val_fraction, seed)
    splits = {
        "train": rows.take(pa.array(fit_index.inputs.numpy())),
        "val": rows.take(pa.array(val_index.inputs.numpy())),
        "test": test_rows,
    }
    table_format = fit(
        splits["train"], target=target, task=task, kinds=kinds, classes=classes, source=what[0]
    )
    _warn_identifiers(table_format, splits["train"].num_rows)
    print_status(
        f"table {label}: {splits['train'].num_rows:,} training, {splits['val'].num_rows:,} "
        f"validation and {splits['test'].num_rows:,} test rows; {len(table_format.numbers)} "
        f"number and {len(table_format.categories)} category columns"
        f"{f', {len(table_format.dropped)} dropped' if table_format.dropped else ''}; {why}"
    )
    return TableDataset(
        **{name: _split(part, table_format, name) for name, part in splits.items()},
        info=_info(table_format),
        table=table_format,
        source=f"{Path(label).name} ({sum(t.num_rows for t in splits.values()):,} rows, in memory)",
        rows=splits,
        source_file=label,
    )


def _split(rows: pa.Table, table_format: TableFormat, name: str) -> Split:
    source = f"data ({name} rows)"
    return Split(table_format.features(rows, source), table_format.targets(rows, source))


def _info(table_format: TableFormat) -> DataInfo:
    classification = table_format.task == "classification"
    return DataInfo(
        (table_format.width,),
        len(table_format.classes) if classification else None,
        table_format.classes,
    )


def _check_target(rows: pa.Table, target: str, what: str, key: str) -> None:
    if target not in rows.column_names:
        raise UserError(
            f"{key}={target!r}: {what} has no such column"
            f"{suggest(target, rows.column_names)} Its columns: {', '.join(rows.column_names)}."
        )


def _check_values(
    rows: pa.Table, kinds: dict[str, Kind], target: str, task: Task, source: str
) -> None:
    """Every number column holds numbers, and every row a target, in the whole file: an
    error names the file's own row, not a row of a shuffled split."""
    import pyarrow as pa

    from trainkit.data.table_format import check_no_missing_targets, numbers_of

    def check(name: str) -> None:
        column_type = rows.column(name).type
        if not (pa.types.is_integer(column_type) or pa.types.is_floating(column_type)):
            numbers_of(rows, name, source)  # text in a number column: says where

    for name, kind in kinds.items():
        if kind == "number" and name in rows.column_names:
            check(name)
    check_no_missing_targets(rows, target, source)
    if task == "regression":
        check(target)


def _kinds(rows: pa.Table, params: TableOptions, target: str, what: str) -> dict[str, Kind]:
    """What each column other than the target is: declared, or by its type."""
    import pyarrow as pa

    declared = params.features if isinstance(params.features, dict) else {}
    if target in declared:
        raise UserError(
            f"data.features names the target {target!r}; the target is never a feature."
        )
    columns = [n for n in rows.column_names if n != target]
    unknown = [n for n in declared if n not in columns]
    if unknown:
        raise UserError(
            f"data.features names {', '.join(map(repr, unknown))}, which {what} does not "
            f"have{suggest(unknown[0], columns)} Its columns: {', '.join(rows.column_names)}."
        )
    kinds: dict[str, Kind] = {}
    for name in columns:
        column_type = rows.column(name).type
        numeric = pa.types.is_integer(column_type) or pa.types.is_floating(column_type)
        kinds[name] = declared.get(name, "number" if numeric else "category")
    if not any(kind != "drop" for kind in kinds.values()):
        raise UserError(
            f"data: {what} has no feature columns besides the target {target!r}; a model "
            "needs at least one column to learn from."
        )
    return kinds


def _task(rows: pa.Table, params: TableOptions, target: str) -> tuple[Task, str]:
    """The task, and the words that say how it was chosen."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = rows.column(target)
    numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    if params.task == "regression":
        if not numeric:
            raise UserError(
                f"data.task: regression needs a numeric target, but {target!r} holds "
                f"text (e.g. {column.drop_null()[0].as_py()!r}); set data.task: classification."
            )
        return "regression", f"regression on {target!r} (data.task)"
    if params.task == "classification":
        return "classification", f"classification of {target!r} (data.task)"
    distinct = pc.count_distinct(column).as_py()
    if pa.types.is_floating(column.type) and distinct > AUTO_REGRESSION_VALUES:
        return "regression", (
            f"regression, since {target!r} is a float column with {distinct:,} distinct "
            "values (data.task: auto)"
        )
    return "classification", (
        f"classification, since {target!r} has {distinct:,} distinct values "
        f"(data.task: auto; set data.task: regression if it is a quantity)"
    )


def _warn_identifiers(table_format: TableFormat, rows: int) -> None:
    for column in table_format.categories:
        if rows >= 50 and len(column.values) >= 0.9 * rows:
            warn(
                f"data: the category column {column.name!r} has a different value in almost "
                f"every training row ({len(column.values):,} of {rows:,}), like an identifier; "
                f"if it is one, drop it: data.features: {{{column.name}: drop}}."
            )
