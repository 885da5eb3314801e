"""Interrupt a run (SIGTERM, SIGINT, SIGKILL, damaged files) and resume it exactly."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import assert_same_run, tiny_experiment
from trainkit.config.schema import validate
from trainkit.training.checkpoint import read_payload
from trainkit.training.resume import resume
from trainkit.training.run import train

# Long enough (about 600 steps an epoch) for a signal to land mid-run, seconds in all.
EXPERIMENT = tiny_experiment(
    model={"name": "mlp", "hidden": [32], "dropout": 0.2},  # dropout draws from the global RNG
    data={"n_train": 20000, "n_test": 200, "batch_size": 32},
    optimizer={"name": "adam", "lr": 0.003},
    scheduler={"name": "onecycle"},
    trainer={"epochs": 3, "accumulate_steps": 2},
    checkpoint={"every_steps": 50},
    logging={"log_every_steps": 20},
)


# The module's tests share what its module-scoped fixtures make: with pytest-xdist they
# all run in one worker, so it is made once.
pytestmark = pytest.mark.xdist_group("reference_run")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must match bit for bit."""
    run = tmp_path_factory.mktemp("reference") / "run"
    train(validate(EXPERIMENT), run_dir=run, quiet=True)
    return run


def start_training(config: Path, run: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trainkit", "train", str(config), "--run-dir", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(process: subprocess.Popen[str], seen: Callable[[str], bool]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if seen(line):
            return
    pytest.fail(f"training ended before the expected output: {process.stderr.read()}")


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_epoch_then_resume_is_bit_identical(
    sig: int, code: int, reference: Path, write_config, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    process = start_training(write_config(EXPERIMENT), run)
    wait_for(process, lambda line: line.startswith("epoch 2/3  batch"))
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert f"trainkit resume {run}" in out
    stopped = read_payload(run / "last.pt")["state"]
    assert stopped["epoch"] < 3  # it did stop early

    result = resume(run, quiet=True)
    assert result.status == "completed"
    assert_same_run(reference, run)


@pytest.mark.slow
def test_kill_9_resumes_from_the_last_step_checkpoint(
    reference: Path, write_config, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    process = start_training(write_config(EXPERIMENT), run)
    wait_for(process, lambda line: line.startswith("epoch 1/3  batch") and " step 120 " in line)
    process.kill()
    process.wait(timeout=60)
    state = read_payload(run / "last.pt")["state"]
    assert state["epoch"] == 0 and state["step"] >= 100 and state["batch"] > 0  # mid-epoch

    resume(run, quiet=True)
    assert_same_run(reference, run)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the tiny experiment, for the tests that only read or damage a run."""
    run = tmp_path_factory.mktemp("small") / "run"
    train(validate(tiny_experiment(checkpoint={"every_steps": 5})), run_dir=run, quiet=True)
    return run


def test_damaged_newest_checkpoints_fall_back_to_an_older_one(
    small_run: Path, cli, tmp_path: Path
) -> None:
    reference = small_run
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    for name in ("last.pt", "best.pt", "epoch_0003.pt"):
        data = (run / name).read_bytes()
        (run / name).unlink()  # the files are hard links: replace, do not truncate in place
        (run / name).write_bytes(data[: len(data) // 2])
    result = cli("resume", run, "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("skipped a damaged checkpoint") == 3
    assert_same_run(reference, run)  # epoch 2 -> 3 again, to the same weights


def test_resume_of_an_explicit_damaged_file_is_an_error(
    small_run: Path, cli, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes((small_run / "last.pt").read_bytes()[:1000])
    result = cli("resume", broken)
    assert result.exit_code == 2
    assert "damaged or not a checkpoint" in result.stderr
    assert "Traceback" not in result.output


def test_resumed_config_is_the_stored_one(small_run: Path) -> None:
    stored = read_payload(small_run / "last.pt")["config"]
    assert stored == yaml.safe_load((small_run / "config.yaml").read_text())
    assert validate(stored).checkpoint.every_steps == 5


def test_a_resume_cannot_regroup_the_optimizer(cli, write_config, tmp_path: Path) -> None:
    """Decay groups decide the optimizer state's layout: changing them on resume is
    refused before anything is written, with the way to start from the weights."""
    run = tmp_path / "run"
    assert cli("train", write_config(trainer={"epochs": 1}), "--run-dir", run, "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    args = ("--set", "trainer.epochs=2", "--set", "optimizer.decay_biases_and_norms=false")
    result = cli("resume", run, *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "decay_biases_and_norms and model.freeze cannot change" in result.stderr
    assert f"--set model.init_from={run / 'last.pt'}" in result.stderr
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("optimizer.name=adam", "trained with optimizer sgd, and this resume asks for adam"),
        ("scheduler.name=onecycle", "scheduler cosine, and this resume asks for onecycle"),
        ("scheduler=null", "scheduler cosine, and this resume asks for null"),
    ],
)
def test_a_resume_keeps_its_optimizer_and_scheduler(
    cli, write_config, tmp_path: Path, change: str, said: str
) -> None:
    """Another optimizer or scheduler would read the stored state of this one (Adam
    fails on SGD's, one-cycle on cosine's): refused, and nothing written."""
    run = tmp_path / "run"
    assert cli("train", write_config(trainer={"epochs": 1}), "--run-dir", run, "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = cli("resume", run, "--set", "trainer.epochs=2", "--set", change)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert said in result.stderr and f"--set model.init_from={run / 'last.pt'}" in result.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_another_world_size_needs_a_completed_epoch(cli, write_config, tmp_path: Path) -> None:
    """A mid-epoch checkpoint of a 2-process run, whose epoch file is gone, cannot be
    continued by one process: the error says how to resume it instead."""
    run = tmp_path / "run"
    assert cli("train", write_config(trainer={"epochs": 2}), "--run-dir", run, "-q").exit_code == 0
    payload = read_payload(run / "last.pt")
    payload["world_size"] = 2
    payload["state"] = {**payload["state"], "epoch": 1, "batch": 3}
    torch.save(payload, run / "last.pt")
    for periodic in run.glob("epoch_*.pt"):
        periodic.unlink()
    result = cli("resume", run / "last.pt")
    assert result.exit_code == 2
    assert "stopped inside epoch 2 of a run with 2 processes" in result.stderr
    assert "Resume it with --nproc 2" in result.stderr


def test_another_world_size_keeps_the_history_and_the_step_count(
    cli, write_config, tmp_path: Path
) -> None:
    """A 2-process run stopped in epoch 2, taken over by one process: it goes back to the
    end of epoch 1; the records of the abandoned part of epoch 2 are set aside with a
    warning, and the logged step count never runs backwards."""
    import json

    run = tmp_path / "run"
    config = write_config(trainer={"epochs": 2}, checkpoint={"keep_last": 5})
    assert cli("train", config, "--run-dir", run, "-q").exit_code == 0
    for path in run.glob("*.pt"):  # as if two processes had taken 30 steps an epoch
        payload = read_payload(path)
        epoch = payload["state"]["epoch"]
        payload["world_size"] = 2
        payload["state"] = {**payload["state"], "step": 30 * epoch}
        if path.name == "last.pt":  # stopped inside epoch 2, at step 40
            payload["state"] = {**payload["state"], "epoch": 1, "batch": 4, "step": 40}
        path.unlink()
        torch.save(payload, path)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record["step"] = round(record["step"] * 30 / 12)
    records = [r for r in records if r["step"] <= 40]  # what was logged before the stop
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    later = [r for r in records if r["step"] > 30]  # the abandoned part of epoch 2
    assert later

    result = cli("resume", run, "--set", "trainer.epochs=3", "-q")
    assert result.exit_code == 0, result.output
    assert "trained by 2 process(es) and resumes with 1" in result.stderr
    assert f"{len(later)} metric record(s) logged after step 30" in result.stderr
    aside = [json.loads(x) for x in (run / "metrics.abandoned.jsonl").read_text().splitlines()]
    assert aside == later
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 30 + 2 * 12  # onward from 30
