"""Streaming an image folder: the in-memory path's batches, exact resumes, any worker count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.disk_datasets import write_image_folder
from tests.helpers import NEVER, assert_same_run, misbehaving_loss, tiny_experiment
from trainkit.config.loading import CommandLine
from trainkit.config.schema import validate
from trainkit.data import image_data
from trainkit.data.streaming import ResizedCrop, crop_box, sample_generator
from trainkit.training.resume import resume
from trainkit.training.run import train


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "pets", per_class=16, size=20)


def experiment(folder: Path, **data: object) -> dict:
    return tiny_experiment(
        model={"name": "lenet"},
        data={
            "name": "image_folder",
            "root": str(folder),
            "image_size": 16,
            "batch_size": 8,
            **data,
        },
        trainer={"epochs": 3},
        logging={"log_every_steps": 3, "tensorboard": False},
    )


@pytest.mark.parametrize("augment", [False, pytest.param("crop_flip", marks=pytest.mark.slow)])
def test_streaming_trains_on_the_same_batches_as_in_memory(
    folder: Path, tmp_path: Path, augment: object
) -> None:
    """Batch-wise augmentation happens on the device in both paths, from the same
    generator: with it or without, the two runs end bit for bit alike."""
    for name, in_memory, workers in (
        ("memory", True, 0),
        ("stream0", False, 0),
        ("stream2", False, 2),
    ):
        config = experiment(folder, in_memory=in_memory, workers=workers, augment=augment)
        train(validate(config), run_dir=tmp_path / name, quiet=True)
    assert_same_run(tmp_path / "memory", tmp_path / "stream0")
    assert_same_run(tmp_path / "memory", tmp_path / "stream2")


def test_a_stopped_streaming_run_resumes_exactly_with_any_number_of_workers(
    folder: Path, tmp_path: Path
) -> None:
    """Per-image random-resized crops are drawn in the workers; stopped mid-epoch with two
    workers and resumed with none, the run ends as the uninterrupted one did."""

    def config(workers: int, stop_at: int) -> dict:
        raw = experiment(folder, in_memory=False, workers=workers, augment="random_resized_crop")
        raw.update(misbehaving_loss(tmp_path, "sigterm", stop_at))
        return raw

    train(validate(config(0, NEVER)), run_dir=tmp_path / "whole", quiet=True)
    # Loss calls: the probe, then 6 training steps (43 images) and 1 validation batch an
    # epoch: call 10 is step 8, batch 2 of epoch 2, between two log points.
    stopped = train(validate(config(2, 10)), run_dir=tmp_path / "cut", quiet=True)
    assert stopped.status == "interrupted" and stopped.step == 8
    resume(tmp_path / "cut", CommandLine([f"loss.at_call={NEVER}", "data.workers=0"]), quiet=True)
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


def test_random_resized_crops_are_a_function_of_seed_epoch_and_sample() -> None:
    crop = ResizedCrop()
    boxes = [crop_box(120, 200, crop, sample_generator(0, epoch, 7)) for epoch in range(20)]
    assert boxes[3] == crop_box(120, 200, crop, sample_generator(0, 3, 7))
    assert len(set(boxes)) > 15  # a new crop every epoch
    for top, left, h, w in boxes:
        assert 0 <= top <= 120 - h and 0 <= left <= 200 - w
        assert 0.08 * 120 * 200 * 0.9 <= h * w <= 120 * 200
    assert crop_box(120, 200, crop, sample_generator(1, 3, 7)) != boxes[3]


def test_auto_streams_a_folder_over_the_memory_budget(
    cli, folder: Path, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """48 training and 48 test images of 3x16x16 take 73.7 KB decoded: a budget of 50 KB
    streams them, through train, eval and resume on the CLI."""
    monkeypatch.setattr(image_data, "memory_budget", lambda: (50_000, "a test's budget"))
    config = write_config(experiment(folder, workers=0))
    result = cli("train", config, "--run-dir", tmp_path / "run", "--set", "trainer.epochs=2")
    assert result.exit_code == 0, result.output
    assert (
        "data: image_folder, streaming (96 images, 72.0 KB decoded, over the "
        "budget of 48.8 KB: a test's budget)" in result.stdout
    )
    assert "cached the decoded images" not in result.stdout  # streaming decodes as it goes
    scored = cli("eval", "--ckpt", tmp_path / "run" / "last.pt", "--out", tmp_path / "e.json")
    assert scored.exit_code == 0, scored.output
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (test,) = [r for r in records if "test/loss" in r]
    assert json.loads((tmp_path / "e.json").read_text())["loss"] == pytest.approx(test["test/loss"])
    assert cli("resume", tmp_path / "run", "--set", "trainer.epochs=3", "-q").exit_code == 0
    monkeypatch.setattr(image_data, "memory_budget", lambda: (10**9, "plenty"))
    fits = cli("train", config, "--run-dir", tmp_path / "again", "--set", "trainer.epochs=1")
    assert "in memory (96 images, 72.0 KB decoded, within the budget" in fits.stdout


@pytest.mark.slow
def test_a_bad_image_mid_epoch_is_named_or_skipped_the_same_way_every_time(
    cli, folder: Path, write_config, tmp_path: Path
) -> None:
    (folder / "train" / "dog" / "zz-broken.png").write_bytes(b"\x89PNG cut short")
    # Given mean and std, no image is read before training: the bad one is met mid-epoch.
    stats = {"mean": [0.3] * 3, "std": [0.3] * 3}
    config = write_config(experiment(folder, in_memory=False, workers=2, **stats))
    failed = cli("train", config, "--run-dir", tmp_path / "failed")
    assert failed.exit_code == 2 and "Traceback" not in failed.output
    assert "zz-broken.png: not a readable image" in failed.stderr
    assert "data.skip_bad: true" in failed.stderr
    runs = []
    for name in ("skip1", "skip2"):
        skip = cli("train", config, "--run-dir", tmp_path / name, "--set", "data.skip_bad=true")
        assert skip.exit_code == 0, skip.output
        assert skip.stderr.count("zz-broken.png") == 1  # one warning, not one an epoch
        runs.append(tmp_path / name)
    assert_same_run(*runs)


def test_start_up_says_what_it_is_doing_unless_quiet(
    cli, folder: Path, write_config, tmp_path: Path
) -> None:
    config = write_config(experiment(folder, in_memory=True, workers=0))
    loud = cli("train", config, "--run-dir", tmp_path / "loud", "--set", "trainer.epochs=1")
    assert f"scanning {folder} ..." in loud.stdout
    assert "found 48 training and 48 test images in 3 classes" in loud.stdout
    assert "decoding 48 training images ..." in loud.stdout
    assert "decoding 48 test images ..." in loud.stdout
    quiet = cli("train", config, "--run-dir", tmp_path / "quiet", "-q", "--set", "trainer.epochs=1")
    assert quiet.stdout == ""


def test_a_streamed_run_predicts_and_exports_like_any_other(
    cli, folder: Path, write_config, tmp_path: Path
) -> None:
    config = write_config(
        experiment(folder, in_memory=False, workers=0, augment="random_resized_crop")
    )
    assert cli("train", config, "--run-dir", tmp_path / "run", "-q").exit_code == 0
    predicted = cli(
        "predict", "--ckpt", tmp_path / "run", folder / "test", "--out", tmp_path / "p.json"
    )
    assert predicted.exit_code == 0, predicted.output
    assert len(json.loads((tmp_path / "p.json").read_text())) == 48
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert checkpoint["inputs"]["image"]["size"] == [16, 16]


def test_random_resized_crop_cannot_be_kept_in_memory(folder: Path) -> None:
    from trainkit.errors import UserError

    with pytest.raises(UserError, match="random_resized_crop crops each image at its full"):
        validate(experiment(folder, in_memory=True, augment="random_resized_crop"))
