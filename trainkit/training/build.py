"""From a validated config to live components: the data, the model on its device, the
loss, the optimizer and the schedule, built from the registries.

Everything that can be wrong with the user's input is found here, before a run
directory exists: the data is opened and two samples are run through model and loss, so
a mismatch is a clear error up front, not a crash in the first step. `build` changes no
global state: seeding the process for training is `seed_process`, which only `train`
and `resume` call, so `eval` leaves a caller's random generators alone.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np
import torch

from trainkit.config.registry import DATASETS, LOSSES, OPTIMIZERS, SCHEDULERS
from trainkit.config.schema import Config
from trainkit.data.batching import BatchOptions, BatchTransform, augmentation
from trainkit.data.dataset import Batches, DataInfo, Dataset
from trainkit.data.mixing import batch_mixer, mixing_asked
from trainkit.data.table import TableDataset
from trainkit.errors import UserError, first_line
from trainkit.losses.objective import Objective
from trainkit.models.factory import build_model
from trainkit.models.inference_spec import InferenceSpec, model_spec
from trainkit.models.test_time import with_tta
from trainkit.optim.optimizers import parameter_groups
from trainkit.training.compiling import check_backend, compile_network
from trainkit.training.device import (
    resolve_device,
    resolve_precision,
    use_deterministic_kernels,
    wants_channels_last,
)
from trainkit.training.distributed import World
from trainkit.training.ema import weight_average
from trainkit.training.loop import LoopSettings, Parts


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

    def split_batches(self, split: str) -> Batches:
        """Evaluation batches of the val or test split, on the run's device."""
        parts = self.parts
        return _eval_batches(
            self.data, split, self.config, parts.world, parts.device, parts.train.transform
        )


def seed_process(config: Config) -> None:
    """Seed every global generator a run draws from (weights, dropout), and choose the
    kernels (deterministic or fastest) for training `config`."""
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    use_deterministic_kernels(config.trainer.deterministic)


def build(
    config: Config,
    world: World | None = None,
    stored: InferenceSpec | None = None,
    *,
    scoring_only: bool = False,
) -> Experiment:
    """Data, model, loss, optimizer and schedule for `config`, on the chosen device.

    In a multi-process run (`world`), each rank uses the device of its LOCAL_RANK, takes
    its share of every batch, and trains the model inside DistributedDataParallel.
    `stored` is the spec of a checkpoint being resumed or scored: its normalization is
    the one the model learned with, even if the images have changed since.
    `scoring_only`: the model will be given the weights to score (`eval`), so no weight
    average is kept beside it.
    """
    world = world or World()
    trainer = config.trainer
    device = resolve_device(trainer.device)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    precision = resolve_precision(trainer.precision, device)
    check_backend(trainer.compile)

    data = DATASETS.build(config.data, config.seed)
    info = data.info
    if config.checkpoint.monitor.endswith("accuracy") and not info.is_classification:
        raise UserError(
            f"checkpoint.monitor={config.checkpoint.monitor} needs a classification dataset; "
            f"{config.data.name} is a regression set: monitor val/loss."
        )
    if config.data.balanced and not info.is_classification:
        raise UserError("data.balanced balances classes; a regression set has none: remove it.")
    spec = replace(model_spec(config, data), class_counts=_class_counts(data))
    if stored is not None:
        stored.check_classes(spec.class_names)
        if isinstance(data, TableDataset) and stored.table and stored.table != spec.table:
            data = data.with_format(stored.table)  # the rows as the model learned them
        spec = stored
    if trainer.tta != "none" and len(spec.input_shape) != 3:
        raise UserError(
            f"trainer.tta={trainer.tta} mirrors images, but {config.data.name} gives inputs of "
            f"shape {spec.input_shape}, not images: set trainer.tta: none."
        )
    model = build_model(config.model, spec, from_checkpoint=stored is not None)
    channels_last = wants_channels_last(trainer.channels_last, device, model)
    model = model.to(device, memory_format=torch.channels_last if channels_last else None)
    objective = LOSSES.build(config.loss, spec.data_info())
    if mixing_asked(config.data):
        _check_mixing(config, spec, objective)
    mixer = batch_mixer(config.data, info.num_classes, config.seed, world.rank)

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
        balanced=config.data.balanced,
    )
    train_batches = data.batches("train", options)
    val_batches = _eval_batches(data, "val", config, world, device, transform)
    _probe(model, objective, val_batches, config, spec.input_shape, device)

    optimizer = OPTIMIZERS.build(config.optimizer, parameter_groups(model, config.optimizer))
    steps_per_epoch = math.ceil(len(train_batches) / trainer.accumulate_steps)
    scheduler = (
        SCHEDULERS.build(config.scheduler, optimizer, steps_per_epoch, trainer.epochs)
        if config.scheduler is not None
        else None
    )
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    ema = None
    if trainer.ema is not None and not scoring_only:
        ema = weight_average(model, trainer.ema.decay)
    eval_batch_size = config.data.eval_batch_size or config.data.batch_size
    train_model = compile_network(model, trainer.compile, eval_batch_size)
    if ema is None:
        scored = train_model
    else:
        scored = compile_network(ema.module, trainer.compile, eval_batch_size)
    eval_model = with_tta(scored, trainer.tta)
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    parts = Parts(
        model=model,
        eval_model=eval_model,
        train_model=train_model,
        objective=objective,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        train=train_batches,
        val=val_batches,
        device=device,
        precision=precision,
        world=world,
        ema=ema,
        mixer=mixer,
    )
    return Experiment(config, data, parts, spec)


def _check_mixing(config: Config, spec: InferenceSpec, objective: Objective) -> None:
    """mixup and cutmix blend images and their class labels: they need both, and a loss
    that takes the blended labels."""
    problem = None
    if len(spec.input_shape) != 3:
        problem = (
            f"they blend images, and {config.data.name} gives inputs of shape {spec.input_shape}"
        )
    elif not objective.soft_targets:
        problem = (
            f"they train on blended labels (class probabilities), which loss "
            f"{config.loss.name} does not take; use loss cross_entropy"
        )
    if problem:
        raise UserError(f"data.mixup and data.cutmix: {problem}. Set both to 0, or change that.")


def _class_counts(data: Dataset) -> tuple[int, ...]:
    """Training samples per class (empty for regression, or a plugin dataset that does
    not give its training targets)."""
    classes = data.info.num_classes
    train_targets = getattr(data, "train_targets", None)
    if classes is None or train_targets is None:
        return ()
    return tuple(torch.bincount(train_targets().cpu().long(), minlength=classes).tolist())


def loop_settings(config: Config) -> LoopSettings:
    trainer, checkpoint = config.trainer, config.checkpoint
    early = trainer.early_stopping
    minutes = checkpoint.every_minutes
    return LoopSettings(
        epochs=trainer.epochs,
        accumulate_steps=trainer.accumulate_steps,
        grad_clip=trainer.grad_clip,
        eval_every_epochs=trainer.eval_every_epochs,
        log_every_steps=config.logging.log_every_steps,
        checkpoint_every_steps=checkpoint.every_steps,
        checkpoint_every_seconds=minutes * 60 if minutes else None,
        monitor=checkpoint.monitor,
        mode=checkpoint.mode or "min",
        patience=early.patience if early else None,
        min_delta=early.min_delta if early else 0.0,
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
    model: torch.nn.Module,
    objective: Objective,
    batches: Batches,
    config: Config,
    shape: tuple[int, ...],
    device: torch.device,
) -> None:
    """Run two samples through model and loss, so a mismatch is a clear error up front."""
    inputs, targets = next(batches.epoch(0))
    model.eval()
    try:
        with torch.no_grad():
            objective.loss(model(inputs[:2]), targets[:2])
    except torch.cuda.OutOfMemoryError:
        raise UserError(
            f"model {config.model.name} ran out of memory on {device} with only two "
            f"samples of shape {shape}: it is too large for this device. Pick a smaller "
            "model, a smaller data.image_size or another trainer.device."
        ) from None
    except RuntimeError as exc:
        raise UserError(
            f"model {config.model.name} does not fit data {config.data.name} "
            f"(input shape {shape}): {first_line(exc, 10_000)}. Check model.input_shape, "
            "model.num_outputs and the loss."
        ) from None
    finally:
        model.train()
