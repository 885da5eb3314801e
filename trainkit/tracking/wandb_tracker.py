"""Weights & Biases as a tracker: one W&B run per trainkit run, fed by `tracking.feed`.

The W&B run's id is made when the trainkit run starts and kept in tracking.json, so a
resume continues that run (`resume="allow"`), never a second one. Its files (the
offline record, logs) go into the run directory's wandb/ folder. Each metrics.jsonl
record becomes one W&B history row, row number N for record number N, carrying the
record's metrics under their own names and its trainkit step as `step`, the x-axis of
every chart. Rows numbered by record make a resumed history continue where the last
one ended: online, the W&B server says how many rows it holds; offline, each session
writes its own offline-run folder (W&B cannot resume offline), the rows continuing the
numbering, and `wandb sync --id RUN_ID DIR...` uploads them in order into one run.

The resolved config is the run's config (nested, as W&B shows it: optimizer.lr), with
the run facts under `trainkit` and `versions`; config.yaml goes to the run's files; the
outcome is the exit code (0 finished, 1 failed; a stopped run is marked preempting).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit.config.schema import Config, WandbConfig, to_dict
from trainkit.errors import first_line
from trainkit.tracking.feed import TrackerUnavailable, metrics_of, unusable
from trainkit.tracking.run_facts import checkpoints, git_repository, run_facts
from trainkit.tracking.wandb_files import rows_on_disk
from trainkit.training.run_dir import CONFIG_FILE

if TYPE_CHECKING:
    from trainkit.training.run_dir import Status

EXIT_CODES = {"completed": 0, "early_stopped": 0, "failed": 1, "interrupted": 255}
GROUP = "TRAINKIT_WANDB_GROUP"  # set for a sweep's trials: the sweep's name
CHECK_SECONDS = 15  # how long the start-up check waits for the W&B server
FLUSH_SECONDS = 1.0  # how often W&B writes an offline run's file (its default: 15 s)


@contextlib.contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    """A W&B call that fails becomes TrackerUnavailable (the records wait). Only calls
    into wandb run inside: its service's refusals are not all wandb.errors.Error."""
    try:
        yield
    except Exception as exc:
        raise TrackerUnavailable(f"{type(exc).__name__}: {first_line(exc)}") from None


def mode_of(settings: WandbConfig) -> str:
    """online or offline (or W&B's own `disabled`), as the setting and $WANDB_MODE say."""
    mode = settings.mode or os.environ.get("WANDB_MODE") or "online"
    return "offline" if mode == "dryrun" else mode


class WandbTracker:
    key = "wandb"

    def __init__(self, config: Config, settings: WandbConfig) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")  # its banner and links off the screen
        # A service inherited from a parent process would outlive this one if it were
        # killed, and refuse the relaunch its run id ("in use"): this process starts its own.
        os.environ.pop("WANDB_SERVICE", None)
        self.config = config
        self.settings = settings
        self.mode = mode_of(settings)
        self.server = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        self.label = f"W&B at {self.server}" if self.mode == "online" else f"W&B ({self.mode})"
        self.run: Any = None
        self.run_dir = Path()

    def check(self) -> bool:
        """Online: whether the W&B server answers and takes the API key. Offline needs
        nothing. Not usable: a UserError, or with `required: false` a warning and False."""
        if self.mode != "online":
            return True
        import wandb

        try:
            wandb.Api(timeout=CHECK_SECONDS).viewer  # noqa: B018 (asks the server who we are)
        except (wandb.errors.Error, OSError) as exc:
            message = (
                f"W&B at {self.server} cannot be used ({first_line(exc)}). Log in with `wandb "
                "login` or $WANDB_API_KEY, correct $WANDB_BASE_URL, or track offline with "
                "logging.wandb.mode: offline (then `wandb sync`)"
            )
            return unusable(message, key="wandb", name="W&B", required=self.settings.required)
        return True

    def open(self, run_dir: Path, stored: dict[str, Any] | None) -> dict[str, Any]:
        import wandb

        resumed = bool(stored and stored.get("run_id"))
        run_id = stored["run_id"] if stored and resumed else uuid.uuid4().hex[:12]
        repository = git_repository()
        where = {"git_root": repository[0]} if repository else {"disable_git": True}
        self.run_dir = run_dir
        config = self._config(run_dir)
        with _unavailable_on_failure():
            self.run = wandb.init(
                project=self.settings.project or self.config.name,
                entity=self.settings.entity,
                id=run_id,
                name=self.settings.run_name or run_dir.name,
                group=self.settings.group or os.environ.get(GROUP),
                tags=self.settings.tags,
                notes=self.settings.notes,
                dir=str(run_dir),
                mode=self.mode,
                resume="allow",
                settings=wandb.Settings(**_settings(), **where),
            )
            self.run.config.update(config, allow_val_change=True)
            self.run.define_metric("step", hidden=True)
            self.run.define_metric("*", step_metric="step")
            if not resumed and self.settings.log_config and (run_dir / CONFIG_FILE).is_file():
                self.run.save(str(run_dir / CONFIG_FILE), base_path=str(run_dir), policy="now")
        return {"run_id": run_id, "project": self.run.project, "entity": self.run.entity,
                "mode": self.mode}  # fmt: skip

    def _config(self, run_dir: Path) -> dict[str, Any]:
        """The resolved config, and the run facts nested by their dotted names."""
        nested: dict[str, Any] = to_dict(self.config)
        for name, value in run_facts(self.config, run_dir).items():
            section, key = name.split(".", 1)
            nested.setdefault(section, {})[key] = value
        return nested

    def held(self, records: list[dict[str, Any]]) -> int | None:
        """The rows the W&B server holds (row N is record N), or offline, the rows on
        disk: its service may not have written the last ones when a run was killed."""
        if self.mode == "online":
            held = self.run.step
        elif self.mode == "offline":
            held = rows_on_disk(self.run_dir, self.run.id)
        else:
            return None
        return None if held is None else min(held, len(records))

    def send(self, records: list[dict[str, Any]], start: int) -> None:
        with _unavailable_on_failure():
            for number, record in enumerate(records, start):
                row = {**metrics_of(record), "step": record["step"]}
                self.run.log(row, step=number, commit=True)

    def close(self, run_dir: Path, status: Status, *, discarded: bool) -> None:
        import wandb

        with _unavailable_on_failure():
            if discarded:  # the run left nothing: neither does its tracker run
                self.run.finish(exit_code=EXIT_CODES[status])
                if self.mode == "online":
                    wandb.Api(timeout=CHECK_SECONDS).run(self.run.path).delete()
                return
            files = checkpoints(run_dir, self.settings.log_checkpoints)
            if files:
                self.run.log_artifact(artifact(self.run.id, "checkpoints", "model", files))
            if status == "interrupted":  # stopped to be resumed: W&B's preempted state
                self.run.mark_preempting()
            self.run.finish(exit_code=EXIT_CODES[status])


def _settings() -> dict[str, Any]:
    """W&B's settings for a run trainkit feeds: no console capture, no banner, and
    (where this W&B version has the setting) the offline file written every second."""
    import wandb

    settings: dict[str, Any] = {"console": "off", "silent": True}
    if "x_transaction_log_flush_interval" in wandb.Settings.model_fields:
        settings["x_transaction_log_flush_interval"] = FLUSH_SECONDS
    return settings


def artifact(run_id: str, what: str, kind: str, files: list[Path]) -> Any:
    """A W&B artifact `RUN_ID-WHAT` of type `kind` holding `files` by their names."""
    import wandb

    made = wandb.Artifact(f"{run_id}-{what}", type=kind)
    for path in files:
        made.add_file(str(path), name=path.name)
    return made


def attach(run_dir: Path, stored: dict[str, Any], what: str, files: list[Path]) -> None:
    """Upload `files` (exports, plots) to the run's W&B run, reopened for the purpose."""
    import wandb

    with _unavailable_on_failure():
        run = wandb.init(
            project=stored["project"], entity=stored["entity"] or None, id=stored["run_id"],
            dir=str(run_dir), mode=stored["mode"], resume="allow",
            settings=wandb.Settings(**_settings(), disable_git=True),
        )  # fmt: skip
        kind = "model" if what == "exports" else what
        run.log_artifact(artifact(stored["run_id"], what, kind, files))
        run.finish()
