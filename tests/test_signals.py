"""Signals at any moment: start-up included, and a second Ctrl-C, never a run resume refuses."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import tiny_experiment
from trainkit.checkpoint import load

SIGNAL_AT_BUILD = '''
import os
import signal

from pydantic import Field
from trainkit.data.synthetic import SyntheticLogisticParams, synthetic_logistic
from trainkit.registry import register_dataset


class Params(SyntheticLogisticParams):
    send: int = Field(description="The signal this process sends itself while building.")


@register_dataset("tk_signal_at_build", Params)
def build(params, seed):
    """Synthetic classes; a stop signal arrives while they are made (a long decode)."""
    os.kill(os.getpid(), params.send)
    return synthetic_logistic(params, seed)
'''

SIGINT_TWICE = '''
import os
import signal

import torch.nn.functional as F
from pydantic import Field
from trainkit.losses import Objective
from trainkit.registry import LossParams, register_loss


class Params(LossParams):
    at_call: int = Field(ge=1)


@register_loss("tk_sigint_twice", Params)
def build(params, data):
    """Cross-entropy; at one call, Ctrl-C twice: the user wants it to stop at once."""
    calls = [0]

    def loss(outputs, targets):
        calls[0] += 1
        if calls[0] == params.at_call:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return F.cross_entropy(outputs, targets)

    return Objective(loss, lambda outputs: outputs.argmax(1))
'''


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_during_start_up_writes_nothing(
    sig: int, code: int, cli, write_config, tmp_path: Path
) -> None:
    (tmp_path / "tk_signal_build.py").write_text(SIGNAL_AT_BUILD)
    raw = tiny_experiment(plugins=["tk_signal_build"])
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
    (tmp_path / "tk_sigint_twice.py").write_text(SIGINT_TWICE)
    raw = tiny_experiment(plugins=["tk_sigint_twice"])
    raw["loss"] = {"name": "tk_sigint_twice", "at_call": at_call}
    run = tmp_path / "run"
    result = cli("train", write_config(raw), "--run-dir", run)
    assert result.exit_code == 130, result.output
    assert "stopped at once by Ctrl-C" in result.stderr
    assert "Traceback" not in result.output
    assert run.exists() == saved
    if saved:
        assert load(run / "last.pt")["state"]["epoch"] == 1
        resumed = cli("resume", run, "--set", "loss.at_call=1000000", "-q")
        assert resumed.exit_code == 0, resumed.output
        assert load(run / "last.pt")["state"]["epoch"] == 3
