"""Runs written by an earlier trainkit (tests/fixtures/stored_v0_1) still work: they
evaluate, resume exactly, predict and export through today's commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import assert_same_run

STORED = Path(__file__).parent / "fixtures" / "stored_v0_1"


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """A copy of the stored runs (a resume writes into its run), as the working folder."""
    copy = tmp_path / "stored"
    shutil.copytree(STORED, copy)
    return copy


def test_a_stored_run_stopped_mid_epoch_resumes_exactly(cli, stored: Path) -> None:
    run = stored / "features_run"
    assert cli("resume", run, "-q").exit_code == 0
    fresh = stored / "fresh"
    assert cli("train", run / "config.yaml", "--run-dir", fresh, "-q").exit_code == 0
    assert_same_run(fresh, run)


def test_a_stored_feature_model_evaluates_predicts_and_exports(
    cli, stored: Path, tmp_path: Path
) -> None:
    run = stored / "features_run"
    result = cli("eval", "--ckpt", run / "best.pt", "--out", tmp_path / "eval.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval.json").read_text())["samples"] == 60
    (tmp_path / "rows.csv").write_text("x1,x2\n0.5,-1.0\n-2.0,0.25\n")
    result = cli("predict", "--ckpt", run, tmp_path / "rows.csv", "--out", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "p.json").read_text())) == 2
    result = cli("export", "--ckpt", run, "--format", "safetensors", "--out", tmp_path / "x")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "model.safetensors").is_file()


def test_a_stored_image_model_predicts_as_it_evaluates_and_exports(
    cli, stored: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(stored)  # the run's data.root is relative to this folder
    run = stored / "images_run"
    assert cli("eval", "--ckpt", run, "--out", tmp_path / "e.json").exit_code == 0
    scored = json.loads((tmp_path / "e.json").read_text())
    result = cli("predict", "--ckpt", run, stored / "images" / "test", "--out", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "p.json").read_text())
    correct = sum(row["prediction"] == Path(row["input"]).parent.name for row in rows)
    assert len(rows) == scored["samples"] == 12
    assert correct == round(scored["accuracy"] * scored["samples"])
    result = cli("export", "--ckpt", run, "--format", "onnx", "--out", tmp_path / "x")
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "x" / "model.json").read_text())
    assert card["inputs"]["class_names"] == ["cat", "dog", "owl"]
