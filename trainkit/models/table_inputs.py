"""Category columns of a table inside the model: each index becomes an embedding or a
one-hot vector, so every model (linear, logistic, mlp, a plugin's) trains on tables.

A table's input tensor (`data.table_format`) ends with one float index per category
column. `build_model` puts `CategoryInputs` in front of the architecture when there
are such columns: the numbers pass through, each index is looked up in its column's
embedding (its width is the model's `category_width`) or expanded to one-hot. Living
in the model, it is trained, checkpointed and exported with it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def embedding_width(cardinality: int) -> int:
    """A rule of thumb for an embedding's width that grows slowly with the number of
    values (fastai's, min(600, round(1.6 * n ** 0.56)))."""
    return min(600, round(1.6 * cardinality**0.56))


class CategoryInputs(nn.Module):
    """(batch, numbers + categories) floats to (batch, numbers + encoded categories)."""

    def __init__(self, numbers: int, cardinalities: tuple[int, ...], widths: list[int | None]):
        super().__init__()
        self.numbers = numbers
        self.cardinalities = cardinalities
        self.embeddings = nn.ModuleList(
            nn.Embedding(n, w) if w is not None else nn.Identity()
            for n, w in zip(cardinalities, widths, strict=True)
        )
        self.width = numbers + sum(
            w if w is not None else n for n, w in zip(cardinalities, widths, strict=True)
        )

    def forward(self, inputs: Tensor) -> Tensor:
        inputs = inputs.flatten(1)
        parts = [inputs[:, : self.numbers]]
        indices = inputs[:, self.numbers :].long()
        for i, (embedding, n) in enumerate(zip(self.embeddings, self.cardinalities, strict=True)):
            column = indices[:, i].clamp(0, n - 1)  # out of range: the never-seen bucket
            if isinstance(embedding, nn.Embedding):
                parts.append(embedding(column))
            else:
                parts.append(nn.functional.one_hot(column, n).to(inputs.dtype))
        return torch.cat(parts, dim=1)


class TableModel(nn.Module):
    """An architecture behind the category encoding."""

    def __init__(self, inputs: CategoryInputs, network: nn.Module) -> None:
        super().__init__()
        self.inputs = inputs
        self.network = network

    def forward(self, inputs: Tensor) -> Tensor:
        return self.network(self.inputs(inputs))
