"""trainkit plot: a real picture of real curves, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def two_runs(cli, write_config, tmp_path: Path) -> Path:
    for name, lr in (("fast", 0.1), ("slow", 0.01)):
        config = write_config(name=f"{name}.yaml", optimizer={"name": "sgd", "lr": lr})
        args = ("--run-dir", tmp_path / "runs" / name, "--set", f"name={name}", "-q")
        assert cli("train", config, *args).exit_code == 0
    return tmp_path / "runs"


def test_plot_draws_each_run_in_its_colour(cli, two_runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "pictures" / "curves.png"
    out.parent.mkdir()
    result = cli("plot", two_runs / "fast", two_runs / "slow", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"loss, accuracy, lr of 2 runs: {out}"
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert image.shape[1] > 2 * image.shape[0]  # three panels side by side
    # matplotlib's first two colours, blue and orange, each draw a good many pixels
    blue = (abs(image - [31, 119, 180]).sum(axis=2) < 60).sum()
    orange = (abs(image - [255, 127, 14]).sum(axis=2) < 60).sum()
    assert blue > 500 and orange > 500
    svg = tmp_path / "loss.svg"
    assert (
        cli("plot", two_runs, "--metric", "loss", "--out", svg).exit_code == 0
    )  # a folder of runs
    text = svg.read_text()
    assert text.startswith("<?xml") and text.count("<path") > 20


def test_plot_refuses_what_it_cannot_draw(
    cli, two_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [
        ((two_runs / "fast", "--out", tmp_path / "x.jpg"), "must end in .png, .svg, .pdf"),
        (
            (tmp_path / "empty", "--out", tmp_path / "x.png"),
            "is not a run directory and holds none",
        ),
        ((two_runs / "fast", "--metric", "f1", "--out", tmp_path / "x.png"), "no run logged f1"),
    ]
    (tmp_path / "empty").mkdir()
    for args, expected in cases:
        result = cli("plot", *args)
        assert result.exit_code == 2 and expected in result.stderr, result.output
    assert not (tmp_path / "x.png").exists()
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    missing = cli("plot", two_runs / "fast", "--out", tmp_path / "x.png")
    assert missing.exit_code == 2 and "pip install 'trainkit[plot]'" in missing.stderr


def test_a_learning_rate_logged_less_often_than_epochs_is_drawn_from_the_epochs(
    cli, write_config, tmp_path: Path
) -> None:
    """12 steps an epoch and a record every 40: one interval point, which alone would be
    invisible; the epoch records draw the curve instead."""
    config = write_config(logging={"log_every_steps": 40}, trainer={"epochs": 4})
    assert cli("train", config, "--run-dir", tmp_path / "run", "-q").exit_code == 0
    out = tmp_path / "lr.png"
    assert cli("plot", tmp_path / "run", "--metric", "lr", "--out", out).exit_code == 0
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    blue = (abs(image - [31, 119, 180]).sum(axis=2) < 60).sum()
    assert blue > 300  # a line across the panel, not a lone point
