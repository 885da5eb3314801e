"""Checkpoint files survive kills and full disks; what they hold loads with weights_only."""

from __future__ import annotations

import errno
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainkit.errors import RunFailed
from trainkit.training import checkpoint
from trainkit.training.checkpoint import Checkpointer, read_payload

WRITER = """
import sys
from pathlib import Path
import torch
from trainkit.training.checkpoint import Checkpointer

saver = Checkpointer(Path(sys.argv[1]), {"name": "kill-test"}, every_epochs=1, keep_last=1)
i = 0
while True:
    saver.save({"model": {"w": torch.full((4_000_000,), float(i))}, "state": {"i": i}},
               finished_epoch=i + 1, best=i % 2 == 0)
    print(i, flush=True)
    i += 1
"""


def kill_a_writer(run: Path, delay: float) -> bool:
    """Start WRITER on `run`, kill it `delay` seconds after its second checkpoint, and say
    whether every checkpoint file it left loads and holds one whole version."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(run)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    while int(process.stdout.readline()) < 1:
        pass
    time.sleep(delay)  # somewhere inside a 16 MB write, or between two
    process.kill()
    process.wait()
    for path in run.glob("*.pt"):
        payload = read_payload(path)
        i = payload["state"]["i"]
        if not torch.equal(payload["model"]["w"], torch.full((4_000_000,), float(i))):
            return False
    return True


@pytest.mark.slow
def test_a_kill_mid_write_never_destroys_the_previous_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(0)
    for attempt in range(3):
        run = tmp_path / f"run{attempt}"
        run.mkdir()
        assert kill_a_writer(run, rng.uniform(0, 0.15))
        assert {"last.pt", "best.pt"} <= {p.name for p in run.glob("*.pt")}
        assert read_payload(run / "last.pt")["state"]["i"] >= 1
        Checkpointer(run, {}, 1, 1)  # a new writer sweeps temporary files left by the kill
        assert not list(run.glob(".*.tmp"))


def test_a_full_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver = Checkpointer(tmp_path, {}, every_epochs=1, keep_last=2)
    saver.save({"model": {"w": torch.ones(3)}, "state": {}}, finished_epoch=1, best=True)

    def full_disk(obj: object, handle: object) -> None:
        handle.write(b"partial")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(RunFailed, match=r"No space left on device.*intact"):
        saver.save({"model": {"w": torch.zeros(3)}, "state": {}}, finished_epoch=2, best=True)
    for name in ("last.pt", "best.pt", "epoch_0001.pt"):
        assert torch.equal(read_payload(tmp_path / name)["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "epoch_0001.pt", "last.pt"]


def test_periodic_checkpoints_keep_only_the_newest(tmp_path: Path) -> None:
    saver = Checkpointer(tmp_path, {}, every_epochs=2, keep_last=2)
    for epoch in range(1, 8):
        saver.save(
            {"model": {"w": torch.tensor([epoch])}, "state": {}},
            finished_epoch=epoch,
            best=epoch == 3,
        )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.pt", "epoch_0004.pt", "epoch_0006.pt", "last.pt"]
    assert read_payload(tmp_path / "best.pt")["model"]["w"].item() == 3
    assert read_payload(tmp_path / "last.pt")["model"]["w"].item() == 7


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    import numpy as np

    saver = Checkpointer(tmp_path, {}, 1, 1)
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    saver.save(
        {"rng": checkpoint.capture_rng(), "model": {}, "state": {}}, finished_epoch=None, best=False
    )
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    checkpoint.restore_rng(read_payload(tmp_path / "last.pt")["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_not_a_checkpoint(tmp_path: Path) -> None:
    from trainkit.errors import UserError

    torch.save({"some": "dict"}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a trainkit checkpoint"):
        read_payload(tmp_path / "other.pt")
    with pytest.raises(UserError, match="checkpoint not found"):
        read_payload(tmp_path / "missing.pt")


def test_only_damage_is_called_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cut-short file is a damaged checkpoint (the user's to replace); an error that is
    not about the file, like running out of memory, stays what it is."""
    from trainkit.errors import UserError

    saver = Checkpointer(tmp_path, {}, 1, 1)
    saver.save({"model": {"w": torch.ones(1000)}, "state": {}}, finished_epoch=None, best=False)
    whole = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="is damaged or not a checkpoint"):
        read_payload(tmp_path / "cut.pt")

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(torch, "load", out_of_memory)
    with pytest.raises(MemoryError):
        read_payload(tmp_path / "last.pt")
