"""The experiment schema and its validation.

The schema is assembled from the registries (a discriminated union on `name` per
component section), so a plugin's model is validated, listed and documented exactly like
a built-in one. Validation errors become one paragraph a user can act on (see
`config.messages`).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from trainkit.config.messages import format_errors
from trainkit.config.plugins import load_components
from trainkit.config.registry import (
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
)
from trainkit.config.renames import rename_keys
from trainkit.errors import UserError

Monitor = Literal["val/loss", "val/accuracy"]


def higher_is_better(metric: str) -> bool:
    """Accuracies improve upwards, losses downwards."""
    return metric.endswith("accuracy")


class EarlyStoppingConfig(Params):
    patience: int = Field(5, ge=1, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")


class EMAConfig(Params):
    decay: float = Field(
        0.999,
        gt=0,
        lt=1,
        description="Each optimizer step, average = decay x average + (1 - decay) x weights; "
        "the average forgets with a half-life of about 0.69 / (1 - decay) steps (693 at "
        "0.999), so a run should take several times that many steps.",
    )


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
    compile: bool | str = Field(
        False,
        description="Wrap the model in torch.compile: true (the inductor backend), or the name "
        "of another torch.compile backend (aot_eager and eager compile fast, for checking "
        "that a model compiles). All graphs are compiled in the first epoch; evaluation "
        "batches are padded to eval_batch_size, so nothing recompiles after it.",
    )
    ema: EMAConfig | None = Field(
        None,
        description="Keep an exponential moving average of the weights (and of batch-norm "
        "statistics) through torch.optim.swa_utils; validation, the test score, best.pt, "
        "eval, predict and export then use the average. Checkpoints hold both. true: the "
        "default decay; null or false: off.",
    )
    tta: Literal["none", "flip"] = Field(
        "none",
        description="Test-time augmentation: flip averages the outputs for each image and its "
        "horizontal mirror in validation, the test score, eval and predict (images only).",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="channels_last memory format; auto: for conv nets on CUDA and CPU."
    )
    accumulate_steps: int = Field(1, ge=1, description="Batches per optimizer step.")
    grad_clip: float | None = Field(
        None, gt=0, description="Clip the gradient norm to this value; null disables."
    )
    eval_every_epochs: int = Field(
        1, ge=1, description="Evaluate on the validation split every N epochs (and after the last)."
    )
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
    distributed_timeout_minutes: float = Field(
        10,
        gt=0,
        description="In a multi-process run, how long a process waits for the others (to "
        "join, or in any exchange) before it fails, so that a launcher can restart the job "
        "or give up instead of waiting for ever.",
    )

    @field_validator("ema", mode="before")
    @classmethod
    def _ema_switch(cls, value: Any) -> Any:
        """`true` is the average with its default decay, `false` the same as null."""
        if value is True:
            return {}
        return None if value is False else value


class CheckpointConfig(Params):
    runs_dir: str = Field(
        "checkpoints", description="Runs go to <runs_dir>/<name>/<run-id>/ (without --run-dir)."
    )
    monitor: Monitor = Field("val/loss", description="Metric that picks best.pt.")
    mode: Literal["min", "max"] | None = Field(
        None, description="min or max; null: max for accuracy, min for loss."
    )
    every_epochs: int = Field(1, ge=1, description="Write epoch_NNNN.pt every N epochs.")
    keep_last: int = Field(2, ge=1, description="How many epoch_NNNN.pt files to keep.")
    every_steps: int | None = Field(
        None, ge=1, description="Also refresh last.pt every N optimizer steps; null disables."
    )
    every_minutes: float | None = Field(
        None,
        gt=0,
        description="Also refresh last.pt once N minutes have passed since the last "
        "checkpoint (checked every step), bounding the work a crash loses whatever a step "
        "takes; null disables.",
    )

    @model_validator(mode="after")
    def _infer_mode(self) -> CheckpointConfig:
        if self.mode is None:
            self.mode = "max" if higher_is_better(self.monitor) else "min"
        return self


class TrackerConfig(Params):
    """What every experiment tracker takes (logging.mlflow, logging.wandb)."""

    run_name: str | None = Field(None, description="The tracker run's name; null: the run's id.")
    log_checkpoints: Literal["none", "best", "last", "all"] = Field(
        "none", description="Checkpoints uploaded as artifacts when the run ends."
    )
    log_config: bool = Field(True, description="Upload the run's config.yaml as an artifact.")
    log_exports: bool = Field(
        False, description="`trainkit export` of this run uploads the files it writes."
    )
    log_plots: bool = Field(False, description="`trainkit plot` of this run uploads the picture.")
    required: bool = Field(
        True,
        description="A tracker that cannot be reached at the start stops the run (exit 2); "
        "false: one warning, and the run trains without it.",
    )


class MLflowConfig(TrackerConfig):
    tracking_uri: str | None = Field(
        None,
        description="Where runs are tracked: an http(s):// server, or a database URI such as "
        "sqlite:///path/mlflow.db; null: $MLFLOW_TRACKING_URI, else a SQLite store "
        "mlflow.db in the runs' root folder.",
    )
    experiment: str | None = Field(
        None, description="The MLflow experiment; null: the config's name."
    )
    tags: dict[str, str] = Field(default_factory=dict, description="More tags for the MLflow run.")


class WandbConfig(TrackerConfig):
    project: str | None = Field(None, description="The W&B project; null: the config's name.")
    entity: str | None = Field(
        None, description="The W&B team or user; null: $WANDB_ENTITY, else your default."
    )
    mode: Literal["online", "offline"] | None = Field(
        None,
        description="online: stream to the W&B server ($WANDB_BASE_URL, else wandb.ai); "
        "offline: files in the run directory's wandb/ folder, uploaded later with `wandb "
        "sync`; null: $WANDB_MODE, else online.",
    )
    group: str | None = Field(
        None, description="The W&B group; null: none (a sweep's trials: the sweep's name)."
    )
    tags: list[str] = Field(default_factory=list, description="Tags for the W&B run.")
    notes: str | None = Field(None, description="A description shown with the W&B run.")


class LoggingConfig(Params):
    log_every_steps: int = Field(
        50, ge=1, description="Steps between progress updates and train/loss points."
    )
    tensorboard: bool = Field(
        True, description="Write TensorBoard events (into the run directory)."
    )
    mlflow: MLflowConfig | None = Field(
        None,
        description="Track the run in MLflow: true, or a mapping of the keys below; every "
        "metrics.jsonl record goes there once a checkpoint covers it. null or false: off.",
    )
    wandb: WandbConfig | None = Field(
        None,
        description="Track the run in Weights & Biases: true, or a mapping of the keys below; "
        "every metrics.jsonl record goes there once a checkpoint covers it. null or false: off.",
    )

    @field_validator("mlflow", "wandb", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        """`true` is the tracker with its defaults, `false` the same as null."""
        if value is True:
            return {}
        return None if value is False else value


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
    model: ModelParams = Field(description="The network: a model by name, with its keys.")
    data: DatasetParams = Field(description="The data: a dataset by name, with its keys.")
    loss: LossParams = Field(description="The loss by name; default: cross_entropy.")
    optimizer: OptimizerParams = Field(description="The optimizer by name, with its keys.")
    scheduler: SchedulerParams | None = Field(
        None, description="The learning-rate schedule by name; null: a constant lr."
    )
    trainer: TrainerConfig = Field(
        default_factory=TrainerConfig, description="How to train: epochs, device, precision."
    )
    checkpoint: CheckpointConfig = Field(
        default_factory=CheckpointConfig, description="Where runs go and what is kept."
    )
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, description="What is logged, and how often."
    )

    @model_validator(mode="after")
    def _model_preferences(self) -> Config:
        """Data settings left null take the model's preferences (pretrained weights' image
        size and normalization), so the resolved config shows what a run really used."""
        for key, value in self.model.preferred_inputs().items():
            if key in type(self.data).model_fields and getattr(self.data, key) is None:
                setattr(self.data, key, value)
        return self

    @model_validator(mode="after")
    def _tta_needs_images(self) -> Config:
        if self.trainer.tta != "none" and type(self.data).gives_images is False:
            raise ValueError(
                f"trainer.tta={self.trainer.tta} mirrors images, and data {self.data.name} "
                "gives none; set trainer.tta: none"
            )
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
    def described(section: str, **default: Any) -> Any:
        return Field(description=Config.model_fields[section].description, **default)

    return create_model(
        "Config",
        __base__=Config,
        model=(_choices(MODELS), described("model")),
        data=(_choices(DATASETS), described("data")),
        loss=(
            _choices(LOSSES),
            described(
                "loss", default_factory=lambda: {"name": "cross_entropy"}, validate_default=True
            ),
        ),
        optimizer=(_choices(OPTIMIZERS), described("optimizer")),
        scheduler=(_choices(SCHEDULERS) | None, described("scheduler", default=None)),
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
        return model.model_validate(rename_keys(copy.deepcopy(raw), source))
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
