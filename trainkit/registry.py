"""Component registries: each entry is a name, a pydantic parameter model and a builder.

A registry is what lets a YAML file say `model: {name: lenet, dropout: 0.1}`. The config
schema is generated from the registered parameter models, `trainkit ls` prints them, and
the recipe calls the builder with the validated parameters. One declaration per component
drives all three, so names, defaults and documentation cannot drift apart.

Registering must stay cheap: the modules that register built-in components import torch
inside their builders, never at module level, so that `trainkit validate`, `ls` and
`schema` answer without loading torch.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from trainkit.errors import UserError

BuilderT = TypeVar("BuilderT", bound=Callable[..., Any])


class Params(BaseModel):
    """Base of every parameter model: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ModelParams(Params):
    """What every model accepts: its input and output sizes, normally read off the dataset."""

    input_shape: list[int] | None = Field(
        None, description="Input shape without the batch dimension; null: from the dataset."
    )
    num_classes: int | None = Field(
        None, ge=1, description="Outputs (classes, or regression targets); null: from the dataset."
    )


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


class OptimizerParams(Params):
    """What every optimizer accepts."""

    lr: float = Field(0.01, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty on the weights.")


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
            if existing is not None and existing.builder.__qualname__ != builder.__qualname__:
                raise ValueError(f"{self.kind} {name!r} is already registered")
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

_BUILTIN_MODULES = ("trainkit.models", "trainkit.data", "trainkit.losses", "trainkit.optim")


def load_components(plugins: list[str] | tuple[str, ...] = (), search: Path | None = None) -> None:
    """Import the built-in component modules and the user's plugin modules.

    A plugin is an importable module name; the current directory and `search` (the
    config file's folder) are tried first, so a `my_models.py` beside the config works.
    """
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    extra_paths = [str(Path.cwd())] + ([str(search.resolve())] if search else [])
    for path in extra_paths:
        if path not in sys.path:
            sys.path.insert(0, path)
    for module in plugins:
        try:
            importlib.import_module(module)
        except (ImportError, SyntaxError) as exc:
            raise UserError(
                f"plugins: cannot import {module!r} ({exc}). A plugin is a Python module name "
                "importable from the current directory, the config file's folder or PYTHONPATH, "
                "e.g. `plugins: [my_models]` for a my_models.py beside the config."
            ) from None
