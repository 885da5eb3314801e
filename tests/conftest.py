"""Shared fixtures: experiment files written into a temporary folder, and CLI runners."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from trainkit.cli import app
from trainkit.registry import REGISTRIES, load_components


def tiny_experiment(**sections: Any) -> dict[str, Any]:
    """A seconds-long synthetic classification experiment.

    A section in `sections` extends the default one, or replaces it when it names a
    different component.
    """
    config: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "model": {"name": "mlp", "hidden": [16]},
        "data": {"name": "synthetic_logistic", "n_train": 400, "n_test": 100, "batch_size": 32},
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "scheduler": {"name": "cosine"},
        "trainer": {"epochs": 3, "device": "cpu"},
        "logging": {"log_every_steps": 5},
    }
    for key, value in sections.items():
        current = config.get(key)
        extends = (
            isinstance(value, dict)
            and isinstance(current, dict)
            and value.get("name", current.get("name")) == current.get("name")
        )
        config[key] = {**current, **value} if extends else value
    return config


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so the default checkpoints/ lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    def write(
        config: dict[str, Any] | None = None, name: str = "experiment.yaml", **sections: Any
    ) -> Path:
        path = tmp_path / name
        path.write_text(
            yaml.safe_dump(config if config is not None else tiny_experiment(**sections))
        )
        return path

    return write


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Invoke the real CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str | os.PathLike[str]) -> Any:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(autouse=True)
def _forget_plugins() -> Iterator[None]:
    """Plugins a test registers (modules named tk_*) do not leak into later tests."""
    load_components()
    before = {kind: dict(registry._entries) for kind, registry in REGISTRIES.items()}
    yield
    for kind, registry in REGISTRIES.items():
        registry._entries = before[kind]
    for name in [m for m in sys.modules if m.startswith("tk_")]:
        del sys.modules[name]
