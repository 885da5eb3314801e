"""A relaunch continues: `trainkit train CONFIG --run-dir DIR` run again after a crash,
a stop or a requeue picks the run up where its newest checkpoint left it, exactly; a
launcher's job id names the run directory when --run-dir is not given;
checkpoint.every_minutes bounds the work a crash loses; Slurm's task variables make a
world."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NEVER, assert_same_run, misbehaving_loss, tiny_experiment
from trainkit.training.checkpoint import Checkpoint, candidates

LONGER = {"data": {"n_train": 2000, "n_test": 100, "batch_size": 32}, "trainer": {"epochs": 2}}


def faulty(tmp_path: Path, action: str, at_call: int, **sections: Any) -> dict[str, Any]:
    """The tiny experiment, with a loss that does `action` once, at loss call `at_call`."""
    raw = tiny_experiment(**{**LONGER, **sections})
    raw.update(misbehaving_loss(tmp_path, action, at_call, once=str(tmp_path / "fault.done")))
    return raw


def twin_of(tmp_path: Path, raw: dict[str, Any], cli, write_config) -> Path:
    """The same run, never interrupted."""
    twin = json.loads(json.dumps(raw))
    twin["loss"]["at_call"] = NEVER
    result = cli(
        "train", write_config(twin, name="twin.yaml"), "--run-dir", tmp_path / "twin", "-q"
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "twin"


def train_in_a_process(config: Path, run: Path, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "trainkit", "train", str(config), "--run-dir", str(run), "-q"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # seconds: a training process killed outright
def test_a_relaunch_after_a_kill_continues_exactly(cli, write_config, tmp_path) -> None:
    raw = faulty(tmp_path, "sigkill", 80, checkpoint={"every_steps": 25})  # epoch 2, step ~73
    config, run = write_config(raw), tmp_path / "run"
    killed = train_in_a_process(config, run)
    assert killed.returncode == -9
    again = cli("train", config, "--run-dir", run, "-q")
    assert again.exit_code == 0, again.output
    said = " ".join(again.stderr.split())
    assert f"the command was run again: {run} continues from last.pt (epoch 1, batch" in said
    assert "logged steps after it" in said and "are trained again" in said
    assert_same_run(run, twin_of(tmp_path, raw, cli, write_config))


@pytest.mark.slow  # seconds: three runs
def test_a_stop_on_sigusr1_under_a_slurm_job_id_continues_in_the_jobs_directory(
    cli, write_config, tmp_path, monkeypatch
) -> None:
    """SIGUSR1 (sbatch --signal) is a stop; SLURM_JOB_ID names the run directory, so the
    requeued job's identical command finds the run."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "ignored-when-slurm-names-the-job")
    raw = faulty(tmp_path, "sigusr1", 50, checkpoint={"runs_dir": str(tmp_path / "runs")})
    config = write_config(raw)
    stopped = cli("train", config, "-q")
    assert stopped.exit_code == 128 + 10
    run = tmp_path / "runs" / "tiny" / "slurm-4242"
    assert Checkpoint.read(run / "last.pt").state["batch"] > 0  # stopped mid-epoch
    again = cli("train", config, "-q")
    assert again.exit_code == 0, again.output
    assert [p.name for p in (tmp_path / "runs" / "tiny").iterdir()] == ["slurm-4242"]
    assert_same_run(run, twin_of(tmp_path, raw, cli, write_config))


def test_a_finished_run_is_reported_and_left_alone(cli, write_config, tmp_path) -> None:
    config, run = write_config(tiny_experiment()), tmp_path / "run"
    assert cli("train", config, "--run-dir", run, "-q").exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    again = cli("train", config, "--run-dir", run)
    assert again.exit_code == 0, again.output
    assert "already finished: 3 epochs" in again.stdout and "test/accuracy" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_a_run_of_another_config_is_refused_naming_the_keys(cli, write_config, tmp_path) -> None:
    config, run = write_config(tiny_experiment()), tmp_path / "run"
    assert cli("train", config, "--run-dir", run, "-q").exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    other = cli("train", config, "--run-dir", run, "--set", "optimizer.lr=0.2")
    assert other.exit_code == 2 and "Traceback" not in other.output
    said = " ".join(other.stderr.split())
    assert "holds a run of another config" in said and "optimizer.lr (0.1 there, 0.2 here)" in said
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    foreign = cli("train", config, "--run-dir", tmp_path / "mine")
    assert foreign.exit_code == 2 and "holds no trainkit run" in foreign.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow  # seconds: a training process killed outright
def test_a_run_killed_before_its_first_checkpoint_starts_over_keeping_its_tracker_run(
    cli, write_config, tmp_path
) -> None:
    raw = faulty(tmp_path, "sigkill", 20)
    config, run = write_config(raw), tmp_path / "run"
    assert train_in_a_process(config, run).returncode == -9
    assert not candidates(run) and (run / "config.yaml").is_file()
    opened = '{"wandb": {"run_id": "abc", "sent": 0}}'  # as a tracker that had started
    (run / "tracking.json").write_text(opened)
    (run / "wandb").mkdir()
    again = cli("train", config, "--run-dir", run, "-q")
    assert again.exit_code == 0, again.output
    assert (run / "tracking.json").read_text() == opened and (run / "wandb").is_dir()
    assert_same_run(run, twin_of(tmp_path, raw, cli, write_config))


@pytest.mark.slow  # seconds: a training process killed outright
@pytest.mark.parametrize(("minutes", "mid_epoch_checkpoint"), [(0.0005, True), (10, False)])
def test_every_minutes_bounds_what_a_crash_loses(
    write_config, tmp_path, minutes, mid_epoch_checkpoint
) -> None:
    """Both sides of the interval: a 30 ms interval leaves a checkpoint inside the first
    epoch when the run is killed there; a 10-minute one leaves none."""
    raw = faulty(tmp_path, "sigkill", 50, checkpoint={"every_minutes": minutes})
    run = tmp_path / "run"
    assert train_in_a_process(write_config(raw), run).returncode == -9
    if mid_epoch_checkpoint:
        state = Checkpoint.read(run / "last.pt").state
        assert state["epoch"] == 0 and 0 < state["batch"] < 49
    else:
        assert not candidates(run)


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [("gpu07", "gpu07"), ("gpu[07-09,12],cpu1", "gpu07"), ("a1,b2", "a1"),
     ("node[3,5-6]", "node3"), ("rack1-[001-004]", "rack1-001")],
)  # fmt: skip
def test_the_first_host_of_a_slurm_node_list(nodelist: str, first: str) -> None:
    from trainkit.training.slurm import first_host

    assert first_host(nodelist) == first


def test_slurms_variables_become_torchs(monkeypatch) -> None:
    from trainkit.training.slurm import slurm_tasks, torch_environment

    for name in ("MASTER_PORT", "MASTER_ADDR", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert not slurm_tasks()  # one task: a plain process
    slurm = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
             "SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu[03-04]"}  # fmt: skip
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    assert slurm_tasks()
    assert torch_environment() == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1",
                                   "MASTER_ADDR": "gpu03", "MASTER_PORT": "23456"}  # fmt: skip
    monkeypatch.setenv("MASTER_PORT", "29511")
    assert torch_environment()["MASTER_PORT"] == "29511"


def test_a_job_id_names_the_run_directory(monkeypatch, tmp_path) -> None:
    from trainkit.config.loading import load_config
    from trainkit.training.relaunch import OWN_LAUNCH, job_run_dir

    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(tiny_experiment(checkpoint={"runs_dir": "runs"})))
    config = load_config(path)
    for name in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", OWN_LAUNCH):
        monkeypatch.delenv(name, raising=False)
    assert job_run_dir(config) is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun without --rdzv-id
    assert job_run_dir(config) is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "exp/7")
    assert job_run_dir(config) == Path("runs/tiny/torchrun-exp_7")
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    assert job_run_dir(config) == Path("runs/tiny/slurm-991")
    monkeypatch.setenv(OWN_LAUNCH, "1")
    assert job_run_dir(config) is None
