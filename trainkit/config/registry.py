"""Component registries: each entry is a name, a pydantic parameter model and a builder.

A registry is what lets a YAML file say `model: {name: lenet, dropout: 0.1}`. The config
schema is generated from the registered parameter models, `trainkit ls` prints them, and
a run calls the builder with the validated parameters. One declaration per component
drives all three, so names, defaults and documentation cannot drift apart.

Registering must stay cheap: the modules that register built-in components import torch
inside their builders, never at module level, so that `trainkit validate`, `ls` and
`schema` answer without loading torch.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from trainkit.errors import UserError

BuilderT = TypeVar("BuilderT", bound=Callable[..., Any])


class Params(BaseModel):
    """Base of every parameter model: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ModelParams(Params):
    """What every model accepts: its input and output sizes (normally read off the dataset),
    and where its starting weights come from."""

    input_shape: list[PositiveInt] | None = Field(
        None, description="Input shape without the batch dimension; null: from the dataset."
    )
    num_outputs: int | None = Field(
        None,
        ge=1,
        description="Output width: one per class, or per regression target; null: from the "
        "dataset.",
    )
    init_from: str | None = Field(
        None,
        description="Start from the weights in this file (a trainkit checkpoint, a safetensors "
        "file or a saved state_dict): every tensor whose name and shape match is loaded, the "
        "rest keep their fresh initialization. Only a new run reads it; resume does not.",
    )
    freeze: list[str] = Field(
        default_factory=list,
        description="Keep the parameters under these name prefixes fixed, e.g. [conv1, layer1]; "
        "BatchNorm layers inside them keep their statistics fixed too.",
    )

    def prepare(self) -> None:
        """Check (or fetch) the files building this model reads, before a new run reads
        any data: a missing `init_from` file, or pretrained weights that cannot be had,
        must not cost a dataset's decoding first."""
        if self.init_from is not None and not Path(self.init_from).expanduser().is_file():
            raise UserError(f"model.init_from={self.init_from!r}: no such file.")

    def label(self) -> str:
        """How the first line of a run names this model."""
        return str(getattr(self, "name", type(self).__name__))

    def for_checkpoint(self) -> ModelParams:
        """These parameters for rebuilding a model whose weights a checkpoint will replace,
        so pretrained weights need not be read (see models.torchvision_zoo)."""
        return self

    def category_width(self, cardinality: int) -> int | None:
        """How this model takes a table's category column of `cardinality` values: the
        width of its embedding, or None for a one-hot vector (linear models' way)."""
        return None

    def preferred_inputs(self) -> dict[str, Any]:
        """Data settings this model asks for where the config leaves them unset (null).

        Pretrained weights know the image size and normalization they were trained with;
        a dataset that has fields of these names (image_folder) takes them.
        """
        return {}


class LossParams(Params):
    """Parameters common to every loss (none yet)."""


class DatasetParams(Params):
    """What every dataset accepts: batching and the validation hold-out."""

    batch_size: int = Field(64, ge=1, description="Samples per training batch.")
    eval_batch_size: int | None = Field(
        None, ge=1, description="Samples per evaluation batch; null means batch_size."
    )
    val_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Share of the training set held out (seeded) as the validation split.",
    )
    drop_last: bool = Field(False, description="Drop the last, smaller training batch of an epoch.")
    balanced: bool = Field(
        False,
        description="Class-balanced sampling: each training batch draws its samples (with "
        "replacement) so that every class is equally likely, seeded by (seed, epoch); an "
        "epoch is still as many samples as the training split has.",
    )

    # False where the samples are never images (tables, synthetic features), so options
    # that need images are refused before any data is read; None: known once it is read.
    gives_images: ClassVar[bool | None] = None

    def prepare(self) -> None:
        """Check what can be checked without reading the data (its files are there, the
        libraries that read it are installed), before a new run reads any of it."""


class OptimizerParams(Params):
    """What every optimizer accepts."""

    lr: float = Field(0.01, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty on the weights.")
    decay_biases_and_norms: bool = Field(
        True,
        description="Apply weight_decay to biases and normalization layers too (PyTorch's "
        "default); false decays only the weight matrices and kernels (every parameter with "
        "more than one dimension), as Nielsen's book and most modern recipes do.",
    )


class SchedulerParams(Params):
    """Parameters common to every learning-rate schedule (none yet)."""


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    name: str
    params: type[Params]
    builder: Callable[..., Any]

    @property
    def summary(self) -> str:
        """First line of the builder's docstring: what `trainkit ls` shows."""
        doc = inspect.getdoc(self.builder) or ""
        return doc.splitlines()[0] if doc else ""


class Registry:
    """Named builders of one kind (models, datasets, ...), each with its parameter model."""

    def __init__(self, kind: str, section: str, base: type[Params]) -> None:
        self.kind = kind
        self.section = section
        self.base = base
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, params: type[Params] | None = None
    ) -> Callable[[BuilderT], BuilderT]:
        """Decorator: `@MODELS.register("lenet", LeNetParams)` above the builder function."""
        params = params or self.base
        if not issubclass(params, self.base):
            raise TypeError(f"{self.kind} {name!r}: params must subclass {self.base.__name__}")

        def decorator(builder: BuilderT) -> BuilderT:
            existing = self._entries.get(name)
            # The same function seen again (its module re-imported) replaces itself; any
            # other builder under a taken name is a clash, never a silent replacement.
            if existing is not None and _identity(existing.builder) != _identity(builder):
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by "
                    f"{existing.builder.__module__}; register it under another name"
                )
            self._entries[name] = Entry(name, params, builder)
            return builder

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return (self._entries[name] for name in self.names())

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(
                f"{self.section}.name: there is no {self.kind} called {name!r}"
                f"{suggest(name, self.names())} Available: {', '.join(self.names())}."
            ) from None

    def build(self, params: Params, *args: Any, **kwargs: Any) -> Any:
        """Call the builder registered under `params.name` with the validated parameters."""
        return self.get(params.name).builder(params, *args, **kwargs)  # type: ignore[attr-defined]


def _identity(builder: Callable[..., Any]) -> tuple[str, str]:
    return builder.__module__, builder.__qualname__


def suggest(word: str, choices: list[str]) -> str:
    """Ends a sentence: '; did you mean 'lenet'?' for the closest valid name, else '.'."""
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else "."


MODELS = Registry("model", "model", ModelParams)
DATASETS = Registry("dataset", "data", DatasetParams)
LOSSES = Registry("loss", "loss", LossParams)
OPTIMIZERS = Registry("optimizer", "optimizer", OptimizerParams)
SCHEDULERS = Registry("scheduler", "scheduler", SchedulerParams)

REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "datasets": DATASETS,
    "losses": LOSSES,
    "optimizers": OPTIMIZERS,
    "schedulers": SCHEDULERS,
}

register_model = MODELS.register
register_dataset = DATASETS.register
register_loss = LOSSES.register
register_optimizer = OPTIMIZERS.register
register_scheduler = SCHEDULERS.register
