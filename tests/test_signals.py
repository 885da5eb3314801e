"""Signals at any moment: start-up included, and a second Ctrl-C, never a run resume refuses."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.disk_datasets import write_image_folder
from tests.helpers import NEVER, assert_same_run, install_plugin, misbehaving_loss, tiny_experiment
from trainkit.config.schema import validate
from trainkit.training.checkpoint import read_payload
from trainkit.training.run import train


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


@pytest.mark.slow  # 10 s each: a training subprocess, and two runs with loader workers
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_whole_process_group_spares_the_loader_workers(
    sig: int, code: int, cli, tmp_path: Path
) -> None:
    """Ctrl-C in a terminal and Slurm's scancel signal every process of the job, the
    DataLoader workers included; the run still finishes its step, writes last.pt, and
    resumes to the uninterrupted run. (torch's workers die on a SIGTERM that is not
    from their parent; the run then failed at once and saved nothing.)"""
    folder = write_image_folder(tmp_path / "pets", per_class=16, size=20)
    raw = tiny_experiment(
        model={"name": "cifar_fast", "widths": [8, 8, 16, 16]},
        data={"name": "image_folder", "root": str(folder), "image_size": 16, "batch_size": 8,
              "in_memory": False, "workers": 2, "augment": "trivialaugment"},
        logging={"log_every_steps": 3, "tensorboard": False},
    )  # fmt: skip
    whole = {**raw, **misbehaving_loss(tmp_path, "sigterm", NEVER)}
    assert train(validate(whole), run_dir=tmp_path / "whole", quiet=True).status == "completed"

    action = f"{signal.Signals(sig).name.lower()}_group"
    config = tmp_path / "cut.yaml"
    config.write_text(yaml.safe_dump({**raw, **misbehaving_loss(tmp_path, action, 10)}))
    stopped = subprocess.run(
        [sys.executable, "-m", "trainkit", "train", str(config), "--run-dir", "cut"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,  # its own process group: the signal reaches no test process
    )
    assert stopped.returncode == code, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert "killed by signal" not in stopped.stderr and "Traceback" not in stopped.stderr
    assert f"stopped by {signal.Signals(sig).name} at epoch 2" in " ".join(stopped.stdout.split())
    resumed = cli("resume", tmp_path / "cut", "--set", f"loss.at_call={NEVER}", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(tmp_path / "whole", tmp_path / "cut")
