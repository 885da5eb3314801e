"""From a validated config to a trained, evaluated or resumed run: the library API.

`train`, `resume` and `evaluate_checkpoint` are what the CLI calls, and what a Python
user calls directly. They build components from the registries, hand them to the engine
and decide where output goes. Everything that can be wrong with the user's input is
found before the run directory is created, so a failed start writes nothing.
"""

from __future__ import annotations

import math
import os
import random
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainkit import checkpoint as ckpt
from trainkit.config import Config, apply_overrides, to_dict, to_yaml, validate
from trainkit.console import make_reporter, stderr, warn
from trainkit.data.memory import BatchTransform, DataInfo, DeviceBatches, InMemoryDataset, Split
from trainkit.device import resolve_device, resolve_precision
from trainkit.distributed import World, join
from trainkit.engine import LoopSettings, Outcome, Parts, TrainState, evaluate, fit
from trainkit.errors import UserError
from trainkit.losses import Objective
from trainkit.registry import DATASETS, LOSSES, MODELS, OPTIMIZERS, SCHEDULERS
from trainkit.runs import create_run_dir, write_config
from trainkit.signals import stop_on_signals
from trainkit.tracking import MetricsLog


@dataclass
class Experiment:
    """A config turned into live components, ready to train or evaluate."""

    config: Config
    data: InMemoryDataset
    parts: Parts

    @property
    def info(self) -> DataInfo:
        return self.data.info


@dataclass
class RunResult:
    status: str  # completed, early_stopped or interrupted
    run_dir: Path
    epoch: int
    step: int
    metrics: dict[str, float]
    signal: int | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(config: Config, world: World | None = None) -> Experiment:
    """Data, model, loss, optimizer and schedule for `config`, on the chosen device.

    In a multi-process run (`world`), each rank uses the device of its LOCAL_RANK, takes
    its share of every batch, and trains the model inside DistributedDataParallel.
    """
    world = world or World()
    trainer = config.trainer
    seed_everything(config.seed)
    if trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be
    if trainer.deterministic or torch.are_deterministic_algorithms_enabled():
        # Only when it changes something: the call imports torch._inductor (seconds).
        torch.use_deterministic_algorithms(trainer.deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not trainer.deterministic
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
    input_shape = tuple(config.model.input_shape or info.input_shape)
    module = MODELS.build(config.model, input_shape, config.model.num_classes or info.num_outputs)
    is_conv = any(isinstance(m, nn.Conv2d) for m in module.modules())
    # Faster convolutions on CUDA and on CPU (oneDNN); untested on MPS, so left off there.
    channels_last = (
        trainer.channels_last
        if isinstance(trainer.channels_last, bool)
        else device.type in ("cuda", "cpu") and is_conv
    )
    module = module.to(device, memory_format=torch.channels_last if channels_last else None)
    objective = LOSSES.build(config.loss, info)

    # Each rank augments with its own generator; rank 0's is the single-process one.
    augment_seed = config.seed + 1 + 1_000_003 * world.rank
    transform = BatchTransform(data, device, seed=augment_seed, channels_last=channels_last)
    batch_size = config.data.batch_size
    train_batches = DeviceBatches(
        data.train.to(device),
        batch_size,
        transform,
        train=True,
        seed=config.seed,
        drop_last=config.data.drop_last,
        rank=world.rank,
        world_size=world.size,
    )
    val_batches = _eval_batches(data.val, config, world, device, transform)
    _probe(module, objective, val_batches, config, input_shape)

    optimizer = OPTIMIZERS.build(config.optimizer, module.parameters())
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
    return Experiment(config, data, parts)


def split_batches(experiment: Experiment, split: str) -> DeviceBatches:
    """Evaluation batches of one split (train, val or test), moved to the run's device."""
    parts = experiment.parts
    chosen = experiment.data.split(split)
    return _eval_batches(
        chosen, experiment.config, parts.world, parts.device, parts.train.transform
    )


def _eval_batches(
    split: Split, config: Config, world: World, device: torch.device, transform: BatchTransform
) -> DeviceBatches:
    """This rank's shard of `split`, on `device`, in batches of data.eval_batch_size."""
    return DeviceBatches(
        split.shard(world.rank, world.size).to(device),
        config.data.eval_batch_size or config.data.batch_size,
        transform,
        train=False,
    )


def _probe(
    module: nn.Module,
    objective: Objective,
    batches: DeviceBatches,
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


def _run(
    experiment: Experiment, run_dir: Path, state: TrainState, quiet: bool, resumed: bool
) -> RunResult:
    config, parts = experiment.config, experiment.parts
    world = parts.world
    # Only rank 0 writes files and shows progress; the other ranks stay quiet.
    reporter = make_reporter(quiet or not world.is_main)
    checkpointer = metrics_log = None
    if world.is_main:
        checkpointer = ckpt.Checkpointer(
            run_dir, to_dict(config), config.checkpoint.every_epochs, config.checkpoint.keep_last
        )
        metrics_log = MetricsLog(
            run_dir, config.logging.tensorboard, resume_step=state.step if resumed else None
        )
    batch = f"{config.data.batch_size}"
    if world.distributed:
        batch += f" x {world.size} processes = {parts.train.global_batch_size}"
    reporter.info(
        f"{'resuming' if resumed else 'training'} {config.name} in {run_dir} on {parts.device} "
        f"({parts.precision.name}), {len(parts.train)} batches of {batch} per epoch"
    )
    try:
        with stop_on_signals() as received:
            outcome: Outcome = fit(
                parts,
                loop_settings(config),
                state,
                checkpointer,
                metrics_log,
                reporter,
                lambda: world.any(received() is not None),
            )
            stop_signal = received()
        if outcome.status != "interrupted":
            if config.trainer.test_at_end:
                scores = evaluate(parts, split_batches(experiment, "test"))
                test = {f"test/{k}": v for k, v in scores.items() if k != "samples"}
                if metrics_log:
                    metrics_log.log(outcome.state.step, outcome.state.epoch, test)
                outcome.metrics.update(test)
            final = {
                k: v
                for k, v in outcome.metrics.items()
                if k.startswith(("train/", "val/", "test/"))
            }
            if metrics_log:
                metrics_log.hparams(_flat_hparams(config), final)
    finally:
        reporter.close()
        if metrics_log:
            metrics_log.close()
    result = RunResult(
        outcome.status, run_dir, outcome.state.epoch, outcome.state.step, outcome.metrics
    )
    if outcome.status == "interrupted":
        result.signal = stop_signal or signal.SIGTERM  # a rank told by another rank's vote
        if world.is_main:
            stderr.print(
                f"stopped by {signal.Signals(result.signal).name} at epoch "
                f"{outcome.state.epoch + 1}, step {outcome.state.step}; "
                f"wrote {run_dir / ckpt.LAST}. "
                f"Continue with: trainkit resume {run_dir}"
                + (f" --nproc {world.size}" if world.distributed else ""),
                highlight=False,
            )
    elif outcome.status == "early_stopped":
        reporter.info(f"early stop: {config.checkpoint.monitor} stopped improving")
    return result


def _flat_hparams(config: Config) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix] = value
        elif value is not None:
            flat[prefix] = str(value)

    walk("", to_dict(config))
    return flat


def _join(config: Config) -> World:
    """This process's place in a torchrun launch (rank 0 of 1 when run on its own)."""
    return join(resolve_device(config.trainer.device).type)


def train(config: Config, run_dir: Path | None = None, quiet: bool = False) -> RunResult:
    """Train `config` from scratch into a new run directory."""
    world = _join(config)
    try:
        experiment = build(config, world)
        directory = None
        if world.is_main:
            directory = create_run_dir(Path(config.checkpoint.root), config.name, run_dir)
            write_config(directory, to_yaml(config))
        directory = world.broadcast(directory)  # rank 0 names the run for everyone
        return _run(experiment, directory, TrainState(), quiet, resumed=False)
    finally:
        world.close()


def _locate(path: Path) -> ckpt.Found:
    if path.is_dir():
        found = ckpt.load_latest(path)
        for problem in found.skipped:
            warn(f"skipped a damaged checkpoint: {problem}")
        return found
    if not path.exists():
        raise UserError(
            f"nothing to resume at {path}: no such file or folder. Pass a run directory "
            "(checkpoints/<name>/<run-id>) or a checkpoint file."
        )
    return ckpt.Found(path, ckpt.load(path), [])


def _config_of(payload: dict[str, Any], overrides: list[str], source: Path) -> Config:
    return validate(apply_overrides(payload["config"], overrides), f"the config stored in {source}")


def _load_weights(module: nn.Module, payload: dict[str, Any], source: Path) -> None:
    try:
        module.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise UserError(
            f"the model weights in {source} do not fit the model this config builds "
            f"({str(exc).splitlines()[0]}). Do not change model settings with --set on resume/eval."
        ) from None


def resume(path: Path, overrides: list[str] | None = None, quiet: bool = False) -> RunResult:
    """Continue the run in `path` (a run directory or a checkpoint file) where it stopped.

    With the world size it was trained with, a run continues exactly. With another, it
    continues from its last completed epoch, with the schedule re-planned for the new
    number of steps per epoch.
    """
    found = _locate(path)
    config = _config_of(found.payload, overrides or [], found.path)
    world = _join(config)
    try:
        stored_world = found.payload.get("world_size", 1)
        if stored_world != world.size:
            found = _last_completed_epoch(found, stored_world, world.size)
        payload = found.payload
        experiment = build(config, world)
        parts = experiment.parts
        state = TrainState.from_dict(payload["state"])
        if state.epoch >= config.trainer.epochs:
            raise UserError(
                f"the run in {found.path.parent} already finished {state.epoch} of "
                f"{config.trainer.epochs} epochs. To train longer: trainkit resume {path} "
                f"--set trainer.epochs={state.epoch + 10}"
            )
        if not world.is_main:  # rank 0 carries the epoch's sums over all ranks
            state.sums.zero_()
            state.seen = 0
        _load_weights(parts.module, payload, found.path)
        if parts.scaler is not None and payload["scaler"] is not None:
            parts.scaler.load_state_dict(payload["scaler"])
        if stored_world == world.size:
            _restore_augmentation(parts, payload["data"][world.rank])
        else:  # an epoch has a new number of steps
            steps_per_epoch = math.ceil(len(parts.train) / config.trainer.accumulate_steps)
            state.step = state.epoch * steps_per_epoch
        stored_epochs = payload["config"]["trainer"]["epochs"]
        if parts.scheduler is not None and stored_epochs != config.trainer.epochs:
            warn(
                f"trainer.epochs changed from {stored_epochs} to {config.trainer.epochs}: the "
                "learning-rate schedule is re-planned over the new length."
            )
        replan = stored_epochs != config.trainer.epochs or stored_world != world.size
        if parts.scheduler is not None and replan:
            _replan_schedule(parts, payload, state.step)
        else:
            parts.optimizer.load_state_dict(payload["optimizer"])
            if parts.scheduler is not None and payload["scheduler"] is not None:
                parts.scheduler.load_state_dict(payload["scheduler"])
        ckpt.restore_rng(payload["rng"])
        return _run(experiment, found.path.parent, state, quiet, resumed=True)
    finally:
        world.close()


def _last_completed_epoch(found: ckpt.Found, stored_world: int, world_size: int) -> ckpt.Found:
    """The checkpoint at the end of the newest finished epoch, for a new world size."""
    state = found.payload["state"]
    if state["batch"] > 0:
        epoch_file = found.path.parent / ckpt.periodic_name(state["epoch"])
        if state["epoch"] == 0 or not epoch_file.is_file():
            raise UserError(
                f"{found.path} stopped inside epoch {state['epoch'] + 1} of a run with "
                f"{stored_world} processes, and no checkpoint of a completed epoch is there "
                f"to continue from with {world_size}. Resume it with --nproc {stored_world}."
            )
        found = ckpt.Found(epoch_file, ckpt.load(epoch_file), [])
    warn(
        f"this run was trained by {stored_world} process(es) and resumes with {world_size}: "
        f"it continues from the end of epoch {found.payload['state']['epoch']}, with the "
        "learning-rate schedule re-planned for the new batches per epoch; not bit-exact."
    )
    return found


def _restore_augmentation(parts: Parts, saved: dict[str, Any]) -> None:
    try:
        parts.train.transform.load_state_dict(saved)
    except RuntimeError:
        warn(
            "the checkpoint's augmentation generator belongs to another device type; "
            "augmentation continues from a fresh seed, so this resume is not bit-exact."
        )


def _replan_schedule(parts: Parts, payload: dict[str, Any], steps: int) -> None:
    """Walk the new, freshly built schedule to `steps`, then restore the optimizer's
    state (momentum, moments) under the learning rate that schedule has reached."""
    assert parts.scheduler is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # stepping a schedule with no optimizer step
        for _ in range(steps):
            parts.scheduler.step()
    lrs = [group["lr"] for group in parts.optimizer.param_groups]
    parts.optimizer.load_state_dict(payload["optimizer"])
    for group, lr in zip(parts.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


def evaluate_checkpoint(
    path: Path, split: str = "test", overrides: list[str] | None = None
) -> dict[str, Any]:
    """Loss and accuracy (overall and per class) of a checkpoint on one split."""
    if path.is_dir():
        path = next((path / n for n in (ckpt.BEST, ckpt.LAST) if (path / n).is_file()), path)
    payload = ckpt.load(path)
    config = _config_of(payload, overrides or [], path)
    experiment = build(config)
    parts = experiment.parts
    _load_weights(parts.module, payload, path)
    result = evaluate(parts, split_batches(experiment, split), experiment.info.num_classes)
    return {
        "split": split,
        "loss": result["loss"],
        "accuracy": result.get("accuracy"),  # None for regression
        "samples": result["samples"],
        "per_class_accuracy": result.get("per_class_accuracy"),
        "class_names": list(experiment.info.class_names),
        "checkpoint": str(path),
        "epoch": payload["state"]["epoch"],
        "step": payload["state"]["step"],
    }
