"""`trainkit.plugin` is all a plugin needs: one written against it alone trains,
resumes, evaluates, lists and predicts like a built-in component."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from tests.helpers import PLUGINS, install_plugin, tiny_experiment


def test_the_public_plugin_module_is_all_the_test_plugin_imports() -> None:
    tree = ast.parse((PLUGINS / "tk_public_api.py").read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert {m for m in imported if m and m.startswith("trainkit")} == {"trainkit.plugin"}


def test_a_plugin_written_against_the_public_module_trains_and_is_used(
    cli, write_config, tmp_path: Path
) -> None:
    raw = tiny_experiment(
        plugins=[install_plugin(tmp_path, "tk_public_api")],
        model={"name": "tk_squares", "width": 16},
        data={"name": "tk_rings", "n_train": 400, "batch_size": 32},
        loss={"name": "tk_smooth_ce", "smoothing": 0.05},
        optimizer={"name": "tk_sign_sgd", "lr": 0.01},
        scheduler={"name": "tk_halving", "every_epochs": 2},
        trainer={"epochs": 4},
        checkpoint={"monitor": "val/accuracy"},
    )
    config = write_config(raw)
    listed = cli("ls", "models", "--plugin", "tk_public_api")
    assert "tk_squares" in listed.stdout and "Hidden units." in listed.stdout
    result = cli("train", config, "--run-dir", tmp_path / "run", "-q", "--set", "trainer.epochs=2")
    assert result.exit_code == 0, result.output
    assert cli("resume", tmp_path / "run", "--set", "trainer.epochs=4", "-q").exit_code == 0
    assert cli("eval", "--ckpt", tmp_path / "run", "--out", tmp_path / "e.json").exit_code == 0
    scored = json.loads((tmp_path / "e.json").read_text())
    assert scored["class_names"] == ["inside", "outside"]
    assert scored["accuracy"] > 0.8  # the squares make the circle linearly separable
    (tmp_path / "points.csv").write_text("x,y\n0.1,0.2\n2.0,-2.0\n")
    out = tmp_path / "p.json"
    predicted = cli("predict", "--ckpt", tmp_path / "run", tmp_path / "points.csv", "--out", out)
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads(out.read_text())
    assert [row["prediction"] for row in rows] == ["inside", "outside"]
