"""logging.wandb: one W&B run per trainkit run, holding exactly what metrics.jsonl holds,
across kills and resumes; tested in W&B's offline mode by reading back the files it
writes (tests/wandb_files.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NEVER, misbehaving_loss, tiny_experiment
from tests.test_mlflow import _free_port
from tests.wandb_files import history, sessions
from trainkit.training.metrics_log import read_records

TIMED = ("epoch_time", "samples_per_sec")


def experiment(**wandb: Any) -> dict[str, Any]:
    return tiny_experiment(logging={"log_every_steps": 5, "wandb": wandb or True})


def run_id(run: Path) -> str:
    return json.loads((run / "tracking.json").read_text())["wandb"]["run_id"]


def jsonl_rows(run: Path, *, timed: bool = True) -> list[dict[str, Any]]:
    """metrics.jsonl as W&B rows should hold it: row N is record N."""
    return [
        {"_step": number, "step": record["step"],
         **{k: v for k, v in record.items() if k not in ("step", "epoch", "scope")
            and (timed or k not in TIMED)}}
        for number, record in enumerate(read_records(run))
    ]  # fmt: skip


def untimed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMED} for row in rows]


def test_a_run_is_one_wandb_run_with_its_config_metrics_and_outcome(
    cli, write_config, tmp_path: Path
) -> None:
    raw = experiment(mode="offline", tags=["vision"], notes="first try")
    result = cli("train", write_config(raw), "--run-dir", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    (session,) = sessions(run, run_id(run))
    assert session.run.project == "tiny" and session.run.display_name == "run"
    assert list(session.run.tags) == ["vision"] and session.run.notes == "first try"
    assert session.config["optimizer"]["lr"] == 0.1 and session.config["seed"] == 3
    assert session.config["trainkit"]["run_dir"] == str(run.resolve())
    assert session.config["trainkit"]["device"] == "cpu" and session.config["versions"]["torch"]
    assert history(run, run_id(run)) == jsonl_rows(run)
    assert {"test/accuracy", "val/loss", "train/loss", "lr"} <= set().union(*session.rows)
    assert "config.yaml" in session.files
    assert session.exit_code == 0 and not session.preempting


@pytest.mark.slow  # seconds: two W&B sessions
def test_a_stopped_and_resumed_run_stays_one_wandb_run(cli, write_config, tmp_path) -> None:
    """$WANDB_MODE=offline (set for all tests) chooses offline when the config does not."""
    raw = experiment(log_checkpoints="last")
    raw.update(misbehaving_loss(tmp_path, "sigterm", 20))  # SIGTERM in epoch 2
    stopped = cli("train", write_config(raw), "--run-dir", tmp_path / "run", "-q")
    assert stopped.exit_code == 143
    run, first = tmp_path / "run", run_id(tmp_path / "run")
    (session,) = sessions(run, first)
    assert session.preempting and session.exit_code == 255
    assert history(run, first) == jsonl_rows(run)  # all of it: checkpointed
    resumed = cli("resume", run, "--set", f"loss.at_call={NEVER}", "--set",
                  "trainer.epochs=4", "-q")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert run_id(run) == first
    later = sessions(run, first)
    assert len(later) == 2 and later[1].exit_code == 0
    assert later[1].config["trainer"]["epochs"] == 4  # the config the run ended with
    assert history(run, first) == jsonl_rows(run)
    assert [a.name for a in later[1].artifacts] == [f"{first}-checkpoints"]


# A kill -9 and a resume against the uninterrupted twin: tested with MLflow's at once, in
# tests/test_mlflow.py (test_a_killed_and_resumed_run_matches_its_twin_on_a_server).


def test_online_without_a_login_stops_before_any_training(
    cli, write_config, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key in it
    result = cli("train", write_config(experiment(mode="online")), "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "W&B at http://127.0.0.1:" in message and "wandb login" in message
    assert "logging.wandb.mode: offline" in message
    assert not (tmp_path / "run").exists()
    raw = experiment(mode="online", required=False)
    result = cli("train", write_config(raw), "--run-dir", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    assert "training goes on without W&B (required: false)" in " ".join(result.stderr.split())
    assert not (tmp_path / "run" / "tracking.json").exists()


def test_a_misspelt_key_and_a_missing_extra_are_one_paragraph(
    cli, write_config, tmp_path, monkeypatch
) -> None:
    result = cli("train", write_config(experiment(projct="x")), "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and "did you mean 'project'?" in result.stderr
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    result = cli("train", write_config(experiment()), "--run-dir", tmp_path / "run")
    assert result.exit_code == 2
    assert "pip install 'trainkit[wandb]'" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # seconds: MLflow's first import and database set-up
def test_exports_and_plots_go_to_both_trackers_when_asked(cli, write_config, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    asked = {"log_exports": True, "log_plots": True}
    raw = tiny_experiment(
        logging={"wandb": {"mode": "offline", **asked},
                 "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", **asked}}
    )  # fmt: skip
    run = tmp_path / "run"
    assert cli("train", write_config(raw), "--run-dir", run, "-q").exit_code == 0
    exported = cli("export", "--ckpt", run, "--format", "safetensors")
    assert exported.exit_code == 0, exported.output
    plotted = cli("plot", run, "--out", tmp_path / "curves.png")
    assert plotted.exit_code == 0, plotted.output
    stored = json.loads((run / "tracking.json").read_text())
    client = MlflowClient(stored["mlflow"]["tracking_uri"])
    listed = {a.path for folder in ("exports", "plots")
              for a in client.list_artifacts(stored["mlflow"]["run_id"], folder)}  # fmt: skip
    assert listed == {"exports/model.safetensors", "exports/model.json", "plots/curves.png"}
    _, *later = sessions(run, run_id(run))
    names = [a.name for session in later for a in session.artifacts]
    assert names == [f"{run_id(run)}-exports", f"{run_id(run)}-plots"]
    assert history(run, run_id(run)) == jsonl_rows(run)  # reopening the run added no rows


def test_a_plot_of_an_untracked_run_uploads_nothing(cli, write_config, tmp_path) -> None:
    run = tmp_path / "run"
    raw = experiment(mode="offline")  # log_plots: false, the default
    assert cli("train", write_config(raw), "--run-dir", run, "-q").exit_code == 0
    assert cli("plot", run, "--out", tmp_path / "curves.png").exit_code == 0
    assert len(sessions(run, run_id(run))) == 1


def test_the_row_count_stops_at_a_torn_record_and_gives_up_on_a_stranger(tmp_path) -> None:
    """What a killed W&B process leaves: a file cut anywhere. The whole rows before the
    cut count; a file that is not W&B's makes the count unknown."""
    import wandb

    from trainkit.tracking.wandb_files import rows_on_disk, session_files

    quiet = wandb.Settings(silent=True, console="off", disable_git=True)
    run = wandb.init(project="p", id="torn1", dir=str(tmp_path), mode="offline", settings=quiet)
    for number in range(40):
        run.log({"x": float(number)}, step=number, commit=True)
    run.finish()
    deadline = time.monotonic() + 60  # W&B's service may still be writing the file
    while rows_on_disk(tmp_path, "torn1") != 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rows_on_disk(tmp_path, "torn1") == 40
    (path,) = session_files(tmp_path, "torn1")
    data = path.read_bytes()
    counts = []
    for cut in range(7, len(data), 61):  # cut anywhere, from just after the header
        path.write_bytes(data[:cut])
        counts.append(rows_on_disk(tmp_path, "torn1"))
    assert counts[0] == 0 and counts == sorted(counts) and counts[-1] in (39, 40)
    assert len(set(counts)) > 20  # the cuts went through the rows, one by one
    path.write_bytes(b"not a W&B file at all")
    assert rows_on_disk(tmp_path, "torn1") is None
