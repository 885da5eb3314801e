"""Synthetic sets for the first lessons: a noisy line to fit, two classes to separate.

Both are generated from the experiment seed alone, so every run of a config sees the same
samples, and need no files or network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from trainkit.config.registry import DatasetParams, register_dataset

if TYPE_CHECKING:
    import torch

    from trainkit.data.memory import InMemoryDataset


class SyntheticParams(DatasetParams):
    gives_images = False

    n_train: int = Field(1000, ge=2, description="Training samples (validation is taken out).")
    n_test: int = Field(200, ge=1, description="Test samples.")
    n_features: int = Field(1, ge=1, description="Input features per sample.")
    noise: float = Field(0.5, ge=0, description="Standard deviation of the added Gaussian noise.")


class SyntheticLinearParams(SyntheticParams):
    weight: float = Field(2.0, description="True weight of every feature (y = w.x + b + noise).")
    bias: float = Field(3.0, description="True intercept b.")


class SyntheticLogisticParams(SyntheticParams):
    n_features: int = Field(2, ge=1, description="Input features per sample.")
    noise: float = Field(0.1, ge=0, description="Noise on the score before thresholding.")


def _features(params: SyntheticParams, generator: torch.Generator) -> torch.Tensor:
    import torch

    return torch.randn(params.n_train + params.n_test, params.n_features, generator=generator)


def _dataset(
    params: SyntheticParams,
    seed: int,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    classes: int | None,
) -> InMemoryDataset:
    from trainkit.data.dataset import DataInfo
    from trainkit.data.memory import InMemoryDataset, Split, hold_out

    n = params.n_train
    fit, val = hold_out(Split(inputs[:n], targets[:n]), params.val_fraction, seed)
    names = tuple(str(c) for c in range(classes)) if classes else ()
    return InMemoryDataset(
        train=fit,
        val=val,
        test=Split(inputs[n:], targets[n:]),
        info=DataInfo((params.n_features,), classes, names),
    )


@register_dataset("synthetic_linear", SyntheticLinearParams)
def synthetic_linear(params: SyntheticLinearParams, seed: int) -> InMemoryDataset:
    """Regression: y = w.x + b + noise (defaults w=2, b=3), x ~ N(0, 1)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = _features(params, generator)
    noise = params.noise * torch.randn(len(x), 1, generator=generator)
    y = params.weight * x.sum(dim=1, keepdim=True) + params.bias + noise
    return _dataset(params, seed, x, y, classes=None)


@register_dataset("synthetic_logistic", SyntheticLogisticParams)
def synthetic_logistic(params: SyntheticLogisticParams, seed: int) -> InMemoryDataset:
    """Two classes split by a random hyperplane through the data, x ~ N(0, 1)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = _features(params, generator)
    normal = torch.randn(params.n_features, generator=generator)
    score = x @ normal + params.noise * torch.randn(len(x), generator=generator)
    return _dataset(params, seed, x, (score > 0).long(), classes=2)
