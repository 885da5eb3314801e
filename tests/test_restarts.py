"""torchrun's elastic agent restarts a job whose worker died, and trainkit continues it
exactly: on one node (--standalone) and on two localhost nodes (two launchers, a c10d
rendezvous on 127.0.0.1, gloo over the loopback). A worker that keeps failing ends the
job within a bounded time instead of hanging. Run them alone with `pytest -m distributed`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NEVER, assert_same_run, misbehaving_loss, tiny_experiment

# With pytest-xdist one worker runs all the torchrun tests, one after another: two jobs of
# 2 processes at once would slow each other toward their collective timeout.
pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.xdist_group("torchrun")]

# 360 training samples in global batches of 24 (12 per process): 15 steps an epoch.
EXPERIMENT = tiny_experiment(
    data={"n_train": 400, "batch_size": 12},
    trainer={"epochs": 2, "distributed_timeout_minutes": 0.5},
    checkpoint={"every_steps": 4},
    logging={"log_every_steps": 3, "tensorboard": False},
)
LAUNCH_ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def faulty(tmp_path: Path, at_call: int, *, once: bool = True) -> dict[str, Any]:
    """EXPERIMENT with runs under tmp_path/runs, and rank 1 killing itself at loss call
    `at_call` (once, or at every launch)."""
    raw = json.loads(json.dumps(EXPERIMENT))
    raw["checkpoint"]["runs_dir"] = str(tmp_path / "runs")
    once_file = {"once": str(tmp_path / "fault.done")} if once else {}
    raw.update(misbehaving_loss(tmp_path, "sigkill", at_call, rank=1, **once_file))
    return raw


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EXPERIMENT in two processes, never interrupted: what every test's run must end as
    (their faults and folders change nothing in the training)."""
    folder = tmp_path_factory.mktemp("twin")
    raw = json.loads(json.dumps(EXPERIMENT))
    raw.update(misbehaving_loss(folder, "sigkill", NEVER))
    (folder / "twin.yaml").write_text(json.dumps(raw))
    command = [sys.executable, "-m", "trainkit", "train", "twin.yaml", "--nproc", "2",
               "--run-dir", "twin", "-q"]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=LAUNCH_ENV, cwd=folder
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "twin"


def torchrun(*options: str, config: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "torch.distributed.run", *options, "-m", "trainkit",
               "train", str(config), "-q"]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=LAUNCH_ENV
    )


def two_nodes(config: Path, job: str, restarts: int) -> list[subprocess.Popen[str]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", job,
               "--max-restarts", str(restarts)]  # fmt: skip
    return [torchrun(*options, config=config) for _ in range(2)]


def finish(processes: list[subprocess.Popen[str]], timeout: float) -> list[tuple[int, str]]:
    ended = []
    try:
        for process in processes:
            _, err = process.communicate(timeout=timeout)
            ended.append((process.returncode, err))
    finally:
        for process in processes:
            process.kill()
    return ended


def test_a_killed_worker_is_restarted_and_the_run_continues_exactly(
    write_config, tmp_path, twin
) -> None:
    raw = faulty(tmp_path, 24)  # rank 1, in epoch 2
    job = torchrun("--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
                   config=write_config(raw))  # fmt: skip
    ((code, err),) = finish([job], timeout=300)
    assert code == 0, err[-3000:]
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    assert run.name.startswith("torchrun-")  # the agent's run id, the same after its restart
    said = " ".join(err.split())
    assert "restart 1 of this torchrun job:" in said and "continues from last.pt" in said
    assert_same_run(run, twin)


def test_two_nodes_restart_together_and_finish_exactly(write_config, tmp_path, twin) -> None:
    raw = faulty(tmp_path, 24)
    ended = finish(two_nodes(write_config(raw), "job7", restarts=2), timeout=300)
    assert [code for code, _ in ended] == [0, 0], [err[-2000:] for _, err in ended]
    run = tmp_path / "runs" / "tiny" / "torchrun-job7"
    assert "restart 1 of this torchrun job:" in " ".join(" ".join(e for _, e in ended).split())
    assert_same_run(run, twin)


def test_a_worker_that_keeps_failing_ends_the_job_instead_of_hanging(
    write_config, tmp_path
) -> None:
    """Rank 1 dies at every launch; after its restart both launchers give up, within
    a bound: each attempt's start-up, and at most distributed_timeout_minutes (30 s
    here) for a rank left waiting for a peer that is gone."""
    started = time.monotonic()
    ended = finish(two_nodes(write_config(faulty(tmp_path, 6, once=False)), "job8", 1), 400)
    assert all(code != 0 for code, _ in ended)
    assert time.monotonic() - started < 300


def test_srun_tasks_form_a_world_from_slurms_variables(write_config, tmp_path, twin) -> None:
    """Two processes given what srun gives two tasks (no torchrun variables) train the
    run `--nproc 2` trains; stopped by SIGUSR1 (sbatch --signal) and launched again, as
    a requeued job is, they continue it in slurm-<job id>."""
    raw = json.loads(json.dumps(EXPERIMENT))
    once = str(tmp_path / "fault.done")
    raw.update(misbehaving_loss(tmp_path, "sigusr1", 24, rank=0, once=once))
    config = write_config(raw)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def srun() -> list[tuple[int, str]]:
        tasks = []
        for rank in range(2):
            env = {**LAUNCH_ENV, "SLURM_JOB_ID": "777", "SLURM_NTASKS": "2",
                   "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
                   "SLURM_JOB_NODELIST": "localhost", "MASTER_PORT": str(port)}  # fmt: skip
            for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
                env.pop(name, None)
            command = [sys.executable, "-m", "trainkit", "train", str(config), "-q",
                       "--set", f"checkpoint.runs_dir={tmp_path / 'runs'}"]  # fmt: skip
            tasks.append(subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env))
        return finish(tasks, timeout=300)

    stopped = srun()
    assert stopped[0][0] == 128 + 10 and stopped[1][0] != 0, [e[-2000:] for _, e in stopped]
    again = srun()
    assert [code for code, _ in again] == [0, 0], [err[-2000:] for _, err in again]
    assert "the command was run again" in again[0][1] and not again[1][1]  # rank 0 speaks
    assert_same_run(tmp_path / "runs" / "tiny" / "slurm-777", twin)
