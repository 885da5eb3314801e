"""From a validated config to a trained run: the library API.

`build` turns a config into live components from the registries; `train` hands them to
the engine and decides where output goes (`trainkit.resuming.resume` does the same for
a run that stopped). Everything that can be wrong with the user's input is found before
the run directory is created, so a failed start writes nothing.
"""

from __future__ import annotations

import math
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainkit import checkpoint as ckpt
from trainkit.config import Config, to_dict, to_yaml
from trainkit.console import make_reporter, say, set_quiet
from trainkit.data.batching import Batches, BatchOptions, BatchTransform, Dataset, augmentation
from trainkit.data.memory import DataInfo
from trainkit.device import (
    resolve_device,
    resolve_precision,
    use_deterministic_kernels,
    wants_channels_last,
)
from trainkit.distributed import World, join
from trainkit.engine import LoopSettings, Outcome, Parts, TrainState, evaluate, fit
from trainkit.errors import RunFailed, UserError, write_failed
from trainkit.files import check_writable
from trainkit.finetune import build_model, count_parameters, load_initial_weights
from trainkit.losses import Objective
from trainkit.optim import parameter_groups
from trainkit.registry import DATASETS, LOSSES, OPTIMIZERS, SCHEDULERS, plugin_origins
from trainkit.runs import (
    RunLock,
    Status,
    create_run_dir,
    discard_run_dir,
    mark_ended,
    mark_started,
    write_config,
)
from trainkit.signals import stop_on_signals
from trainkit.spec import InferenceSpec, model_spec
from trainkit.tracking import MetricsLog


@dataclass
class Experiment:
    """A config turned into live components, ready to train or evaluate."""

    config: Config
    data: Dataset
    parts: Parts
    spec: InferenceSpec  # what the model takes and gives, stored in its checkpoints

    @property
    def info(self) -> DataInfo:
        return self.data.info


@dataclass
class RunResult:
    status: str  # completed, early_stopped or interrupted
    run_dir: Path | None  # None: stopped before a run directory was made
    epoch: int
    step: int
    metrics: dict[str, float]
    signal: int | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(
    config: Config, world: World | None = None, stored: InferenceSpec | None = None
) -> Experiment:
    """Data, model, loss, optimizer and schedule for `config`, on the chosen device.

    In a multi-process run (`world`), each rank uses the device of its LOCAL_RANK, takes
    its share of every batch, and trains the model inside DistributedDataParallel.
    `stored` is the spec of a checkpoint being resumed or scored: its normalization is
    the one the model learned with, even if the images have changed since.
    """
    world = world or World()
    trainer = config.trainer
    seed_everything(config.seed)
    use_deterministic_kernels(trainer.deterministic)
    device = resolve_device(trainer.device)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    precision = resolve_precision(trainer.precision, device)

    data = DATASETS.build(config.data, config.seed)
    info = data.info
    if config.checkpoint.monitor.endswith("accuracy") and not info.is_classification:
        raise UserError(
            f"checkpoint.monitor={config.checkpoint.monitor} needs a classification dataset; "
            f"{config.data.name} is a regression set: monitor val/loss."
        )
    spec = model_spec(config, data)
    if stored is not None:
        stored.check_classes(spec.class_names)
        spec = stored
    input_shape = spec.input_shape
    module = build_model(config.model, input_shape, spec.num_outputs, stored is not None)
    channels_last = wants_channels_last(trainer.channels_last, device, module)
    module = module.to(device, memory_format=torch.channels_last if channels_last else None)
    objective = LOSSES.build(config.loss, info)

    # Each rank augments with its own generator; rank 0's is the single-process one.
    augment_seed = config.seed + 1 + 1_000_003 * world.rank
    mean, std = (spec.image.mean, spec.image.std) if spec.image else (data.mean, data.std)
    transform = BatchTransform(
        device,
        augment_seed,
        mean=mean,
        std=std,
        augment=augmentation(data),
        channels_last=channels_last,
    )
    options = BatchOptions(
        device,
        config.data.batch_size,
        transform,
        seed=config.seed,
        drop_last=config.data.drop_last,
        rank=world.rank,
        world_size=world.size,
    )
    train_batches = data.batches("train", options)
    val_batches = _eval_batches(data, "val", config, world, device, transform)
    _probe(module, objective, val_batches, config, input_shape)

    optimizer = OPTIMIZERS.build(config.optimizer, parameter_groups(module, config.optimizer))
    steps_per_epoch = math.ceil(len(train_batches) / trainer.accumulate_steps)
    scheduler = (
        SCHEDULERS.build(config.scheduler, optimizer, steps_per_epoch, trainer.epochs)
        if config.scheduler is not None
        else None
    )
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    model = torch.compile(module) if trainer.compile else module
    training_model = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        training_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    parts = Parts(
        model,
        module,
        training_model,
        objective,
        optimizer,
        scheduler,
        scaler,
        train_batches,
        val_batches,
        device,
        precision,
        world,
    )
    return Experiment(config, data, parts, spec)


def split_batches(experiment: Experiment, split: str) -> Batches:
    """Evaluation batches of the val or test split, on the run's device."""
    parts = experiment.parts
    return _eval_batches(
        experiment.data, split, experiment.config, parts.world, parts.device, parts.train.transform
    )


def _eval_batches(
    data: Dataset,
    split: str,
    config: Config,
    world: World,
    device: torch.device,
    transform: BatchTransform,
) -> Batches:
    """This rank's shard of `split`, on `device`, in batches of data.eval_batch_size."""
    batch_size = config.data.eval_batch_size or config.data.batch_size
    options = BatchOptions(device, batch_size, transform, rank=world.rank, world_size=world.size)
    return data.batches(split, options)


def _probe(
    module: nn.Module,
    objective: Objective,
    batches: Batches,
    config: Config,
    shape: tuple[int, ...],
) -> None:
    """Run two samples through model and loss, so a mismatch is a clear error up front."""
    inputs, targets = next(batches.epoch(0))
    module.eval()
    try:
        with torch.no_grad():
            objective.loss(module(inputs[:2]), targets[:2])
    except RuntimeError as exc:
        raise UserError(
            f"model {config.model.name} does not fit data {config.data.name} "
            f"(input shape {shape}): {str(exc).splitlines()[0]}. Check model.input_shape, "
            "model.num_classes and the loss."
        ) from None
    finally:
        module.train()


def loop_settings(config: Config) -> LoopSettings:
    trainer, checkpoint = config.trainer, config.checkpoint
    early = trainer.early_stopping
    return LoopSettings(
        epochs=trainer.epochs,
        accumulate_steps=trainer.accumulate_steps,
        grad_clip=trainer.grad_clip,
        eval_every=trainer.eval_every,
        log_every_steps=config.logging.log_every_steps,
        checkpoint_every_steps=checkpoint.every_steps,
        monitor=checkpoint.monitor,
        mode=checkpoint.mode or "min",
        patience=early.patience if early else None,
        min_delta=early.min_delta if early else 0.0,
    )


def run_experiment(
    experiment: Experiment,
    run_dir: Path,
    state: TrainState,
    quiet: bool,
    resumed: bool,
    notes: list[str] | None = None,
    received: Callable[[], int | None] = lambda: None,
    made_here: bool = True,
) -> RunResult:
    """Train `experiment` in `run_dir` from `state` until it ends, and record how.

    `received` tells which stop signal has come (see `signals.stop_on_signals`). A new
    run that could not start writing (a full disk), or that was stopped before its first
    checkpoint, leaves no run directory behind.
    """
    config, parts = experiment.config, experiment.parts
    world = parts.world
    # Only rank 0 writes files and shows progress; the other ranks stay quiet.
    reporter = make_reporter(quiet or not world.is_main)
    checkpointer = metrics_log = None
    if world.is_main:
        checkpointer = ckpt.Checkpointer(
            run_dir,
            to_dict(config),
            config.checkpoint.every_epochs,
            config.checkpoint.keep_last,
            inputs=experiment.spec.as_dict(),
            plugins=plugin_origins(config.plugins),
        )
        try:
            metrics_log = MetricsLog(
                run_dir,
                config.logging.tensorboard,
                resume_step=state.step if resumed else None,
                resumable=checkpointer.has_checkpoint,
            )
        except RunFailed:
            if not resumed:
                discard_run_dir(run_dir, made_here)  # nothing of it is worth keeping
            raise
        mark_started(run_dir)
    batch = f"{parts.train.global_batch_size} samples"
    if world.distributed:
        batch += f" ({config.data.batch_size} per process x {world.size} processes)"
    trainable, total = count_parameters(parts.module)
    counted = f"{total:,} parameters" + (f", {trainable:,} trainable" if trainable != total else "")
    reporter.info(
        f"{'resuming' if resumed else 'training'} {config.name} in {run_dir}: model "
        f"{config.model.label()} ({counted}) on {parts.device} ({parts.precision.name})"
    )
    reporter.info(
        f"data: {config.data.name}, {experiment.data.describe()}; "
        f"{len(parts.train)} batches of {batch} per epoch"
    )
    for note in notes or []:
        reporter.info(note)
    ended: Status = "failed"
    detail = None
    closing: RunFailed | None = None
    try:
        outcome: Outcome = fit(
            parts,
            loop_settings(config),
            state,
            checkpointer,
            metrics_log,
            reporter,
            lambda: world.any(received() is not None),
        )
        if outcome.status != "interrupted":
            if config.trainer.test_at_end:
                scores = evaluate(parts, split_batches(experiment, "test"))
                test = {f"test/{k}": v for k, v in scores.items() if k != "samples"}
                if metrics_log:
                    metrics_log.log(outcome.state.step, outcome.state.epoch, test, "test")
                outcome.metrics.update(test)
            final = {
                k: v
                for k, v in outcome.metrics.items()
                if k.startswith(("train/", "val/", "test/"))
            }
            if metrics_log:
                metrics_log.hparams(to_dict(config), final)
        ended = outcome.status
        result = RunResult(
            outcome.status, run_dir, outcome.state.epoch, outcome.state.step, outcome.metrics
        )
        if outcome.status == "interrupted":
            result.signal = received() or signal.SIGTERM  # a rank told by another's vote
            reporter.info(
                f"stopped by {signal.Signals(result.signal).name} at epoch "
                f"{outcome.state.epoch + 1}, step {outcome.state.step}; wrote "
                f"{run_dir / ckpt.LAST}. Continue with: trainkit resume {run_dir}"
                + (f" --nproc {world.size}" if world.distributed else "")
            )
        elif outcome.status == "early_stopped":
            reporter.info(f"early stop: {config.checkpoint.monitor} stopped improving")
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, checkpoints intact
        ended = "interrupted"
        raise
    except BaseException as exc:
        detail = f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        reporter.close()
        if metrics_log:
            try:
                metrics_log.close()
            except RunFailed as failed:
                closing = failed  # reported below, unless another error is on its way
        if checkpointer is not None:
            if ended == "interrupted" and not resumed and not checkpointer.has_checkpoint():
                discard_run_dir(run_dir, made_here)  # nothing to resume: no run at all
            else:
                mark_ended(run_dir, ended, detail)
    if closing is not None:
        raise closing
    return result


def stopped_before_start(sig: int | None, quiet: bool, run_dir: Path | None = None) -> RunResult:
    """A stop signal that came while the run was being set up: nothing was written."""
    stop = sig or signal.SIGTERM
    if not quiet:
        say(f"stopped by {signal.Signals(stop).name} before training started; nothing was written.")
    return RunResult("interrupted", run_dir, 0, 0, {}, stop)


def join_world(config: Config) -> World:
    """This process's place in a torchrun launch (rank 0 of 1 when run on its own)."""
    return join(resolve_device(config.trainer.device).type)


def train(config: Config, run_dir: Path | None = None, quiet: bool = False) -> RunResult:
    """Train `config` from scratch into a new run directory.

    The output folder is checked before any work. Stop signals are heeded from the
    start: one that comes while data and model are being built ends the command before
    a run directory exists.
    """
    set_quiet(quiet)
    where = run_dir or Path(config.checkpoint.root)
    check_writable(where, "--run-dir" if run_dir else "checkpoint.root", folder=True)
    world = join_world(config)
    lock = None
    try:
        with stop_on_signals() as received:
            experiment = build(config, world)
            notes = []
            if config.model.init_from:
                report = load_initial_weights(experiment.parts.module, Path(config.model.init_from))
                notes = report.lines()
            if world.any(received() is not None):
                return stopped_before_start(received(), quiet)
            directory, made_here = None, True
            if world.is_main:
                made_here = run_dir is None or not run_dir.exists()
                directory = create_run_dir(Path(config.checkpoint.root), config.name, run_dir)
                try:
                    lock = RunLock(directory).acquire()
                    write_config(directory, to_yaml(config))
                except OSError as exc:  # a full disk at start: no half-made run stays
                    if lock is not None:
                        lock.release()
                        lock = None
                    discard_run_dir(directory, made_here)
                    raise write_failed("the new run", directory, exc, False) from None
            directory = world.broadcast(directory)  # rank 0 names the run for everyone
            return run_experiment(
                experiment, directory, TrainState(), quiet, False, notes, received, made_here
            )
    finally:
        if lock is not None:
            lock.release()
        world.close()
