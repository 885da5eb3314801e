"""The coordinator of a sweep: trials as ordinary runs, followed through their files.

Each trial is a plain `trainkit train` process on the base config with the trial's values `--set`,
in a normal run directory under the sweep's: evaluable, plottable and resumable like
any run. `parallel` trials run at a time; the coordinator reads each trial's
metrics.jsonl as it grows, reports every epoch's metric to Optuna, and prunes a hopeless
trial with SIGTERM (it writes last.pt and stops, like any stopped run). Nothing in the
training loop knows about Optuna.

The study lives in the sweep directory as Optuna's journal file, so a sweep that was
stopped or killed continues where it was: finished trials stay finished, trials that
were running resume exactly (or, if their process outlived the coordinator, are
followed until they end). trials.csv and best.yaml are rewritten as trials finish.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainkit.console import print_line, warn
from trainkit.errors import UserError, missing_extra, shown
from trainkit.files import atomic_write_bytes
from trainkit.sweep.results import (
    BASE_FILE,
    LOGS,
    STUDY_FILE,
    SWEEP_FILE,
    trial_dir,
    write_results,
)
from trainkit.sweep.space import (
    SweepSpec,
    as_optuna_choice,
    check_space,
    from_optuna,
    read_spec,
    set_option,
)
from trainkit.training.metrics_log import METRICS_FILE, read_records
from trainkit.training.run_dir import RunLock, mark_ended, session_status

STUDY_LOCK = STUDY_FILE + ".lock"  # the lock Optuna's journal file takes while it writes
POLL_SECONDS = 0.3


@dataclass
class RunningTrial:
    """A trial that is training: our child process, or one adopted from an earlier run."""

    number: int
    trial_id: int
    run_dir: Path
    process: subprocess.Popen[bytes] | None  # None: adopted, followed through its files
    reported: set[int] = field(default_factory=set)
    pruning: bool = False
    device: int | None = None  # the GPU it was given, if any
    seen: tuple[int, int] | None = None  # metrics.jsonl's (size, mtime) when last read


class Sweep:
    """The coordinator of one sweep directory."""

    def __init__(self, spec: SweepSpec, directory: Path, lock: RunLock, *, quiet: bool) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec, self.dir, self.quiet = spec, directory, quiet
        self.space = {key: p.distribution() for key, p in spec.space.items()}
        journal = (directory / STUDY_FILE).absolute()  # Optuna's lock links to it: no dangling
        storage = JournalStorage(JournalFileBackend(str(journal)))
        self.study = optuna.create_study(
            storage=storage,
            study_name=spec.name,
            direction=spec.direction,
            load_if_exists=True,
            sampler=self._sampler(),
            pruner=(
                optuna.pruners.MedianPruner(spec.startup_trials, spec.warmup_epochs)
                if spec.pruner == "median"
                else optuna.pruners.NopPruner()
            ),
        )
        self.active: dict[int, RunningTrial] = {}
        self.lock = lock  # held while the coordinator runs; released by its caller

    def _sampler(self) -> Any:
        import optuna

        spec = self.spec
        if spec.sampler == "grid":

            class Grid(optuna.samplers.GridSampler):
                """Optuna's grid, minus its habit of stopping the study once every point
                is taken: Optuna allows that only inside study.optimize, and the
                coordinator counts the trials itself."""

                def after_trial(self, *args: Any) -> None:
                    return None

            grid = {k: [as_optuna_choice(c) for c in p.choice or []] for k, p in spec.space.items()}
            return Grid(grid, seed=spec.seed)
        if spec.sampler == "random":
            return optuna.samplers.RandomSampler(seed=spec.seed)
        return optuna.samplers.TPESampler(seed=spec.seed)

    def _print(self, text: str) -> None:
        if not self.quiet:
            print_line(text)

    def run(self, received: Any) -> int | None:
        """Run trials until the study has `trials` finished ones; the stop signal if one
        came (the running trials are stopped, to be resumed next time)."""
        self._adopt_running()
        while True:
            if received() is not None:
                self._stop_all()
                return received()
            for active in list(self.active.values()):
                self._follow(active)
            finished = sum(t.state.is_finished() for t in self.study.trials)
            if finished >= self.spec.trials and not self.active:
                return None
            grid_done = self.spec.sampler == "grid" and self._grid_exhausted()
            if (
                finished + len(self.active) < self.spec.trials
                and len(self.active) < self.spec.parallel
                and not grid_done
            ):
                self._start_trial()
                continue
            if grid_done and not self.active:
                return None
            time.sleep(POLL_SECONDS)

    def _grid_exhausted(self) -> bool:
        total = 1
        for parameter in self.spec.space.values():
            total *= len(parameter.choice or [])
        return len(self.study.trials) >= total

    def _start_trial(self) -> None:
        trial = self.study.ask(self.space)
        self.active[trial.number] = RunningTrial(
            trial.number, trial._trial_id, trial_dir(self.dir, trial.number), None
        )
        self._train(self.active[trial.number], trial.params)
        write_results(
            self.study, self.spec, self.dir
        )  # trainkit runs SWEEP_DIR shows it as running

    def _train(self, active: RunningTrial, params: dict[str, Any]) -> None:
        """Start (or start again) a trial's run from the base config and its values."""
        values = {k: from_optuna(self.spec.space[k], v) for k, v in params.items()}
        sets = [set_option(key, value) for key, value in values.items()]
        self._print(f"trial {active.number} started: " + ", ".join(sets))
        command = ["train", str(self.dir / BASE_FILE), "--run-dir", str(active.run_dir), "-q"]
        command += [arg for item in sets for arg in ("--set", item)]
        active.process = self._launch(command, active)

    def _launch(self, command: list[str], active: RunningTrial) -> subprocess.Popen[bytes]:
        (self.dir / LOGS).mkdir(exist_ok=True)
        log = (self.dir / LOGS / f"trial-{active.number:04d}.log").open("ab")
        env = dict(os.environ)
        gpus = _cuda_devices()
        if gpus:  # one device per process: one no other running trial holds
            held = [a.device for a in self.active.values() if a is not active]
            active.device = free_device(gpus, held)
            env["CUDA_VISIBLE_DEVICES"] = str(active.device)
        else:  # share the cores
            env.setdefault(
                "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.spec.parallel))
            )
        argv = [sys.executable, "-m", "trainkit", *command]
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def _adopt_running(self) -> None:
        """Trials left running by an earlier coordinator: follow, resume or restart them."""
        from optuna.trial import TrialState

        for frozen in self.study.trials:
            if frozen.state != TrialState.RUNNING:
                continue
            run_dir = trial_dir(self.dir, frozen.number)
            active = RunningTrial(
                frozen.number, frozen._trial_id, run_dir, None, set(frozen.intermediate_values)
            )
            if run_dir.is_dir() and _locked(run_dir):
                self._print(
                    f"trial {frozen.number}: still training in another process; following it"
                )
            elif run_dir.is_dir() and session_status(run_dir) in ("completed", "early_stopped"):
                pass  # it ended after the coordinator did: _follow records it
            elif run_dir.is_dir() and any(run_dir.glob("*.pt")):
                self._print(f"trial {frozen.number}: resuming where it stopped")
                active.process = self._launch(["resume", str(run_dir), "-q"], active)
            else:  # stopped before it wrote anything: start it again
                shutil.rmtree(run_dir, ignore_errors=True)
                self._train(active, frozen.params)
            self.active[frozen.number] = active

    def _follow(self, active: RunningTrial) -> None:
        """Report new epochs, prune when Optuna says so, and record a trial that ended.
        The metrics file is read only when it changed, or once more when the trial ends."""
        import optuna

        if active.process is not None:
            ended = active.process.poll() is not None
        else:
            ended = not _locked(active.run_dir)
        stamp = _stamp(active.run_dir / METRICS_FILE)
        if stamp == active.seen and not ended:
            return
        active.seen = stamp
        trial = optuna.trial.Trial(self.study, active.trial_id)
        records = read_records(active.run_dir)
        metric = self.spec.metric
        for record in records:
            epoch = int(record["epoch"])
            if active.pruning:
                break  # what a pruned trial logs while it stops is not reported
            if record["scope"] == "epoch" and metric in record and epoch not in active.reported:
                trial.report(float(record[metric]), epoch)
                active.reported.add(epoch)
                if trial.should_prune():
                    active.pruning = True
                    value = f"{metric} {record[metric]:.4f}"
                    self._print(f"trial {active.number} pruned at epoch {epoch} ({value})")
                    if active.process is not None:
                        active.process.send_signal(signal.SIGTERM)
        if ended:
            del self.active[active.number]
            self._record_end(active, records)

    def _record_end(self, active: RunningTrial, records: list[dict[str, Any]]) -> None:
        from optuna.trial import TrialState

        metric = self.spec.metric
        values = [float(r[metric]) for r in records if metric in r]
        status = session_status(active.run_dir) or "never started"
        if active.pruning:
            self.study.tell(active.number, state=TrialState.PRUNED)
            mark_ended(active.run_dir, "pruned")
        elif status in ("completed", "early_stopped") and values:
            self.study.tell(active.number, values[-1])
            self._print(f"trial {active.number} completed: {metric} {values[-1]:.4f}")
        else:
            self.study.tell(active.number, state=TrialState.FAIL)
            log = self.dir / LOGS / f"trial-{active.number:04d}.log"
            why = _last_error(log)
            warn(f"trial {active.number} failed ({status}){': ' + why if why else ''}; see {log}")
        write_results(self.study, self.spec, self.dir)

    def _stop_all(self) -> None:
        """Stop our trials gracefully (each writes last.pt); they stay RUNNING in the study."""
        for active in self.active.values():
            if active.process is not None and active.process.poll() is None:
                active.process.send_signal(signal.SIGTERM)
        for active in self.active.values():
            if active.process is not None:
                active.process.wait()


def free_device(gpus: list[int], held: list[int | None]) -> int:
    """The least-used GPU: a free one while there is one."""
    return min(gpus, key=lambda gpu: (held.count(gpu), gpu))


def _cuda_devices() -> list[int]:
    import importlib.util

    if importlib.util.find_spec("torch") is None or "CUDA_VISIBLE_DEVICES" in os.environ:
        return []
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _stamp(path: Path) -> tuple[int, int] | None:
    """A file's size and modification time, or None while it does not exist."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _locked(run_dir: Path) -> bool:
    """Whether a live process holds the run (it is training)."""
    try:
        RunLock(run_dir).acquire().release()
    except UserError:
        return True
    except OSError:
        return False
    return False


def _last_error(log: Path) -> str:
    try:
        lines = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    except OSError:
        return ""
    return shown(lines[-1].removeprefix("error: ")) if lines else ""


def start(path: Path, directory: Path | None, *, quiet: bool) -> tuple[Sweep, Path]:
    """Check a sweep file and open (or create) its directory and study."""
    spec, base = read_spec(path)
    check_space(spec, base, str(path.parent / spec.base))
    target = directory or Path("checkpoints") / spec.name
    return _open(spec, base, target, quiet=quiet)


def reopen(directory: Path, *, quiet: bool) -> Sweep:
    """The sweep in `directory`, as it was started (`trainkit resume SWEEP_DIR`)."""
    spec, _ = read_spec(directory / SWEEP_FILE)
    sweep, _ = _open(spec, None, directory, quiet=quiet)
    return sweep


def _open(
    spec: SweepSpec, base: dict[str, Any] | None, target: Path, *, quiet: bool
) -> tuple[Sweep, Path]:
    """`base` is given when the sweep is started from its file, None when reopened."""
    import importlib.util

    from trainkit.files import check_writable

    if importlib.util.find_spec("optuna") is None:
        raise missing_extra("sweep", ["Optuna"], "sweep")
    check_writable(target, "--dir", folder=True)
    stored = target / SWEEP_FILE
    if stored.is_file() and base is not None:
        previous = SweepSpec.model_validate(yaml.safe_load(stored.read_text()))
        if previous.space != spec.space:
            raise UserError(
                f"{target} holds a sweep with another search space; continuing it with this "
                "file would mix two searches. Pass --dir for a new sweep directory."
            )
    target.mkdir(parents=True, exist_ok=True)
    lock = RunLock(target).acquire()  # one coordinator per sweep, before anything is written
    try:
        if base is not None:  # the file's settings (trials, parallel, ...) hold from now on
            spec_data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
            spec_data["base"] = BASE_FILE  # the resolved base, saved beside it
            atomic_write_bytes(stored, yaml.safe_dump(spec_data, sort_keys=False).encode())
            if not (target / BASE_FILE).is_file():  # every trial tunes the base it began with
                base_text = yaml.safe_dump(base, sort_keys=False).encode()
                atomic_write_bytes(target / BASE_FILE, base_text)
        # Only a coordinator writes the study, and no other is alive: a journal lock left
        # by one killed mid-write is stale, and Optuna would wait for it.
        (target / STUDY_LOCK).unlink(missing_ok=True)
        sweep = Sweep(spec, target, lock, quiet=quiet)
    except BaseException:
        lock.release()
        raise
    return sweep, target
