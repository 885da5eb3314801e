"""Shared fixtures: experiment files written into a temporary folder, and CLI runners."""

from __future__ import annotations

import json
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


NEVER = 10**9  # a loss call a test never reaches

STOP_AT_LOSS_PLUGIN = '''
import os
import signal

import torch.nn.functional as F
from pydantic import Field
from trainkit.losses import Objective
from trainkit.registry import LossParams, register_loss


class Params(LossParams):
    at_call: int = Field(ge=1)


@register_loss("tk_stop_at", Params)
def build(params, data):
    """Cross-entropy that sends its own process SIGTERM at one call, as a user would."""
    calls = [0]

    def loss(outputs, targets):
        calls[0] += 1
        if calls[0] == params.at_call:
            os.kill(os.getpid(), signal.SIGTERM)
        return F.cross_entropy(outputs, targets)

    return Objective(loss, lambda outputs: outputs.argmax(1))
'''


def stop_at_loss_call(folder: Path, at_call: int) -> dict[str, Any]:
    """Config sections for a run that stops itself, by SIGTERM, at loss call `at_call`:
    a deterministic stand-in for a signal at a random moment. The plugin is written into
    `folder` (the test's working directory, where plugins are found)."""
    (folder / "tk_stop_loss.py").write_text(STOP_AT_LOSS_PLUGIN)
    return {"plugins": ["tk_stop_loss"], "loss": {"name": "tk_stop_at", "at_call": at_call}}


def assert_same_run(a: Path, b: Path) -> None:
    """Two runs ended alike: weights, optimizer state, final metrics and metrics.jsonl
    (without its wall-clock fields, which differ between any two runs)."""
    import torch

    from trainkit.checkpoint import load

    first, second = load(a / "last.pt"), load(b / "last.pt")
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    for key, state in first["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(second["optimizer"]["state"][key][name])
            )
    assert first["metrics"] == {**second["metrics"], **_timing(first["metrics"])}
    assert first["state"]["step"] == second["state"]["step"]
    assert _records(a) == _records(b)


def _timing(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k in ("epoch_time", "samples_per_sec")}


def _records(run: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if k not in ("epoch_time", "samples_per_sec")} for r in records
    ]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Make a real, small filesystem (a tmpfs) to fill up; the test is skipped, with the
    reason, where this machine does not let a test mount one."""
    import subprocess

    mounts: list[Path] = []

    def make(kilobytes: int, read_only: bool = False) -> Path:
        path = tmp_path / f"disk{len(mounts)}"
        path.mkdir()
        options = f"size={kilobytes}k" + (",ro" if read_only else "")
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
        mounts.append(path)
        return path

    yield make
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


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
