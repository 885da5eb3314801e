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
followed until they end), and trials that failed are tried again with the same values
(a failure is a state, not a verdict: its cause, a missing dataset say, may be fixed).
trials.csv and best.yaml are rewritten as trials finish.

The sampler is seeded afresh for every trial from the sweep's seed and the trial's
number, so a sweep continued after a stop proposes what an uninterrupted one would
have, and never starts its sequence of proposals over. When the first trials all fail
with the same error, the sweep stops and shows it, rather than failing every trial.
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

from trainkit.config.loading import CommandLine, dotted
from trainkit.console import print_line, warn
from trainkit.errors import UserError, missing_extra
from trainkit.files import FileLock, atomic_write_bytes
from trainkit.sweep.results import (
    BASE_FILE,
    LOGS,
    RETRY_OF,
    STUDY_FILE,
    SWEEP_FILE,
    read_trials,
    retried,
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
from trainkit.training.run_dir import LOCK_FILE, RunLock, mark_ended, session_status

STUDY_LOCK = STUDY_FILE + ".lock"  # the lock Optuna's journal file takes while it writes
POLL_SECONDS = 0.3
FAIL_FAST = 3  # the first trials failing alike, without one completing, stop the sweep


@dataclass
class SweepEnd:
    """How a coordinator's session ended: stopped by a signal, given up on (the first
    trials failed alike: their error), or with every trial done."""

    signal: int | None = None
    gave_up: str | None = None


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
            sampler=self._sampler(spec.seed),
            pruner=(
                optuna.pruners.MedianPruner(spec.startup_trials, spec.warmup_epochs)
                if spec.pruner == "median"
                else optuna.pruners.NopPruner()
            ),
        )
        self.active: dict[int, RunningTrial] = {}
        self.lock = lock  # held while the coordinator runs; released by its caller

    def _sampler(self, seed: int) -> Any:
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
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def _print(self, text: str) -> None:
        if not self.quiet:
            print_line(text)

    def run(self, received: Any) -> SweepEnd:
        """Run trials until `trials` of them are done; or until a stop signal (the
        running trials are stopped, to be resumed next time); or until the first trials
        have all failed alike."""
        self._adopt_running()
        self._retry_failed()
        failures: list[str] = []  # the errors of this session's failed trials
        while True:
            if received() is not None:
                self._stop_all()
                return SweepEnd(signal=received())
            for active in list(self.active.values()):
                failure = self._follow(active)
                if failure is not None:
                    failures.append(failure)
            if self._failing_alike(failures):
                self._stop_all()
                return SweepEnd(gave_up=failures[-1])
            done = len(self._counted())
            grid_done = self.spec.sampler == "grid" and self._grid_exhausted()
            if (done >= self.spec.trials or grid_done) and not self.active:
                return SweepEnd()
            if (
                done + len(self.active) < self.spec.trials
                and len(self.active) < self.spec.parallel
                and not grid_done
            ):
                self._start_trial()
                continue
            time.sleep(POLL_SECONDS)

    def _counted(self) -> list[Any]:
        """The trials that count toward `trials`: finished ones, but not a failed one
        whose values run again in a later trial."""
        again = retried(self.study)
        return [t for t in self.study.trials if t.state.is_finished() and t.number not in again]

    def _retry_failed(self) -> None:
        """Queue the values of every trial that failed in an earlier session (and was not
        queued again already), so this session tries them first."""
        from optuna.trial import TrialState

        again = retried(self.study)
        for trial in self.study.trials:
            if trial.state == TrialState.FAIL and trial.number not in again:
                self.study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
                self._print(f"trial {trial.number} failed before: its values are tried again")

    def _failing_alike(self, failures: list[str]) -> bool:
        """The first FAIL_FAST trials of this session failed with one error, and no trial
        of the sweep ever completed: every trial would fail the same way."""
        from optuna.trial import TrialState

        needed = min(FAIL_FAST, self.spec.trials)
        if len(failures) < needed or len(set(failures[:needed])) != 1:
            return False
        return not any(t.state == TrialState.COMPLETE for t in self.study.trials)

    def _grid_exhausted(self) -> bool:
        total = 1
        for parameter in self.spec.space.values():
            total *= len(parameter.choice or [])
        return len(self._counted()) + len(self.active) >= total

    def _start_trial(self) -> None:
        if self.spec.sampler != "grid":  # the grid never repeats a point by itself
            # Seeded by the trial's number: the same proposal whether or not the sweep
            # was stopped before it, and never the sequence of a stopped sweep again.
            number = len(self.study.trials)
            self.study.sampler = self._sampler(self.spec.seed * 1_000_003 + number)
        trial = self.study.ask(self.space)
        self.active[trial.number] = RunningTrial(
            trial.number, trial._trial_id, trial_dir(self.dir, trial.number), None
        )
        self._train(self.active[trial.number], trial.params)
        write_results(self.study, self.spec, self.dir)  # trainkit runs SWEEP_DIR shows it

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

    def _follow(self, active: RunningTrial) -> str | None:
        """Report new epochs, prune when Optuna says so, and record a trial that ended
        (its error, when it failed). The metrics file is read only when it changed, or
        once more when the trial ends."""
        import optuna

        if active.process is not None:
            ended = active.process.poll() is not None
        else:
            ended = not _locked(active.run_dir)
        stamp = _stamp(active.run_dir / METRICS_FILE)
        if stamp == active.seen and not ended:
            return None
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
        if not ended:
            return None
        del self.active[active.number]
        return self._record_end(active, records)

    def _record_end(self, active: RunningTrial, records: list[dict[str, Any]]) -> str | None:
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
            why = last_error(log) or f"it ended {status}"
            warn(f"trial {active.number} failed: {why} (its output: {log})")
            write_results(self.study, self.spec, self.dir)
            return why
        write_results(self.study, self.spec, self.dir)
        return None

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
    return FileLock.is_held(run_dir / LOCK_FILE)


def last_error(log: Path) -> str:
    """The error a trial's process ended with: its whole paragraph, to the end of the
    log (a fix hint comes last), on one line."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return ""
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    if not starts:
        return ""
    paragraph = " ".join(line.strip() for line in lines[starts[-1] :])
    return paragraph.removeprefix("error: ")


def start(
    path: Path, directory: Path | None, command_line: CommandLine | None = None, *, quiet: bool
) -> tuple[Sweep, Path]:
    """Check a sweep file (its space validated with the command line's overrides, which
    every trial gets) and open (or create) its directory and study."""
    spec, base = read_spec(path, command_line)
    source = str(path.parent / spec.base)
    if command_line and command_line.origins():
        source += " with " + " ".join(command_line.origins().values())
    check_space(spec, base, source)
    target = directory or Path("checkpoints") / spec.name
    return _open(spec, base, target, quiet=quiet, command_line=command_line)


def reopen(directory: Path, *, quiet: bool) -> Sweep:
    """The sweep in `directory`, as it was started (`trainkit resume SWEEP_DIR`)."""
    spec, _ = read_spec(directory / SWEEP_FILE)
    sweep, _ = _open(spec, None, directory, quiet=quiet)
    return sweep


def _open(
    spec: SweepSpec,
    base: dict[str, Any] | None,
    target: Path,
    *,
    quiet: bool,
    command_line: CommandLine | None = None,
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
        _check_same_base(target, base)
    target.mkdir(parents=True, exist_ok=True)
    lock = RunLock(target).acquire()  # one coordinator per sweep, before anything is written
    try:
        if base is not None:  # the file's settings (trials, parallel, ...) hold from now on
            spec_data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
            spec_data["base"] = BASE_FILE  # the resolved base, saved beside it
            atomic_write_bytes(stored, yaml.safe_dump(spec_data, sort_keys=False).encode())
            options = " ".join((command_line or CommandLine()).origins().values())
            header = f"# the base every trial trains from{', with ' + options if options else ''}\n"
            base_text = header + yaml.safe_dump(base, sort_keys=False)
            atomic_write_bytes(target / BASE_FILE, base_text.encode())
        # Only a coordinator writes the study, and no other is alive: a journal lock left
        # by one killed mid-write is stale, and Optuna would wait for it.
        (target / STUDY_LOCK).unlink(missing_ok=True)
        sweep = Sweep(spec, target, lock, quiet=quiet)
    except BaseException:
        lock.release()
        raise
    return sweep, target


def _check_same_base(target: Path, base: dict[str, Any]) -> None:
    """Trials that finished trained from the stored base: a sweep continued from another
    one would compare unlike runs. Failed trials did not, so a base that changed
    (--set data.root=DIR, once the data is found) may replace theirs."""
    stored = target / BASE_FILE
    if not stored.is_file():
        return
    before = dotted(yaml.safe_load(stored.read_text()) or {})
    differ = sorted(
        k for k in set(before) | set(dotted(base)) if before.get(k) != dotted(base).get(k)
    )
    if not differ:
        return
    finished = [r for r in read_trials(target) if r["state"] in ("complete", "pruned")]
    if finished:
        raise UserError(
            f"{target} holds {len(finished)} finished trial(s) of another base config (it "
            f"differs in {', '.join(differ)}); continuing would compare unlike runs. Run it "
            "with the options it began with, or pass --dir for a new sweep."
        )
    warn(
        f"{target}: the base config changed ({', '.join(differ)}); the trials from now on "
        "train from the new one."
    )
