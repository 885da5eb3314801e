"""Signals at any moment: start-up included, and a second Ctrl-C, never a run resume refuses."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.helpers import install_plugin, misbehaving_loss, tiny_experiment
from trainkit.training.checkpoint import read_payload


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_during_start_up_writes_nothing(
    sig: int, code: int, cli, write_config, tmp_path: Path
) -> None:
    raw = tiny_experiment(plugins=[install_plugin(tmp_path, "tk_signal_at_build")])
    raw["data"] = {"name": "tk_signal_at_build", "send": int(sig), "n_train": 200}
    result = cli("train", write_config(raw), "--run-dir", tmp_path / "run")
    assert result.exit_code == code, result.output
    name = signal.Signals(sig).name
    assert f"stopped by {name} before training started; nothing was written." in result.stdout
    assert not (tmp_path / "run").exists() and "Traceback" not in result.output


@pytest.mark.parametrize(("at_call", "saved"), [(3, False), (20, True)])
def test_a_second_ctrl_c_stops_at_once_and_leaves_a_resumable_run_or_none(
    at_call: int, saved: bool, cli, write_config, tmp_path: Path
) -> None:
    """Call 3 is inside epoch 1 (nothing saved yet); call 20 is in epoch 2."""
    raw = tiny_experiment(**misbehaving_loss(tmp_path, "sigint_twice", at_call))
    run = tmp_path / "run"
    result = cli("train", write_config(raw), "--run-dir", run)
    assert result.exit_code == 130, result.output
    assert "stopped at once by Ctrl-C" in result.stderr
    assert "Traceback" not in result.output
    assert run.exists() == saved
    if saved:
        assert read_payload(run / "last.pt")["state"]["epoch"] == 1
        resumed = cli("resume", run, "--set", "loss.at_call=1000000", "-q")
        assert resumed.exit_code == 0, resumed.output
        assert read_payload(run / "last.pt")["state"]["epoch"] == 3
