"""How the rows of a table become a model's input tensor, fitted on the training rows.

A model trained on a table only scores new rows correctly if they are prepared exactly
as its training rows were: the same columns, standardized with the same means, missing
values filled with the same medians, categories mapped to the same indices. That
preparation is a `TableFormat`, fitted once on the training split (never the validation
or test rows) and stored, as plain data, in every checkpoint and export beside the
weights, like the image normalization of `data.images.ImageFormat`. `trainkit predict`
and `eval` apply the stored format; they never refit it.

The tensor a row becomes is float32, in this order: each number column standardized
(missing values filled with the training median first); one 0/1 indicator per number
column that had missing values in training; then each category column's index, as a
float (`len(values)` for a value never seen in training). `models.table_inputs` turns
those indices into embeddings or one-hot vectors inside the model, so an exported model
takes this tensor as it is.

pyarrow does the column work (casts, null handling, lookups); torch is imported only to
hand over the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from trainkit.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from torch import Tensor

Task = Literal["classification", "regression"]
MISSING_CATEGORY = "(missing)"  # the value a missing category cell is counted as


@dataclass(frozen=True)
class NumberColumn:
    name: str
    mean: float  # after filling missing values with the median
    std: float  # 1.0 where the training values are all equal
    median: float
    indicator: bool  # had missing values in training: gets a 0/1 missing-indicator input


@dataclass(frozen=True)
class CategoryColumn:
    name: str
    values: tuple[str, ...]  # index i is values[i]; index len(values): never seen in training

    @property
    def cardinality(self) -> int:
        return len(self.values) + 1


@dataclass(frozen=True)
class TableFormat:
    """The fitted preparation of a table's rows (see the module docstring)."""

    target: str
    task: Task
    numbers: tuple[NumberColumn, ...]
    categories: tuple[CategoryColumn, ...]
    dropped: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()  # a classification target's values, in index order

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.numbers) + tuple(c.name for c in self.categories)

    @property
    def numeric_width(self) -> int:
        """Inputs before the category indices: numbers, then missing indicators."""
        return len(self.numbers) + sum(c.indicator for c in self.numbers)

    @property
    def width(self) -> int:
        return self.numeric_width + len(self.categories)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(c.cardinality for c in self.categories)

    def check_columns(self, table: pa.Table, source: str, *, target: bool) -> None:
        """Refuse a table whose columns are not the ones this format was fitted on: every
        feature column must be there (and the target, when `target`); the only others
        allowed are the target and the columns training dropped."""
        present = set(table.column_names)
        needed = set(self.feature_columns) | ({self.target} if target else set())
        missing = [n for n in (*self.feature_columns, self.target) if n in needed - present]
        extra = [n for n in table.column_names if n not in needed | {self.target, *self.dropped}]
        if missing or extra:
            said = []
            if missing:
                said.append(f"it lacks {_names(missing)}")
            if extra:
                said.append(f"it has {_names(extra)}, which training did not see")
            raise UserError(
                f"{source}: the columns differ from the training table's: {'; '.join(said)}. "
                f"The model takes the columns {_names(self.feature_columns)} (the target "
                f"{self.target!r} may be there or not); rename or remove columns to match."
            )

    def features(self, table: pa.Table, source: str) -> Tensor:
        """The (rows, width) float32 input tensor of `table` (see the module docstring)."""
        import numpy as np
        import torch

        # Filled column by column (contiguous writes), then turned into rows in one copy.
        out = np.empty((self.width, table.num_rows), dtype=np.float32)
        indicator = len(self.numbers)
        for i, column in enumerate(self.numbers):
            values = numbers_of(table, column.name, source)
            missing = np.isnan(values)
            out[i] = (np.where(missing, column.median, values) - column.mean) / column.std
            if column.indicator:
                out[indicator] = missing
                indicator += 1
        for i, column in enumerate(self.categories):
            out[self.numeric_width + i] = category_index(table, column.name, column.values)
        return torch.from_numpy(out).T.contiguous()

    def targets(self, table: pa.Table, source: str) -> Tensor:
        """Class indices (int64) or regression values (float32, one column) of `table`."""
        import numpy as np
        import torch

        check_no_missing_targets(table, self.target, source)
        if self.task == "regression":
            values = numbers_of(table, self.target, source)
            return torch.from_numpy(values.astype(np.float32)).unsqueeze(1)
        index = category_index(table, self.target, self.classes)
        unknown = np.flatnonzero(index == len(self.classes))
        if len(unknown):
            value = _strings(table.column(self.target))[int(unknown[0])]
            raise UserError(
                f"{source}: the target {self.target!r} has the value {value!r} (data row "
                f"{int(unknown[0]) + 1}) that the training rows never have; the model knows "
                f"the classes {_names(self.classes)}. Remove those rows or retrain with them."
            )
        return torch.from_numpy(index.astype(np.int64))

    def describe(self) -> str:
        """In words, for an export's model card: how a row becomes the input tensor."""
        parts = [f"{len(self.numbers)} number columns standardized (x - mean) / std"]
        if any(c.indicator for c in self.numbers):
            parts.append(
                "missing numbers filled with the training median, then one 0/1 missing "
                f"indicator each for {_names([c.name for c in self.numbers if c.indicator])}"
            )
        if self.categories:
            parts.append(
                f"then {len(self.categories)} category columns as indices into their "
                "training values (len(values) for a value never seen), as floats"
            )
        return "; ".join(parts) + " (inputs.table lists the columns, in order, and the figures)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "task": self.task,
            "numbers": [
                {
                    "name": c.name,
                    "mean": c.mean,
                    "std": c.std,
                    "median": c.median,
                    "indicator": c.indicator,
                }
                for c in self.numbers
            ],
            "categories": [{"name": c.name, "values": list(c.values)} for c in self.categories],
            "dropped": list(self.dropped),
            "classes": list(self.classes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableFormat:
        return cls(
            target=data["target"],
            task=data["task"],
            numbers=tuple(
                NumberColumn(
                    c["name"],
                    float(c["mean"]),
                    float(c["std"]),
                    float(c["median"]),
                    bool(c["indicator"]),
                )
                for c in data["numbers"]
            ),
            categories=tuple(
                CategoryColumn(c["name"], tuple(c["values"])) for c in data["categories"]
            ),
            dropped=tuple(data.get("dropped", ())),
            classes=tuple(data.get("classes", ())),
        )


def fit(
    table: pa.Table,
    *,
    target: str,
    task: Task,
    kinds: dict[str, Literal["number", "category", "drop"]],
    classes: tuple[str, ...],
    source: str,
) -> TableFormat:
    """The format of `table`'s training rows: `kinds` says what each non-target column is."""
    import numpy as np

    numbers, categories = [], []
    for name, kind in kinds.items():
        if kind == "number":
            values = numbers_of(table, name, source)
            missing = np.isnan(values)
            if missing.all():
                raise _all_missing(name, source)
            median = float(np.median(values[~missing]))
            filled = np.where(missing, median, values)
            std = float(filled.std())
            numbers.append(
                NumberColumn(
                    name,
                    mean=float(filled.mean()),
                    std=std if std > 0 else 1.0,
                    median=median,
                    indicator=bool(missing.any()),
                )
            )
        elif kind == "category":
            column = table.column(name)
            if column.null_count == len(column):
                raise _all_missing(name, source)
            categories.append(CategoryColumn(name, sorted_values(column)))
    return TableFormat(
        target=target,
        task=task,
        numbers=tuple(numbers),
        categories=tuple(categories),
        dropped=tuple(name for name, kind in kinds.items() if kind == "drop"),
        classes=classes,
    )


def numbers_of(table: pa.Table, name: str, source: str) -> np.ndarray:
    """Column `name` as float64, NaN where missing; a value that is not a number is an
    error naming its row and column."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(name)
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    try:
        as_float = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        strings = _strings(column)
        for row, value in enumerate(strings):
            try:
                float(value) if value is not None else None
            except ValueError:
                raise UserError(
                    f"{source}: column {name!r} is a number column, but data row {row + 1} "
                    f"holds {value!r}. Fix the value, or declare the column a category: "
                    f"data.features: {{{name}: category}}."
                ) from None
        as_float = pc.cast(pc.cast(column, pa.string()), pa.float64())
    return as_float.to_numpy(zero_copy_only=False).astype(np.float64, copy=True)


def category_index(table: pa.Table, name: str, values: tuple[str, ...]) -> np.ndarray:
    """Each cell's index in `values` (as text; a missing cell is MISSING_CATEGORY), and
    len(values) for a value not among them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    strings = pc.fill_null(pc.cast(table.column(name), pa.string()), MISSING_CATEGORY)
    index = pc.index_in(strings, value_set=pa.array(values, type=pa.string()))
    return pc.fill_null(index, len(values)).to_numpy(zero_copy_only=False)


def sorted_values(column: pa.ChunkedArray) -> tuple[str, ...]:
    """The distinct values of a column as text, numbers in numeric order, text sorted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    unique = pc.unique(column.drop_null())
    if pa.types.is_integer(unique.type) or pa.types.is_floating(unique.type):
        ordered = pc.take(unique, pc.sort_indices(unique))
        texts = [str(v) for v in pc.cast(ordered, pa.string()).to_pylist()]
    else:
        texts = sorted(str(v) for v in pc.cast(unique, pa.string()).to_pylist())
    return tuple(texts) + ((MISSING_CATEGORY,) if column.null_count else ())


def _strings(column: pa.ChunkedArray) -> list[str | None]:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(column, pa.string()).to_pylist()


def check_no_missing_targets(table: pa.Table, target: str, source: str) -> None:
    import pyarrow.compute as pc

    column = table.column(target)
    if column.null_count:
        first = int(pc.index(pc.is_null(column), True).as_py())
        raise UserError(
            f"{source}: the target {target!r} is missing in {column.null_count} row(s) (the "
            f"first is data row {first + 1}); fill those values in or remove the rows."
        )


def _all_missing(name: str, source: str) -> UserError:
    return UserError(
        f"{source}: column {name!r} is missing in every training row, so nothing can be "
        f"learned from it; drop it with data.features: {{{name}: drop}} or fill it in."
    )


def _names(names: Any, shown: int = 8) -> str:
    """Column names as a message lists them: the first `shown`, then how many more."""
    names = list(names)
    listed = ", ".join(repr(n) for n in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")
