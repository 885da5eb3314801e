"""Continuing a run that stopped: `trainkit resume`.

A run continues from its newest readable checkpoint (a damaged newer one is skipped
with a warning). With the number of processes it was trained with, it continues bit for
bit, mid-epoch if that is where it stopped: weights, optimizer and schedule, the loop
position, every RNG and the augmentation generator come back as they were. With another
number of processes it continues from its last completed epoch, with the schedule
re-planned for the new number of steps per epoch. Extending a run (`--set
trainer.epochs=N`) re-plans the schedule over the new length.

`resume` reads as its four steps: find the checkpoint, build the run it describes,
restore its state, run it to the end.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from trainkit.config.loading import CommandLine
from trainkit.config.schema import Config, to_yaml
from trainkit.console import is_rank_zero, quiet_output, warn
from trainkit.errors import UserError
from trainkit.files import check_writable
from trainkit.training import checkpoint as ckpt
from trainkit.training.build import Experiment, build, seed_process
from trainkit.training.checkpoint import Checkpoint
from trainkit.training.distributed import (
    World,
    adopt_launcher_environment,
    lost_peers_fail_the_run,
)
from trainkit.training.ema import EMA_KEY
from trainkit.training.loop import Parts, TrainState
from trainkit.training.metrics_log import METRICS_FILE, read_records
from trainkit.training.run import RunResult, join_world, run_to_end, stopped_before_start
from trainkit.training.run_dir import CONFIG_FILE, RunLock, write_config
from trainkit.training.signals import stop_on_signals
from trainkit.training.watchers import Watch


def resume(
    path: Path,
    command_line: CommandLine | None = None,
    *,
    quiet: bool = False,
    watch: Watch | None = None,
    relaunched: bool = False,
) -> RunResult:
    """Continue the run in `path` (a run directory or a checkpoint file) where it stopped.
    `relaunched`: the command that started it was run again (see `training.relaunch`).

    With the world size it was trained with, a run continues exactly. With another, it
    continues from its last completed epoch, with the schedule re-planned for the new
    number of steps per epoch (the step count in the logs goes on from where it was).
    The run is locked against a second writer before anything in it changes.
    """
    adopt_launcher_environment()  # an srun task knows its rank before it takes the lock
    if not path.exists():
        raise UserError(
            f"nothing to resume at {path}: no such file or folder. Pass a run directory "
            "(checkpoints/<name>/<run-id>) or a checkpoint file."
        )
    run_dir = path if path.is_dir() else path.parent
    check_writable(run_dir, "resume", folder=True)
    with lost_peers_fail_the_run():
        return _resume(path, run_dir, command_line, quiet, watch, relaunched)


def _resume(
    path: Path,
    run_dir: Path,
    command_line: CommandLine | None,
    quiet: bool,
    watch: Watch | None,
    relaunched: bool,
) -> RunResult:
    # Before anything is read: the newest checkpoint is the one no one else is writing.
    lock = RunLock(run_dir).acquire() if is_rank_zero() else None
    world = None
    try:
        with quiet_output(quiet):
            found = _find(path)
            if relaunched:
                _say_what_is_redone(found, run_dir)
            config = found.config(command_line)
            watchers = watch(config) if watch and is_rank_zero() else ()
            world = join_world(config)
            with stop_on_signals() as received:
                found = _for_world(found, world)
                _check_same_optimizer_and_scheduler(config, found)
                experiment = _build(config, world, found, path)
                state = _restore(experiment, found)
                if world.all_reduce_any(received() is not None):
                    return stopped_before_start(received(), quiet=quiet, run_dir=run_dir)
                if world.is_main and command_line and (command_line.sets or command_line.unsets):
                    write_config(run_dir, to_yaml(config))  # the run's config is this one now
                return run_to_end(
                    experiment,
                    run_dir,
                    state,
                    quiet=quiet,
                    resumed=True,
                    received=received,
                    watchers=watchers,
                )
    finally:
        if lock is not None:
            lock.release()
        if world is not None:
            world.close()


def _find(path: Path) -> Checkpoint:
    """The checkpoint to continue from: the file given, or the newest readable one."""
    if not path.is_dir():
        return Checkpoint.read(path)
    if not ckpt.candidates(path):
        raise UserError(
            f"{path} holds no checkpoint: the run stopped before its first one was "
            f"written, so there is nothing to continue. Start it again: trainkit train "
            f"{path / CONFIG_FILE}"
        )
    found = Checkpoint.newest_in(path)
    for problem in found.skipped:
        warn(f"skipped a damaged checkpoint: {problem}")
    return found


def _say_what_is_redone(found: Checkpoint, run_dir: Path) -> None:
    """The first lines of a relaunched run: that it is one, from which checkpoint it
    continues, and how much logged work after that checkpoint is done again."""
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    requeue = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    who = "the command was run again"
    if restart:
        who = f"restart {restart} of this torchrun job"
    elif requeue:
        who = f"requeue {requeue} of Slurm job {os.environ.get('SLURM_JOB_ID', '?')}"
    state = found.state
    logged = max((int(r["step"]) for r in read_records(run_dir)), default=0)
    redone = ""
    if logged > state["step"]:
        metrics_file = run_dir / METRICS_FILE
        seconds = metrics_file.stat().st_mtime - found.path.stat().st_mtime
        redone = f"; the {logged - state['step']} logged steps after it"
        redone += f" (about {seconds:.0f} s of training)" if seconds >= 1 else ""
        redone += " are trained again"
    warn(
        f"{who}: {run_dir} continues from {found.path.name} (epoch {state['epoch']}, batch "
        f"{state['batch']}, step {state['step']}){redone}."
    )


def _for_world(found: Checkpoint, world: World) -> Checkpoint:
    """`found`, or for another number of processes than the run's, the checkpoint at the
    end of its newest finished epoch."""
    stored_world = found.payload.get("world_size", 1)
    if stored_world == world.size:
        return found
    state = found.state
    if state["batch"] > 0:
        epoch_file = found.path.parent / ckpt.periodic_name(state["epoch"])
        if state["epoch"] == 0 or not epoch_file.is_file():
            raise UserError(
                f"{found.path} stopped inside epoch {state['epoch'] + 1} of a run with "
                f"{stored_world} processes, and no checkpoint of a completed epoch is there "
                f"to continue from with {world.size}. Resume it with --nproc {stored_world}."
            )
        found = Checkpoint.read(epoch_file)
    warn(
        f"this run was trained by {stored_world} process(es) and resumes with {world.size}: "
        f"it continues from the end of epoch {found.state['epoch']}, with the "
        "learning-rate schedule re-planned for the new batches per epoch; not bit-exact."
    )
    return found


def _build(config: Config, world: World, found: Checkpoint, path: Path) -> Experiment:
    """The run `config` describes, built as it was trained (with its stored inference
    spec), once it is clear there is something left to train."""
    state = found.state
    if state["epoch"] >= config.trainer.epochs:
        raise UserError(
            f"the run in {found.path.parent} already finished {state['epoch']} of "
            f"{config.trainer.epochs} epochs. To train longer: trainkit resume {path} "
            f"--set trainer.epochs={state['epoch'] + 10}"
        )
    seed_process(config)
    experiment = build(config, world, found.spec())
    _check_optimizer_fits(experiment, found)
    return experiment


def _restore(experiment: Experiment, found: Checkpoint) -> TrainState:
    """Put the weights, optimizer, schedule, scaler, augmentation and RNGs back as the
    checkpoint has them; the loop position to continue from."""
    config, parts, world = experiment.config, experiment.parts, experiment.parts.world
    payload = found.payload
    state = TrainState.from_dict(payload["state"])
    if not world.is_main:  # rank 0 carries the epoch's sums over all ranks
        state.sums.zero_()
        state.seen = 0
    found.load_weights(parts.model)
    _restore_average(parts, payload)
    if parts.scaler is not None and payload["scaler"] is not None:
        parts.scaler.load_state_dict(payload["scaler"])
    stored_world = payload.get("world_size", 1)
    position = state.step  # where the schedule stands
    if stored_world == world.size:
        _restore_augmentation(experiment, payload["data"][world.rank])
    else:  # an epoch has a new number of steps: the schedule's position moves
        steps_per_epoch = math.ceil(len(parts.train) / config.trainer.accumulate_steps)
        position = state.epoch * steps_per_epoch
    stored_epochs = payload["config"]["trainer"]["epochs"]
    if parts.scheduler is not None and stored_epochs != config.trainer.epochs:
        warn(
            f"trainer.epochs changed from {stored_epochs} to {config.trainer.epochs}: "
            "the learning-rate schedule is re-planned over the new length."
        )
    replan = stored_epochs != config.trainer.epochs or stored_world != world.size
    if parts.scheduler is not None and replan:
        _replan_schedule(experiment, found, position)
    else:
        parts.optimizer.load_state_dict(payload["optimizer"])
        if parts.scheduler is not None and payload["scheduler"] is not None:
            parts.scheduler.load_state_dict(payload["scheduler"])
    ckpt.restore_rng(payload["rng"])
    return state


def _check_same_optimizer_and_scheduler(config: Config, found: Checkpoint) -> None:
    """The stored optimizer and schedule state belong to the optimizer and scheduler that
    wrote them: another would read foreign state (or fail on a missing key)."""
    for part in ("optimizer", "scheduler"):
        before = (found.payload["config"].get(part) or {}).get("name")
        chosen = getattr(config, part)
        now = chosen.name if chosen is not None else None
        if before != now:
            raise UserError(
                f"{found.path} was trained with {part} {before or 'null'}, and this resume "
                f"asks for {now or 'null'}: a resume continues the {part}'s stored state, so "
                f"{part}.name cannot change. Resume without that change, or "
                f"{_new_run(found.path)}"
            )


def _check_optimizer_fits(experiment: Experiment, found: Checkpoint) -> None:
    """The stored optimizer state must match the groups this config builds."""
    stored = [len(group["params"]) for group in found.payload["optimizer"]["param_groups"]]
    built = [len(group["params"]) for group in experiment.parts.optimizer.param_groups]
    if stored != built:
        raise UserError(
            f"{found.path} holds optimizer state for parameter groups of {stored} tensors, "
            f"but this config builds groups of {built}: optimizer.decay_biases_and_norms and "
            f"model.freeze cannot change when a run resumes. Resume without that change, or "
            f"{_new_run(found.path)}"
        )


def _new_run(path: Path) -> str:
    return f"start a new run from these weights with --set model.init_from={path}."


def _restore_average(parts: Parts, payload: dict) -> None:
    """The weight average as the checkpoint has it; one turned on at this resume starts
    from the weights now (its first update copies them)."""
    if parts.ema is None:
        return
    stored = payload.get(EMA_KEY)
    if stored is None:
        warn(
            "trainer.ema is on, but this run kept no weight average until now: the average "
            "starts from the weights of this checkpoint."
        )
        return
    parts.ema.load_state_dict(stored)


def _restore_augmentation(experiment: Experiment, saved: dict) -> None:
    try:
        experiment.parts.train.transform.load_state_dict(saved)
    except RuntimeError:
        warn(
            "the checkpoint's augmentation generator belongs to another device type; "
            "augmentation continues from a fresh seed, so this resume is not bit-exact."
        )


def _replan_schedule(experiment: Experiment, found: Checkpoint, steps: int) -> None:
    """Walk the new, freshly built schedule to `steps`, then restore the optimizer's
    state (momentum, moments) under the learning rate that schedule has reached."""
    parts = experiment.parts
    assert parts.scheduler is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # stepping a schedule with no optimizer step
        for _ in range(steps):
            parts.scheduler.step()
    lrs = [group["lr"] for group in parts.optimizer.param_groups]
    parts.optimizer.load_state_dict(found.payload["optimizer"])
    for group, lr in zip(parts.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
