"""The experiment schema, its validation, and errors a user can act on.

The schema is assembled from the registries (a discriminated union on `name` per
component section), so a plugin's model is validated, listed and documented exactly like
a built-in one. Validation errors are turned into one paragraph that names the field path,
what was wrong and, for a misspelt key or component, the closest valid name.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from trainkit.errors import UserError, shown
from trainkit.registry import (
    DATASETS,
    LOSSES,
    MODELS,
    OPTIMIZERS,
    REGISTRIES,
    SCHEDULERS,
    DatasetParams,
    LossParams,
    ModelParams,
    OptimizerParams,
    Params,
    Registry,
    SchedulerParams,
    load_components,
    suggest,
)

Monitor = Literal["val/loss", "val/accuracy"]


class EarlyStoppingConfig(Params):
    patience: int = Field(5, ge=1, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")


class TrainerConfig(Params):
    epochs: int = Field(10, ge=1, description="Number of passes over the training split.")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
        description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 autocast on CUDA where supported, else fp16 with a grad "
        "scaler; fp32 on CPU and MPS.",
    )
    compile: bool = Field(False, description="Wrap the model in torch.compile.")
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="channels_last memory format; auto: for conv nets on CUDA and CPU."
    )
    accumulate_steps: int = Field(1, ge=1, description="Batches per optimizer step.")
    grad_clip: float | None = Field(
        None, gt=0, description="Clip the gradient norm to this value; null disables."
    )
    eval_every: int = Field(1, ge=1, description="Evaluate on the validation split every N epochs.")
    test_at_end: bool = Field(
        True,
        description="Score the final weights on the test split when training ends; logged "
        "as test/loss and test/accuracy.",
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="Stop when checkpoint.monitor stops improving; null disables."
    )
    deterministic: bool = Field(
        False,
        description="Deterministic kernels where PyTorch has them (slower on CUDA; CPU runs "
        "are reproducible without it).",
    )


class CheckpointConfig(Params):
    root: str = Field("checkpoints", description="Runs go to <root>/<name>/<run-id>/.")
    monitor: Monitor = Field("val/loss", description="Metric that picks best.pt.")
    mode: Literal["min", "max"] | None = Field(
        None, description="min or max; null: max for accuracy, min for loss."
    )
    every_epochs: int = Field(1, ge=1, description="Write epoch_NNNN.pt every N epochs.")
    keep_last: int = Field(2, ge=1, description="How many epoch_NNNN.pt files to keep.")
    every_steps: int | None = Field(
        None, ge=1, description="Also refresh last.pt every N optimizer steps; null disables."
    )

    @model_validator(mode="after")
    def _infer_mode(self) -> CheckpointConfig:
        if self.mode is None:
            self.mode = "max" if self.monitor.endswith("accuracy") else "min"
        return self


class LoggingConfig(Params):
    log_every_steps: int = Field(
        50, ge=1, description="Steps between progress updates and train/loss points."
    )
    tensorboard: bool = Field(True, description="Write TensorBoard events to tb/.")


class Config(Params):
    """A whole experiment. The component sections are typed by their base here; the
    schema actually used (see `config_model`) narrows each to the registered choices."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Experiment name (letters, digits, . _ -).",
    )
    seed: int = Field(0, ge=0, description="Seeds weights, data split, data order, augmentation.")
    plugins: list[str] = Field(
        default_factory=list, description="Modules to import so their components register."
    )
    model: ModelParams
    data: DatasetParams
    loss: LossParams
    optimizer: OptimizerParams
    scheduler: SchedulerParams | None = None
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _model_preferences(self) -> Config:
        """Data settings left null take the model's preferences (pretrained weights' image
        size and normalization), so the resolved config shows what a run really used."""
        for key, value in self.model.preferred_inputs().items():
            if key in type(self.data).model_fields and getattr(self.data, key) is None:
                setattr(self.data, key, value)
        return self


def _choices(registry: Registry) -> Any:
    """The tagged union of every parameter model in `registry`, selected by `name`."""
    variants = [
        create_model(
            entry.params.__name__,
            __base__=entry.params,
            __doc__=entry.summary,
            name=(Literal[entry.name], Field(description=f"The {registry.kind}.")),
        )
        for entry in registry
    ]
    if len(variants) == 1:
        return variants[0]
    return Annotated[Union[tuple(variants)], Field(discriminator="name")]  # noqa: UP007


def config_model() -> type[Config]:
    """The Config class for the components registered right now (plugins included)."""
    return _config_model(tuple(tuple(r.names()) for r in REGISTRIES.values()))


@functools.cache
def _config_model(_registered: tuple[tuple[str, ...], ...]) -> type[Config]:
    return create_model(
        "Config",
        __base__=Config,
        model=(_choices(MODELS), ...),
        data=(_choices(DATASETS), ...),
        loss=(
            _choices(LOSSES),
            Field(default_factory=lambda: {"name": "cross_entropy"}, validate_default=True),
        ),
        optimizer=(_choices(OPTIMIZERS), ...),
        scheduler=(_choices(SCHEDULERS) | None, None),
    )


def validate(
    raw: dict[str, Any],
    source: str = "config",
    search: Path | None = None,
    origins: dict[str, str] | None = None,
    command_line: dict[str, str] | None = None,
) -> Config:
    """Import the plugins `raw` names, then validate it against the registered components.

    `search` is the config file's folder; `origins` where a run's plugins were imported
    from (see `registry.load_components`); `command_line` maps the dotted keys that
    `--set`/`--unset` changed to the option, so an error there says so.
    """
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise UserError("plugins: expected a list of module names, e.g. plugins: [my_models].")
    load_components(plugins, search, origins)
    model = config_model()
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_errors(exc, model, source, command_line or {})) from None


def to_dict(config: Config) -> dict[str, Any]:
    """The resolved config as plain data, each component's `name` first."""
    data = config.model_dump(mode="json")
    for section in (registry.section for registry in REGISTRIES.values()):
        if isinstance(data.get(section), dict):
            data[section] = {"name": data[section].pop("name"), **data[section]}
    return data


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


# -- error messages -------------------------------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is not None:
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    return []


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], list[type[BaseModel]]]:
    """Follow an error location through the schema.

    Returns the path as the user writes it (union tags dropped) and the models that can
    stand at the end of it, so an unknown key can be compared with the keys allowed there.
    """
    path: list[str] = []
    models: list[type[BaseModel]] = [root]
    for part in loc:
        tagged = [m for m in models if _tag_of(m) == part]
        if tagged:
            models = tagged
            continue
        path.append(str(part))
        if isinstance(part, int):  # an item of a list of models: still those models
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        models = [m for f in fields for m in _models_in(f.annotation)]
    return path, models


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("name")
    if field is not None and get_origin(field.annotation) is Literal:
        return get_args(field.annotation)[0]
    return None


def format_errors(
    exc: ValidationError, root: type[BaseModel], source: str, command_line: dict[str, str]
) -> str:
    """One line per problem: the field path, what was wrong, what would be right, and
    the command-line option behind it when there was one."""
    lines = [f"{source} is not a valid experiment:"]
    blamed = False
    for error in exc.errors(include_url=False):
        line, option = _describe(error, root), _option_behind(error, root, command_line)
        blamed |= option is not None
        lines.append(f"  {line.removesuffix('.')} (from {option})." if option else f"  {line}")
    lines.append(
        (
            "Fix the --set/--unset options or the file"
            if blamed
            else "Fix the file or override with --set KEY=VALUE"
        )
        + "; `trainkit ls` lists components and their parameters."
    )
    return "\n".join(lines)


def _option_behind(error: Any, root: type[BaseModel], command_line: dict[str, str]) -> str | None:
    """The --set/--unset that touched the key an error is about, if any."""
    path = ".".join(_walk(root, tuple(error["loc"]))[0])
    for key, option in command_line.items():
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            return option
    return None


def _describe(error: Any, root: type[BaseModel]) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    path, _ = _walk(root, loc)
    field = ".".join(path) or "(top level)"
    if kind == "extra_forbidden":
        parent, models = _walk(root, loc[:-1])
        key = str(loc[-1])
        allowed = sorted({name for m in models for name in m.model_fields} - {"name"})
        where = ".".join(parent) or "(top level)"
        if not allowed:
            names = " or ".join(sorted({str(_tag_of(m)) for m in models if _tag_of(m)}))
            return f"{where}: unknown key {key!r}; {names or 'this section'} takes no parameters."
        listed = ", ".join(allowed)
        return f"{where}: unknown key {key!r}{suggest(key, allowed)} Allowed here: {listed}."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        registry = next(r for r in REGISTRIES.values() if r.section == path[0])
        choices = ", ".join(registry.names())
        if kind == "union_tag_not_found":
            return f"{field}.name: missing; it selects the {registry.kind}, one of: {choices}."
        tag = shown(str(error["ctx"]["tag"]))
        return (
            f"{field}.name: there is no {registry.kind} called {tag!r}"
            f"{suggest(tag, registry.names())} Choose one of: {choices}."
        )
    if kind == "missing":
        return f"{field}: required but missing."
    got = error.get("input")
    echoed = "" if isinstance(got, dict) else f" (got {shown(repr(got))})"
    message = error["msg"].removeprefix("Value error, ")  # our validators' own sentences
    return f"{field}: {message}{echoed}."
