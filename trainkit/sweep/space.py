"""The sweep file: the experiment to tune, the metric, and the space of config keys.

Every point of the space is validated through the experiment schema before anything
runs, so no trial fails on a value the schema refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainkit.config.schema import higher_is_better
from trainkit.errors import UserError, shown

if TYPE_CHECKING:
    from trainkit.config.loading import CommandLine, Switch

METRICS = ("val/accuracy", "val/loss", "train/accuracy", "train/loss", "test/accuracy", "test/loss")


class Parameter(BaseModel):
    """One searched key: `{float: [low, high], log: true}`, `{int: [low, high]}` or
    `{choice: [a, b, ...]}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    float_range: tuple[float, float] | None = Field(None, alias="float")
    int_range: tuple[int, int] | None = Field(None, alias="int")
    choice: list[Any] | None = Field(None, min_length=1)
    log: bool = Field(False, description="Sample on a log scale (float and int only).")

    @model_validator(mode="after")
    def _one_kind(self) -> Parameter:
        kinds = [k for k in (self.float_range, self.int_range, self.choice) if k is not None]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one of float: [low, high], int: [low, high], choice: [...]"
            )
        bounds = self.float_range or self.int_range
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"low must be below high (got {list(bounds)})")
        if self.log and (bounds is None or bounds[0] <= 0):
            raise ValueError("log: true needs a numeric range with low > 0")
        return self

    def points(self) -> list[Any]:
        """The values that validating the space tries: both ends, or every choice."""
        return (
            self.choice
            if self.choice is not None
            else list(self.float_range or self.int_range or ())
        )

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.float_range is not None:
            return FloatDistribution(*self.float_range, log=self.log)
        if self.int_range is not None:
            return IntDistribution(*self.int_range, log=self.log)
        return CategoricalDistribution([as_optuna_choice(c) for c in self.choice or []])


class SweepSpec(BaseModel):
    """A sweep file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="The sweep's name.")
    base: str = Field(description="The experiment file to tune, relative to the sweep file.")
    metric: Literal[METRICS] = Field(description="What to optimize: val/accuracy, val/loss, ...")  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="null: maximize an accuracy, minimize a loss."
    )
    trials: int = Field(ge=1, description="Trials in all, counting finished ones.")
    parallel: int = Field(1, ge=1, description="Trials at a time, each its own process.")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    startup_trials: int = Field(
        3, ge=0, description="Trials that always run in full before pruning begins."
    )
    warmup_epochs: int = Field(
        1, ge=0, description="Epochs every trial runs before it can be pruned."
    )
    seed: int = Field(0, ge=0, description="Seeds the sampler.")
    space: dict[str, Parameter] = Field(min_length=1, description="Config key -> its range.")

    @model_validator(mode="after")
    def _settle(self) -> SweepSpec:
        if self.direction is None:
            self.direction = "maximize" if higher_is_better(self.metric) else "minimize"
        if self.sampler == "grid" and any(p.choice is None for p in self.space.values()):
            raise ValueError("sampler: grid needs every parameter of the space as a choice")
        return self


def as_optuna_choice(value: Any) -> str | int | float | bool | None:
    """A choice as Optuna can store it: plain scalars as they are, the rest as YAML."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip()


def from_optuna(parameter: Parameter, value: Any) -> Any:
    if parameter.choice is not None and isinstance(value, str):
        for choice in parameter.choice:
            if as_optuna_choice(choice) == value:
                return choice
    return value


def one_line(value: Any) -> str:
    """A value as YAML in one line: 0.01, [256, 256], relu."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def set_option(key: str, value: Any) -> str:
    return f"{key}={one_line(value)}"


def read_spec(
    path: Path, command_line: CommandLine | None = None
) -> tuple[SweepSpec, dict[str, Any]]:
    """The sweep file, and the base config it names with its bases merged and the
    command line's --set/--unset applied (every trial trains from it)."""
    from trainkit.config.loading import CommandLine, overridden, read_layers, read_yaml

    raw = read_yaml(path, "a sweep", "name, base, metric, space")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path} is not a valid sweep file:"]
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            lines.append(f"  {where}: {error['msg'].removeprefix('Value error, ')}.")
        raise UserError("\n".join(lines)) from None
    base = path.parent / spec.base
    switches: list[Switch] = []
    raw = read_layers(base, switches)
    return spec, overridden(raw, command_line or CommandLine(), switches, search=base.parent)


def check_space(spec: SweepSpec, base: dict[str, Any], source: str) -> None:
    """Validate the config at every end of every range and every choice (the other keys
    at their first value), so no trial fails on a value the schema refuses."""
    from trainkit.config.loading import CommandLine, resolve

    firsts = {key: p.points()[0] for key, p in spec.space.items()}
    for key, parameter in spec.space.items():
        for point in parameter.points():
            sets = [set_option(k, point if k == key else v) for k, v in firsts.items()]
            try:
                resolve(base, CommandLine(sets), source)
            except UserError as exc:
                problem = next(
                    (line.strip() for line in str(exc).splitlines()[1:] if line.startswith("  ")),
                    str(exc),
                )
                raise UserError(
                    f"space: {key} = {shown(point)} does not make a valid experiment: "
                    f"{problem} Narrow the range or fix the choice; nothing was run."
                ) from None
