"""Training a config into a run directory: `trainkit train`, and the end of every resume.

`train` checks where output goes, seeds the process, builds the components, makes the
run directory (locked against a second writer) and hands over to `run_to_end`, which
opens the run's outputs (checkpoints, the metrics log, the run record), runs the loop,
scores the test split and records how the run ended. A new run that could not start
writing, or that was stopped before its first checkpoint, leaves no run directory.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainkit.config.plugins import plugin_origins
from trainkit.config.schema import Config, to_dict, to_yaml
from trainkit.console import (
    Reporter,
    is_rank_zero,
    make_reporter,
    print_line,
    quiet_output,
    warn,
)
from trainkit.errors import RunFailed, write_failed
from trainkit.files import check_writable
from trainkit.models.factory import count_parameters
from trainkit.training.build import Experiment, build, loop_settings, seed_process
from trainkit.training.checkpoint import LAST, Checkpointer
from trainkit.training.device import resolve_device
from trainkit.training.distributed import (
    World,
    adopt_launcher_environment,
    join,
    lost_peers_fail_the_run,
)
from trainkit.training.loop import Outcome, TrainState, evaluate, fit
from trainkit.training.metrics_log import MetricsLog
from trainkit.training.run_dir import (
    RunLock,
    Status,
    check_new_run_dir,
    clear_run_dir,
    create_run_dir,
    discard_run_dir,
    mark_ended,
    mark_started,
    write_config,
)
from trainkit.training.signals import stop_on_signals
from trainkit.training.warm_start import load_initial_weights
from trainkit.training.watchers import RunWatcher, Watch


@dataclass
class RunResult:
    status: str  # completed, early_stopped or interrupted
    run_dir: Path | None  # None: stopped before a run directory was made
    epoch: int
    step: int
    metrics: dict[str, float]
    signal: int | None = None


def join_world(config: Config) -> World:
    """This process's place in a torchrun launch (rank 0 of 1 when run on its own)."""
    trainer = config.trainer
    return join(resolve_device(trainer.device).type, trainer.distributed_timeout_minutes)


def train(
    config: Config,
    run_dir: Path | None = None,
    *,
    quiet: bool = False,
    watch: Watch | None = None,
    keep: Sequence[str] | None = None,
) -> RunResult:
    """Train `config` from scratch into a new run directory.

    The output folder is checked before any work. Stop signals are heeded from the
    start: one that comes while data and model are being built ends the command before
    a run directory exists. `keep`: `run_dir` holds a run that never wrote a checkpoint,
    which starts over there, keeping the entries named (see `training.relaunch`).
    """
    adopt_launcher_environment()  # an srun task knows its rank before anything else
    where = run_dir or Path(config.checkpoint.runs_dir)
    check_writable(where, "--run-dir" if run_dir else "checkpoint.runs_dir", folder=True)
    if run_dir is not None and keep is None:
        check_new_run_dir(run_dir)
    config.model.prepare()  # weights files: found (or fetched) before any data is read
    config.data.prepare()  # and the data's files and readers
    watchers = watch(config) if watch and is_rank_zero() else ()  # e.g. a tracker's server
    with lost_peers_fail_the_run():
        return _train(config, run_dir, quiet=quiet, watchers=watchers, keep=keep)


def _train(
    config: Config,
    run_dir: Path | None,
    *,
    quiet: bool,
    watchers: Sequence[RunWatcher],
    keep: Sequence[str] | None,
) -> RunResult:
    world = join_world(config)
    lock = None
    try:
        with quiet_output(quiet), stop_on_signals() as received:
            seed_process(config)
            experiment = build(config, world)
            notes = []
            if config.model.init_from:
                report = load_initial_weights(experiment.parts.model, Path(config.model.init_from))
                notes = report.lines()
            if world.all_reduce_any(received() is not None):
                return stopped_before_start(received(), quiet=quiet)
            directory, made_here = None, True
            if world.is_main:
                made_here = run_dir is None or not run_dir.exists()
                if run_dir is not None and keep is not None:
                    clear_run_dir(run_dir, keep)
                root = Path(config.checkpoint.runs_dir)
                directory = create_run_dir(root, config.name, run_dir, keep or ())
                lock = _start_run_dir(directory, config, made_here=made_here)
            directory = world.broadcast_object(directory)  # rank 0 names the run for everyone
            return run_to_end(
                experiment,
                directory,
                TrainState(),
                quiet=quiet,
                resumed=False,
                notes=notes,
                received=received,
                made_here=made_here,
                watchers=watchers,
            )
    finally:
        if lock is not None:
            lock.release()
        world.close()


def _start_run_dir(directory: Path, config: Config, *, made_here: bool) -> RunLock:
    """Lock a new run directory and write its config; on a full disk, leave none."""
    lock = None
    try:
        lock = RunLock(directory).acquire()
        write_config(directory, to_yaml(config))
    except OSError as exc:
        if lock is not None:
            lock.release()
        discard_run_dir(directory, made_here=made_here)
        raise write_failed("the new run", directory, exc, resumable=False) from None
    return lock


def _votes(world: World, stop: bool, due: bool) -> tuple[bool, bool]:
    """The loop's one exchange a step: any rank asked to stop, any rank's clock says a
    checkpoint is due."""
    stop, due = world.vote(stop, due)
    return stop, due


def stopped_before_start(sig: int | None, *, quiet: bool, run_dir: Path | None = None) -> RunResult:
    """A stop signal that came while the run was being set up: nothing was written."""
    stop = sig or signal.SIGTERM
    if not quiet and is_rank_zero():
        print_line(
            f"stopped by {signal.Signals(stop).name} before training started; nothing was written."
        )
    return RunResult("interrupted", run_dir, 0, 0, {}, stop)


def run_to_end(
    experiment: Experiment,
    run_dir: Path,
    state: TrainState,
    *,
    quiet: bool,
    resumed: bool,
    notes: list[str] | None = None,
    received: Callable[[], int | None] = lambda: None,
    made_here: bool = True,
    watchers: Sequence[RunWatcher] = (),
) -> RunResult:
    """Train `experiment` in `run_dir` from `state` until it ends, and record how.

    `received` tells which stop signal this process has had (see
    `signals.stop_on_signals`); the ranks vote on it every step.
    """
    config, parts = experiment.config, experiment.parts
    world = parts.world
    # Only rank 0 writes files and shows progress; the other ranks stay quiet.
    reporter = make_reporter(quiet or not world.is_main)
    with _run_outputs(
        experiment, run_dir, state, resumed=resumed, made_here=made_here, watchers=watchers
    ) as outputs:
        try:
            _announce(reporter, experiment, run_dir, notes or [], resumed=resumed)
            outcome = fit(
                parts,
                loop_settings(config),
                state,
                outputs.checkpointer,
                outputs.metrics_log,
                reporter,
                lambda due: _votes(world, received() is not None, due),
            )
            if outcome.status != "interrupted":
                _score_test_split(experiment, outcome, outputs.metrics_log)
            outputs.ended = outcome.status
            result = RunResult(
                outcome.status, run_dir, outcome.state.epoch, outcome.state.step, outcome.metrics
            )
            if outcome.status == "interrupted":
                result.signal = received() or signal.SIGTERM  # a rank told by another's vote
                reporter.info(
                    f"stopped by {signal.Signals(result.signal).name} at epoch "
                    f"{outcome.state.epoch + 1}, step {outcome.state.step}; wrote "
                    f"{run_dir / LAST}. Continue with: trainkit resume {run_dir}"
                    + (f" --nproc {world.size}" if world.distributed else "")
                )
            elif outcome.status == "early_stopped":
                reporter.info(f"early stop: {config.checkpoint.monitor} stopped improving")
        finally:
            reporter.close()
    return result


@dataclass
class _Outputs:
    """What rank 0 writes besides the weights' training: checkpoints and the metrics
    log (None on other ranks), and how the session ended, for run.json."""

    checkpointer: Checkpointer | None = None
    metrics_log: MetricsLog | None = None
    ended: Status = "failed"


@contextlib.contextmanager
def _run_outputs(
    experiment: Experiment,
    run_dir: Path,
    state: TrainState,
    *,
    resumed: bool,
    made_here: bool,
    watchers: Sequence[RunWatcher],
) -> Iterator[_Outputs]:
    """Open the run's outputs on rank 0 and record the session as started; on the way
    out, close them and record how it ended. A new run that ends before its first
    checkpoint (a stop, or a full disk at its first write) leaves no run directory.
    The watchers hear of the start, of every checkpoint and of the end."""
    config = experiment.config
    if not experiment.parts.world.is_main:
        yield _Outputs()
        return
    checkpointer = Checkpointer(
        run_dir,
        to_dict(config),
        config.checkpoint.every_epochs,
        config.checkpoint.keep_last,
        inputs=experiment.spec.as_dict(),
        plugins=plugin_origins(config.plugins),
        on_saved=lambda: [watcher.saved(run_dir) for watcher in watchers],
    )
    try:
        metrics_log = MetricsLog(
            run_dir,
            tensorboard=config.logging.tensorboard,
            resume_step=state.step if resumed else None,
            resumable=checkpointer.has_checkpoint,
        )
    except RunFailed:
        if not resumed:
            discard_run_dir(run_dir, made_here=made_here)  # nothing of it is worth keeping
        raise
    mark_started(run_dir)
    for watcher in watchers:
        watcher.started(run_dir, resumed=resumed)
    outputs = _Outputs(checkpointer, metrics_log)
    detail = None
    closing: RunFailed | None = None
    try:
        yield outputs
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, checkpoints intact
        outputs.ended = "interrupted"
        raise
    except BaseException as exc:
        detail = f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        try:
            metrics_log.close()
        except RunFailed as failed:
            closing = failed  # reported below, unless another error is on its way
        discarded = (
            outputs.ended == "interrupted" and not resumed and not checkpointer.has_checkpoint()
        )
        for watcher in watchers:
            watcher.ended(run_dir, outputs.ended, discarded=discarded)
        if discarded:
            discard_run_dir(run_dir, made_here=made_here)  # nothing to resume: no run at all
        else:
            mark_ended(run_dir, outputs.ended, detail)
    if closing is not None:
        raise closing


def _announce(
    reporter: Reporter, experiment: Experiment, run_dir: Path, notes: list[str], *, resumed: bool
) -> None:
    """The first lines of a run: what trains where, on which data, and any notes."""
    config, parts, world = experiment.config, experiment.parts, experiment.parts.world
    batch = f"{parts.train.global_batch_size} samples"
    if world.distributed:
        batch += f" ({config.data.batch_size} per process x {world.size} processes)"
    trainable, total = count_parameters(parts.model)
    counted = f"{total:,} parameters" + (f", {trainable:,} trainable" if trainable != total else "")
    reporter.info(
        f"{'resuming' if resumed else 'training'} {config.name} in {run_dir}: model "
        f"{config.model.label()} ({counted}) on {parts.device} ({parts.precision.name})"
    )
    reporter.info(
        f"data: {config.data.name}, {experiment.data.describe()}; "
        f"{len(parts.train)} batches of {batch} per epoch"
    )
    for note in notes:
        reporter.info(note)
    if not resumed and world.is_main:
        _check_average_span(config, len(parts.train))


def _check_average_span(config: Config, batches: int) -> None:
    """A weight average over fewer steps than a few of its half-lives still holds much of
    the first weights: say so before the user wonders why the scores lag."""
    ema = config.trainer.ema
    if ema is None:
        return
    half_life = math.log(0.5) / math.log(ema.decay)
    steps = math.ceil(batches / config.trainer.accumulate_steps) * config.trainer.epochs
    if steps < 3 * half_life:
        warn(
            f"trainer.ema.decay={ema.decay} forgets with a half-life of {half_life:.0f} steps, "
            f"and this run takes {steps}: the average it evaluates and saves still carries "
            f"{0.5 ** (steps / half_life):.0%} of the first weights at the end. Lower the "
            f"decay to {0.5 ** (3 / steps):.3g} or less (a half-life of a third of the run) "
            "or train longer."
        )


def _score_test_split(
    experiment: Experiment, outcome: Outcome, metrics_log: MetricsLog | None
) -> None:
    """A finished run's last figures: the test split (trainer.test_at_end), and the
    settings with the final scores for TensorBoard's HParams tab."""
    config = experiment.config
    if config.trainer.test_at_end:
        scores = evaluate(experiment.parts, experiment.split_batches("test"))
        test = {f"test/{k}": v for k, v in scores.items() if k != "samples"}
        if metrics_log:
            metrics_log.log(outcome.state.step, outcome.state.epoch, test, "test")
        outcome.metrics.update(test)
    final = {k: v for k, v in outcome.metrics.items() if k.startswith(("train/", "val/", "test/"))}
    if metrics_log:
        metrics_log.hparams(to_dict(config), final)
