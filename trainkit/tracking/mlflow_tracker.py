"""MLflow as a tracker: one MLflow run per trainkit run, fed by `tracking.feed`.

The tracking URI is `logging.mlflow.tracking_uri`, else $MLFLOW_TRACKING_URI, else a
SQLite store, mlflow.db, in the runs' root folder (its artifacts beside it, in
mlartifacts/), never MLflow's deprecated file store and never a folder of the working
directory. The experiment is the config's name and the run's name its id, unless set.
The run gets the resolved config as parameters (dotted keys, `optimizer.lr`), the
config file as an artifact, tags for the run directory, the git commit, library
versions, world size, device and host, every metrics.jsonl record with its names and
step, and at the end its outcome as the run's status, with the checkpoints asked for.
MLflow's telemetry is off unless the user turns it on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit.config.loading import dotted
from trainkit.config.schema import Config, MLflowConfig, to_dict
from trainkit.errors import UserError, first_line
from trainkit.tracking.feed import TrackerUnavailable, metrics_of, unusable
from trainkit.tracking.run_facts import checkpoints, git_repository, run_facts
from trainkit.training.run_dir import CONFIG_FILE

if TYPE_CHECKING:
    from trainkit.training.run_dir import Status

STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED", "failed": "FAILED",
          "interrupted": "KILLED"}  # fmt: skip
BATCH = 1000  # metrics per log_batch call: MLflow's limit
PARAM_BATCH = 100  # params per log_batch call: MLflow's limit
PARAM_LENGTH = 6000  # characters of a param value MLflow keeps
PARENT_RUN = "TRAINKIT_MLFLOW_PARENT_RUN"  # set for a sweep's trials: the sweep's run id


def _quiet_mlflow() -> None:
    """Before mlflow is imported: no telemetry unless asked for, a failed request not
    retried by MLflow (the feed tries again later: training must not wait minutes for a
    server that is gone), and its database migrations' log lines off the screen."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    """A request that fails becomes TrackerUnavailable (the records wait)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        raise TrackerUnavailable(first_line(exc)) from None


class MLflowTracker:
    key = "mlflow"

    def __init__(self, config: Config, settings: MLflowConfig) -> None:
        _quiet_mlflow()
        self.config = config
        self.settings = settings
        self.uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.label = f"MLflow at {self.uri}" if self.uri else "MLflow"
        self.client: Any = None
        self.run_id = ""

    def check(self) -> bool:
        """Whether the tracking server answers (a database store is opened when the run
        starts). Unreachable: a UserError, or with `required: false` a warning and False."""
        if not self.uri or not self.uri.startswith(("http://", "https://")):
            if self.uri and "://" not in self.uri and not Path(self.uri).is_absolute():
                raise UserError(
                    f"logging.mlflow.tracking_uri={self.uri!r} is not a URI MLflow takes: use "
                    "http(s)://HOST:PORT for a server or sqlite:///PATH/mlflow.db for a "
                    "database file."
                )
            return True
        from mlflow.tracking import MlflowClient

        previous = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        try:
            with _unavailable_on_failure():
                MlflowClient(self.uri).search_experiments(max_results=1)
        except TrackerUnavailable as exc:
            message = (
                f"the MLflow tracking server at {self.uri} cannot be reached ({exc}). Start "
                "it, or correct logging.mlflow.tracking_uri (or $MLFLOW_TRACKING_URI)"
            )
            return unusable(message, key="mlflow", name="MLflow", required=self.settings.required)
        finally:
            if previous is None:
                del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
            else:
                os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = previous
        return True

    def open(self, run_dir: Path, stored: dict[str, Any] | None) -> dict[str, Any]:
        from mlflow.tracking import MlflowClient

        root = _runs_root(run_dir, Path(self.config.checkpoint.runs_dir))
        self.uri = (stored or {}).get("tracking_uri") or self.uri or _default_uri(root)
        self.label = f"MLflow at {self.uri}"
        try:
            self.client = MlflowClient(self.uri)
        except Exception as exc:
            raise UserError(
                f"logging.mlflow.tracking_uri={self.uri!r}: MLflow cannot use it "
                f"({first_line(exc)})."
            ) from None
        with _unavailable_on_failure():
            if stored and stored.get("run_id"):
                self.run_id = stored["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                self._log_params(resumed=True)
            else:
                self.run_id = self._create_run(run_dir, root)
        return {"tracking_uri": self.uri, "run_id": self.run_id}

    def _experiment_id(self, root: Path) -> str:
        name = self.settings.experiment or self.config.name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if not self.uri.startswith(("http://", "https://")):  # a database beside the runs
            location = (root / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def _create_run(self, run_dir: Path, root: Path) -> str:
        experiment_id = self._experiment_id(root)
        tags = run_facts(self.config, run_dir)
        repository = git_repository()
        if repository:
            tags["mlflow.source.git.commit"] = repository[1]
        tags.update(self.settings.tags)
        if os.environ.get(PARENT_RUN):  # a sweep's trial: nested under the sweep's run
            tags["mlflow.parentRunId"] = os.environ[PARENT_RUN]
        run = self.client.create_run(
            experiment_id, run_name=self.settings.run_name or run_dir.name, tags=tags
        )
        self.run_id = run.info.run_id
        self._log_params(resumed=False)
        if self.settings.log_config and (run_dir / CONFIG_FILE).is_file():
            self.client.log_artifact(self.run_id, str(run_dir / CONFIG_FILE))
        return self.run_id

    def _log_params(self, *, resumed: bool) -> None:
        """The resolved config as parameters. MLflow keeps a parameter's first value; a
        resume that changed one (--set trainer.epochs=N) records the new value as a tag."""
        from mlflow.entities import Param, RunTag

        params = {
            key: str(value)[:PARAM_LENGTH]
            for key, value in dotted(to_dict(self.config)).items()
            if value is not None
        }
        logged = self.client.get_run(self.run_id).data.params if resumed else {}
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        changed = [
            RunTag(f"resumed_with.{k}", v) for k, v in params.items() if logged.get(k, v) != v
        ]
        for start in range(0, len(new), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=new[start : start + PARAM_BATCH])
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def open_sweep(self, sweep_dir: Path, name: str, stored: dict[str, Any] | None) -> dict:
        """The parent run of a sweep's trials (continued, with what `stored` says); its
        trials find it in the environment and nest under it."""
        from mlflow.tracking import MlflowClient

        self.uri = (stored or {}).get("tracking_uri") or self.uri or _default_uri(sweep_dir)
        self.label = f"MLflow at {self.uri}"
        with _unavailable_on_failure():
            self.client = MlflowClient(self.uri)
            if stored and stored.get("run_id"):
                self.run_id = stored["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                tags = {"trainkit.sweep_dir": str(sweep_dir.resolve()), **self.settings.tags}
                run = self.client.create_run(
                    self._experiment_id(sweep_dir), run_name=name, tags=tags
                )
                self.run_id = run.info.run_id
        return {"tracking_uri": self.uri, "run_id": self.run_id}

    def end_sweep(self, status: str) -> None:
        with _unavailable_on_failure():
            self.client.set_terminated(self.run_id, status)

    def held(self, records: list[dict[str, Any]]) -> int | None:
        """The records MLflow holds, from the first: those whose every metric it has as
        often as metrics.jsonl has had it up to that record."""
        counts: dict[str, int] = {}
        seen: dict[str, int] = {}
        with _unavailable_on_failure():
            keys = {key for record in records for key in metrics_of(record)}
            for key in keys:
                counts[key] = len(self.client.get_metric_history(self.run_id, key))
        for index, record in enumerate(records):
            for key in metrics_of(record):
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > counts.get(key, 0):
                    return index
        return len(records)

    def send(self, records: list[dict[str, Any]], start: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch: list[Metric] = []
        with _unavailable_on_failure():  # whole records per request, so `held` can count them
            for record in records:
                metrics = [
                    Metric(k, v, now, int(record["step"])) for k, v in metrics_of(record).items()
                ]
                if batch and len(batch) + len(metrics) > BATCH:
                    self.client.log_batch(self.run_id, metrics=batch)
                    batch = []
                batch += metrics
            if batch:
                self.client.log_batch(self.run_id, metrics=batch)

    def close(self, run_dir: Path, status: Status, *, discarded: bool) -> None:
        with _unavailable_on_failure():
            if discarded:  # the run left nothing: neither does its tracker run
                self.client.delete_run(self.run_id)
                return
            for path in checkpoints(run_dir, self.settings.log_checkpoints):
                self.client.log_artifact(self.run_id, str(path), "checkpoints")
            self.client.set_terminated(self.run_id, STATUS[status])


def _runs_root(run_dir: Path, runs_dir: Path) -> Path:
    """The folder that holds the runs: checkpoint.runs_dir when the run is under it,
    else the run directory's parent (a run placed with --run-dir)."""
    with contextlib.suppress(ValueError):
        run_dir.resolve().relative_to(runs_dir.resolve())
        return runs_dir
    return run_dir.parent


def _default_uri(root: Path) -> str:
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def attach(run_dir: Path, stored: dict[str, Any], what: str, files: list[Path]) -> None:
    """Upload `files` (exports, plots) into the run's MLflow run, under `what`/."""
    _quiet_mlflow()
    from mlflow.tracking import MlflowClient

    with _unavailable_on_failure():
        client = MlflowClient(stored["tracking_uri"])
        for path in files:
            client.log_artifact(stored["run_id"], str(path), what)
