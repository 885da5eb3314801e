"""One run, one writer: the run lock, and reading a run while it trains."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import tiny_experiment
from trainkit.errors import UserError
from trainkit.training.run_dir import RunLock


def test_a_locked_run_names_its_holder_and_a_stale_lock_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = RunLock(tmp_path).acquire()
    with pytest.raises(UserError) as caught:
        RunLock(tmp_path).acquire()
    assert f"is being written by process {os.getpid()} on {socket.gethostname()}" in str(
        caught.value
    )
    assert (tmp_path / ".lock").is_file()  # the lock file exists while it is held
    holder.release()
    assert not (tmp_path / ".lock").exists()  # a clean release leaves nothing behind
    RunLock(tmp_path).acquire().release()
    assert "warning" not in capsys.readouterr().err
    # A holder killed without releasing left its name; the lock itself died with it.
    (tmp_path / ".lock").write_text("process 4242 on elsewhere since yesterday")
    RunLock(tmp_path).acquire().release()
    assert "left locked by process 4242 on elsewhere since yesterday" in capsys.readouterr().err


@pytest.fixture
def training(write_config, tmp_path: Path):
    """A run training in another process, long enough to be met while it trains."""
    config = write_config(
        tiny_experiment(data={"n_train": 40000, "batch_size": 32}, trainer={"epochs": 20})
    )
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "trainkit", "train", str(config), "--run-dir", str(run), "-q"]
    )
    deadline = time.monotonic() + 60
    while not (run / "best.pt").exists():  # its first epoch is done
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    yield run, process
    process.terminate()
    process.wait(timeout=60)


@pytest.mark.slow
def test_a_run_that_is_training_has_one_writer_and_many_readers(cli, training) -> None:
    run, process = training
    resumed = cli("resume", run)
    assert resumed.exit_code == 2, resumed.output
    assert f"is being written by process {process.pid}" in resumed.stderr
    again = cli("train", run / "config.yaml", "--run-dir", run)
    assert again.exit_code == 2  # the same command continues it: refused while it trains
    assert f"is being written by process {process.pid}" in again.stderr
    # Readers are never turned away, and always read a whole checkpoint.
    for _ in range(3):
        scored = cli("eval", "--ckpt", run, "--out", run.parent / "e.json")
        assert scored.exit_code == 0, scored.output
        assert json.loads((run.parent / "e.json").read_text())["samples"] == 100
    rows = run.parent / "rows.csv"
    rows.write_text("0.5,0.5\n")
    assert cli("predict", "--ckpt", run, rows).exit_code == 0
    assert process.poll() is None  # and the training went on undisturbed


def test_a_finished_run_keeps_no_lock_file(cli, write_config, tmp_path: Path) -> None:
    assert cli("train", write_config(), "--run-dir", tmp_path / "run", "-q").exit_code == 0
    assert not (tmp_path / "run" / ".lock").exists()
    assert cli("resume", tmp_path / "run", "--set", "trainer.epochs=4", "-q").exit_code == 0
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_lock_removed_by_its_holder_is_not_taken_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter that opened the lock file just before its holder removed it must lock the
    file now at the path, not the removed one: else two processes could both hold it."""
    from trainkit.files import FileLock

    path = tmp_path / "x.lock"
    first = FileLock(path)
    assert first.acquire(wait=False)
    stale = path.open("a+")  # what a waiter had opened when the holder let go
    first.release()  # the file is removed, then unlocked
    opened = iter([stale])
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a: next(opened, None) or real_open(self, *a))
    waiter = FileLock(path)
    assert waiter.acquire(wait=True)
    assert waiter.handle is not stale and stale.closed  # it let go of the removed file
    assert os.fstat(waiter.handle.fileno()).st_ino == path.stat().st_ino
    assert not FileLock(path).acquire(wait=False)  # and holds the one at the path
    waiter.release()
