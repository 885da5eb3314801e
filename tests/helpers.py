"""What many tests share: a tiny experiment, the test plugins, and the check that two
runs ended alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

PLUGINS = Path(__file__).parent / "plugins"
NEVER = 10**9  # a loss call a test never reaches


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


def install_plugin(folder: Path, name: str) -> str:
    """Copy the test plugin `tests/plugins/<name>.py` into `folder` (a test's working
    directory, where plugins are found, as a user keeps one beside a config)."""
    shutil.copy(PLUGINS / f"{name}.py", folder / f"{name}.py")
    return name


def misbehaving_loss(folder: Path, action: str, at_call: int, **extra: Any) -> dict[str, Any]:
    """Config sections for a run whose loss does `action` at loss call `at_call` (see
    tests/plugins/tk_misbehaving_loss.py): `sigterm` is a deterministic stand-in for a
    signal at a random moment."""
    plugin = install_plugin(folder, "tk_misbehaving_loss")
    loss = {"name": "tk_misbehaving", "action": action, "at_call": at_call, **extra}
    return {"plugins": [plugin], "loss": loss}


def assert_same_run(a: Path, b: Path) -> None:
    """Two runs ended alike: weights (and their average), optimizer state, final metrics
    and metrics.jsonl (without its wall-clock fields, which differ between any two runs)."""
    import torch

    from trainkit.training.checkpoint import read_payload

    first, second = read_payload(a / "last.pt"), read_payload(b / "last.pt")
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    assert ("ema" in first) == ("ema" in second)
    for name, tensor in first.get("ema", {}).items():  # the weight average, trainer.ema
        assert torch.equal(tensor, second["ema"][name]), name
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
