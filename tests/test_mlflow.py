"""logging.mlflow: one MLflow run per trainkit run, holding exactly what metrics.jsonl
holds, across kills and resumes; tested against a SQLite store and against a real
`mlflow server` the tests start on localhost, read back with MlflowClient."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import NEVER, misbehaving_loss, tiny_experiment
from tests.test_resume import start_training, wait_for
from tests.wandb_files import sessions
from trainkit.training.metrics_log import read_records


def experiment(**mlflow: Any) -> dict[str, Any]:
    return tiny_experiment(logging={"log_every_steps": 5, "mlflow": mlflow or True})


def tracked(run: Path) -> tuple[MlflowClient, str]:
    stored = json.loads((run / "tracking.json").read_text())["mlflow"]
    return MlflowClient(stored["tracking_uri"]), stored["run_id"]


def history(client: MlflowClient, run_id: str) -> list[tuple[str, int, float]]:
    keys = client.get_run(run_id).data.metrics
    points = [(k, m.step, m.value) for k in keys for m in client.get_metric_history(run_id, k)]
    return sorted(points)


def jsonl_history(run: Path) -> list[tuple[str, int, float]]:
    points = [
        (key, record["step"], float(value))
        for record in read_records(run)
        for key, value in record.items()
        if key not in ("step", "epoch", "scope")
    ]
    return sorted(points)


def untimed_points(points: list[tuple[str, int, float]]) -> list[tuple[str, int, float]]:
    return [p for p in points if p[0] not in ("epoch_time", "samples_per_sec")]


@pytest.mark.slow  # seconds: MLflow's first import and database set-up
def test_a_run_is_one_mlflow_run_with_its_config_metrics_and_outcome(
    cli, write_config, tmp_path: Path
) -> None:
    """Without a URI: a SQLite store in the runs' root, artifacts beside it."""
    raw = experiment(tags={"team": "vision"})
    raw["checkpoint"] = {"runs_dir": str(tmp_path / "runs")}
    result = cli("train", write_config(raw), "-q")
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "runs" / "tiny").iterdir())
    client, run_id = tracked(run)
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    found = client.get_run(run_id)
    assert found.info.status == "FINISHED" and found.info.run_name == run.name
    assert client.get_experiment(found.info.experiment_id).name == "tiny"
    assert found.info.artifact_uri.startswith((tmp_path / "runs" / "mlartifacts").as_uri())
    assert found.data.params["optimizer.lr"] == "0.1" and found.data.params["seed"] == "3"
    tags = found.data.tags
    assert tags["trainkit.run_dir"] == str(run.resolve()) and tags["team"] == "vision"
    assert tags["trainkit.device"] == "cpu" and tags["versions.torch"]
    assert history(client, run_id) == jsonl_history(run)
    assert {"test/accuracy", "val/loss", "train/loss", "lr"} <= set(found.data.metrics)
    assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml"]
    assert len(client.search_runs([found.info.experiment_id])) == 1


@pytest.mark.slow  # seconds: two MLflow sessions
def test_a_stopped_and_resumed_run_stays_one_mlflow_run(cli, write_config, tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = experiment(tracking_uri=uri)
    raw.update(misbehaving_loss(tmp_path, "sigterm", 20))  # SIGTERM in epoch 2
    stopped = cli("train", write_config(raw), "--run-dir", tmp_path / "run", "-q")
    assert stopped.exit_code == 143
    client, run_id = tracked(tmp_path / "run")
    assert client.get_run(run_id).info.status == "KILLED"
    assert history(client, run_id) == jsonl_history(tmp_path / "run")  # all of it: checkpointed
    resumed = cli("resume", tmp_path / "run", "--set", f"loss.at_call={NEVER}",
                  "--set", "trainer.epochs=4", "-q")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert tracked(tmp_path / "run")[1] == run_id
    found = client.get_run(run_id)
    assert found.info.status == "FINISHED"
    assert found.data.params["trainer.epochs"] == "3"  # MLflow keeps a parameter's first value
    assert found.data.tags["resumed_with.trainer.epochs"] == "4"
    assert history(client, run_id) == jsonl_history(tmp_path / "run")
    assert len(client.search_runs([found.info.experiment_id])) == 1


@pytest.mark.parametrize(
    ("mlflow", "expected"),
    [
        ({"tracking_uri": "not a uri"}, "logging.mlflow.tracking_uri='not a uri' is not a URI"),
        ({"tracking_uri": "http://127.0.0.1:9"}, "server at http://127.0.0.1:9 cannot be reached"),
        ({"tracking_uri": "sqlite:///x.db", "experimnt": "x"}, "did you mean 'experiment'?"),
    ],
)
def test_bad_settings_stop_before_any_training(cli, write_config, tmp_path, mlflow, expected):
    result = cli("train", write_config(experiment(**mlflow)), "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert expected in " ".join(result.stderr.split())
    assert not (tmp_path / "run").exists()


def test_a_server_that_is_not_required_is_a_warning(cli, write_config, tmp_path) -> None:
    raw = experiment(tracking_uri="http://127.0.0.1:9", required=False)
    result = cli("train", write_config(raw), "--run-dir", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    assert "training goes on without MLflow (required: false)" in " ".join(result.stderr.split())
    assert not (tmp_path / "run" / "tracking.json").exists()


def test_the_extra_missing_is_one_paragraph(cli, write_config, tmp_path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    result = cli("train", write_config(experiment()), "--run-dir", tmp_path / "run")
    assert result.exit_code == 2
    assert "pip install 'trainkit[mlflow]'" in result.stderr
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # No job runner: its four worker processes cost seconds at every start.
        env={
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        },
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    pytest.fail("mlflow server did not start within 60 s")


def _stop(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, 9)
    server.wait(timeout=30)


class Server:
    """A real MLflow tracking server on a free localhost port, with a SQLite store; a test
    may stop it and start it again on the same port and store."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = _start_server(self.folder, self.port)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


# The module's tests share what its module-scoped fixtures make: with pytest-xdist they
# all run in one worker, so it is made once.
pytestmark = pytest.mark.xdist_group("mlflow_server")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module's tests (each starting one takes seconds)."""
    running = Server(tmp_path_factory.mktemp("mlflow-server"))
    running.start()
    yield running
    running.stop()


# About 280 steps an epoch, a checkpoint every 50: a kill lands between checkpoints.
LONG = tiny_experiment(
    data={"n_train": 10000, "n_test": 200, "batch_size": 32},
    optimizer={"name": "adam", "lr": 0.003},
    trainer={"epochs": 2},
    checkpoint={"every_steps": 50},
    logging={"log_every_steps": 20},
)


@pytest.mark.slow
def test_a_killed_and_resumed_run_matches_its_twin_on_a_server(
    server: Server, write_config, tmp_path: Path
) -> None:
    """The run is tracked by MLflow and by W&B (offline) at once, and each tracker ends up
    with what the uninterrupted twin's has. W&B writes its offline file every second or
    so: the resume counts the rows on disk, and sends again what the killed session's W&B
    process had not written."""

    def config(name: str) -> Path:
        return write_config(
            {**LONG, "logging": {**LONG["logging"], "mlflow": {"tracking_uri": server.uri,
             "experiment": name}, "wandb": {"mode": "offline"}}},
            name=f"{name}.yaml",
        )  # fmt: skip

    twin = subprocess.run(
        [sys.executable, "-m", "trainkit", "train", str(config("twin")), "--run-dir",
         str(tmp_path / "twin"), "-q"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert twin.returncode == 0, twin.stderr
    process = start_training(config("killed"), tmp_path / "killed")
    wait_for(process, lambda line: line.startswith("epoch 1/2  batch") and " step 120 " in line)
    process.kill()
    process.wait(timeout=60)
    client, run_id = tracked(tmp_path / "killed")
    assert client.get_run(run_id).info.status == "RUNNING"  # killed: nobody could say
    sent = history(client, run_id)
    assert sent and max(step for _, step, _ in sent) <= 100  # only what a checkpoint covers
    resumed = subprocess.run(
        [sys.executable, "-m", "trainkit", "resume", str(tmp_path / "killed"), "-q"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "killed" / "metrics.abandoned.jsonl").is_file()  # there was a replay
    twin_client, twin_id = tracked(tmp_path / "twin")
    assert history(client, run_id) == jsonl_history(tmp_path / "killed")
    assert history(twin_client, twin_id) == jsonl_history(tmp_path / "twin")
    untimed = [untimed_points(history(c, r)) for c, r in ((client, run_id), (twin_client, twin_id))]
    assert untimed[0] == untimed[1]  # point for point, but for the wall-clock figures
    assert client.get_run(run_id).info.status == "FINISHED"
    experiment_id = client.get_run(run_id).info.experiment_id
    assert len(client.search_runs([experiment_id])) == 1

    from tests.test_wandb import jsonl_rows, untimed
    from tests.test_wandb import run_id as wandb_run_id
    from tests.wandb_files import history as wandb_history
    from tests.wandb_files import sessions

    killed = tmp_path / "killed"
    first, second = sessions(killed, wandb_run_id(killed))
    assert all(row["step"] <= 100 for row in first.rows)  # checkpointed only, if written
    rows = wandb_history(killed, wandb_run_id(killed))
    assert rows == jsonl_rows(killed)
    assert [row["_step"] for row in rows] == list(range(len(rows)))  # one history, no gaps
    twin_rows = wandb_history(tmp_path / "twin", wandb_run_id(tmp_path / "twin"))
    assert untimed(rows) == untimed(twin_rows)
    assert second.exit_code == 0


@pytest.mark.slow
def test_a_server_that_goes_away_mid_run_gets_the_records_when_it_is_back(
    server: Server, write_config, tmp_path: Path
) -> None:
    raw = {**LONG, "logging": {**LONG["logging"], "mlflow": {"tracking_uri": server.uri}}}
    process = start_training(write_config(raw), tmp_path / "run")
    try:
        wait_for(process, lambda line: line.startswith("epoch 1/2  batch") and " step 60 " in line)
        server.stop()  # gone for about an epoch
        wait_for(process, lambda line: line.startswith("epoch 2/2  batch") and " step 400 " in line)
        process.send_signal(signal.SIGSTOP)  # however slowly the server starts, it is back
        server.start()  # before training ends
        process.send_signal(signal.SIGCONT)
        _, err = process.communicate(timeout=600)
    finally:
        process.kill()
        if server.process is None:  # the test failed while it was gone
            server.start()
    assert process.returncode == 0, err
    assert "cannot be reached" in err and "is back: " in err  # the records went after all
    client, run_id = tracked(tmp_path / "run")
    assert history(client, run_id) == jsonl_history(tmp_path / "run"), err
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_a_sweeps_trials_nest_under_one_run_for_the_sweep(cli, write_config, tmp_path) -> None:
    """And with W&B on too, they form one W&B group named after the sweep."""
    raw = experiment()
    raw["logging"]["wandb"] = {"mode": "offline"}
    write_config(raw, name="experiment.yaml")
    sweep = {
        "name": "search", "base": "experiment.yaml", "metric": "val/accuracy", "trials": 2,
        "sampler": "grid", "space": {"optimizer.lr": {"choice": [0.05, 0.3]}},
    }  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(json.dumps(sweep))
    result = cli("sweep", tmp_path / "sweep.yaml", "--dir", tmp_path / "sweep", "-q")
    assert result.exit_code == 0, result.output
    stored = json.loads((tmp_path / "sweep" / "tracking.json").read_text())["mlflow"]
    assert stored["tracking_uri"] == f"sqlite:///{(tmp_path / 'sweep' / 'mlflow.db').resolve()}"
    client = MlflowClient(stored["tracking_uri"])
    parent = client.get_run(stored["run_id"])
    assert parent.info.run_name == "search" and parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{stored['run_id']}'"
    )
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.05", "0.3"]
    assert all(c.info.status == "FINISHED" for c in children)
    trials = sorted(path.parent for path in (tmp_path / "sweep").rglob("trial-*/tracking.json"))
    runs = [sessions(t, json.loads((t / "tracking.json").read_text())["wandb"]["run_id"])[0]
            for t in trials]  # fmt: skip
    assert [r.run.run_group for r in runs] == ["search", "search"]
    assert sorted(r.config["optimizer"]["lr"] for r in runs) == [0.05, 0.3]
    assert len(client.search_runs([parent.info.experiment_id])) == 3  # the sweep and 2 trials
