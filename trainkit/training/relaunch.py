"""The same command, run again, continues its run.

A job scheduler recovers from a crash, a requeue or a preemption by running the same
command again: torchrun's agent with --max-restarts, a Slurm requeue, a Kubernetes Job
restarting its pod. So `trainkit train CONFIG --run-dir DIR` looks at DIR first: empty
or missing, a new run starts there; an unfinished run of the same config continues,
exactly as `trainkit resume DIR` would; a finished one is reported and left alone; a
run of another config is refused, naming the keys that differ. A run killed before its
first checkpoint has nothing to continue: it starts over in its directory (keeping the
tracker run it had opened).

Without --run-dir, a launcher's job identity names the run directory, so a restarted
command finds it: `<runs_dir>/<name>/slurm-<SLURM_JOB_ID>` (the same across requeues),
else `<runs_dir>/<name>/torchrun-<TORCHELASTIC_RUN_ID>` (torchrun's --rdzv-id, the same
across its restarts). Without either, every command is a new run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml

from trainkit.config.loading import dotted
from trainkit.config.schema import Config, to_yaml
from trainkit.errors import UserError
from trainkit.training import checkpoint as ckpt
from trainkit.training.distributed import adopt_launcher_environment
from trainkit.training.metrics_log import read_records
from trainkit.training.run import RunResult
from trainkit.training.run_dir import CONFIG_FILE, session_status
from trainkit.training.watchers import Watch

JOB_IDS = (("SLURM_JOB_ID", "slurm"), ("TORCHELASTIC_RUN_ID", "torchrun"))
# Set by `trainkit train --nproc N` for its workers: its agent's id is new each command,
# and a run it starts is named like any other.
OWN_LAUNCH = "TRAINKIT_OWN_LAUNCH"
FINISHED = ("completed", "early_stopped", "pruned")
KEPT_ON_START_OVER = ("tracking.json", "wandb")  # the tracker run, continued
Found = Literal["new", "unfinished", "finished", "unstarted"]


def job_run_dir(config: Config) -> Path | None:
    """Where the run of a launcher's job goes, or None outside such a job."""
    if os.environ.get(OWN_LAUNCH):
        return None
    for variable, launcher in JOB_IDS:
        job = os.environ.get(variable, "").strip()
        if job and job != "none":  # torchrun's id when --rdzv-id is not given
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", job)
            return Path(config.checkpoint.runs_dir) / config.name / f"{launcher}-{safe}"
    return None


def what_is_in(run_dir: Path, config: Config) -> Found:
    """What `run_dir` holds for a `train` of `config` (a UserError when it holds
    something that must not be trained into)."""
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(
            f"--run-dir {run_dir} is not empty and holds no trainkit run (no {CONFIG_FILE}). "
            "Pick a new or empty folder."
        )
    differences = config_differences(run_dir, config)
    if differences:
        shown = "; ".join(differences[:8]) + ("; ..." if len(differences) > 8 else "")
        raise UserError(
            f"{run_dir} holds a run of another config, so this command does not continue it: "
            f"{shown}. Run the command it was started with, continue it with `trainkit "
            f"resume {run_dir}` (--set changes a setting), or pick a new --run-dir."
        )
    if session_status(run_dir) in FINISHED:
        return "finished"
    return "unfinished" if ckpt.candidates(run_dir) else "unstarted"


def config_differences(run_dir: Path, config: Config) -> list[str]:
    """`KEY (THERE there, HERE here)` for each setting in which the run's config.yaml and
    `config` differ, as dotted keys."""
    try:
        stored = dotted(yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{run_dir / CONFIG_FILE} cannot be read ({exc}).") from None
    wanted = dotted(yaml.safe_load(to_yaml(config)))
    return [
        f"{key} ({stored.get(key)!r} there, {wanted.get(key)!r} here)"
        for key in sorted(stored.keys() | wanted.keys())
        if stored.get(key) != wanted.get(key)
    ]


def train_or_continue(
    config: Config, run_dir: Path | None, *, quiet: bool = False, watch: Watch | None = None
) -> RunResult:
    """`trainkit train`: a new run, or the run this command started before, continued."""
    from trainkit.training.resume import resume
    from trainkit.training.run import train

    adopt_launcher_environment()  # an srun task knows its rank before anything else
    run_dir = run_dir or job_run_dir(config)
    found = "new" if run_dir is None else what_is_in(run_dir, config)
    if found == "unfinished":
        return resume(run_dir, quiet=quiet, watch=watch, relaunched=True)
    if found == "finished":
        return _finished(run_dir)
    return train(config, run_dir, quiet=quiet, watch=watch,
                 keep=KEPT_ON_START_OVER if found == "unstarted" else None)  # fmt: skip


def _finished(run_dir: Path) -> RunResult:
    """What a finished run ended on, from its newest checkpoint and metrics.jsonl."""
    state = ckpt.Checkpoint.newest_in(run_dir).state
    scores = {
        key: value
        for record in read_records(run_dir)
        for key, value in record.items()
        if key.startswith(("val/", "test/"))
    }
    return RunResult("already_finished", run_dir, state["epoch"], state["step"], scores)
