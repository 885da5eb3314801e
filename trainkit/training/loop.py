"""The training loop, as one function you can read top to bottom.

`fit` trains until the last epoch, an early stop or a stop request (SIGINT/SIGTERM),
evaluating and checkpointing on the way. It knows nothing of YAML, the command line or
trackers: it is handed built components (`Parts`), loop settings (`LoopSettings`), where
it stands (`TrainState`, fresh or restored from a checkpoint) and where its output goes.

In a data-parallel run every rank runs this same function in lockstep: the figures it
logs and checks are sums over ranks, a stop request is voted on by all ranks each step,
and only rank 0 is handed a checkpointer and a metrics log. Every helper below that
runs a collective says so in its name (`..._all_ranks`): all ranks reach it together.

Per-step work stays on the device: the loss and accuracy are summed into a device tensor
by two in-place ops and read back (one host-device sync) only every `log_every_steps`
steps and at epoch end.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from trainkit.console import Reporter
from trainkit.data.dataset import Batches
from trainkit.data.mixing import BatchMixer
from trainkit.errors import RunFailed
from trainkit.losses.objective import Objective
from trainkit.training.checkpoint import Checkpointer, capture_rng
from trainkit.training.device import Precision
from trainkit.training.distributed import World
from trainkit.training.ema import EMA_KEY
from trainkit.training.metrics_log import MetricsLog


@dataclass
class Parts:
    """Everything a run trains and evaluates with. One network goes by three names, one
    per role: with torch.compile, trainer.ema and trainer.tta off and a single process,
    all three are the same."""

    model: nn.Module  # the network itself: its state_dict is what checkpoints hold
    # What evaluation runs: `model` or its weight average (`ema`), each maybe compiled,
    # maybe averaged over flipped images (trainer.tta).
    eval_model: nn.Module
    train_model: nn.Module  # what training runs: `model` (compiled), inside DDP with several ranks
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler | None
    train: Batches
    val: Batches
    device: torch.device
    precision: Precision
    world: World = field(default_factory=World)
    ema: AveragedModel | None = None  # the weight average (trainer.ema), updated every step
    mixer: BatchMixer | None = None  # mixup/cutmix of training batches (soft targets)

    @property
    def scored_network(self) -> nn.Module:
        """The network whose weights evaluation scores: the average, or `model`."""
        return self.ema.module if self.ema is not None else self.model


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    accumulate_steps: int = 1
    grad_clip: float | None = None
    eval_every_epochs: int = 1
    log_every_steps: int = 50
    checkpoint_every_steps: int | None = None
    checkpoint_every_seconds: float | None = None
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int | None = None  # early stopping; None disables
    min_delta: float = 0.0


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint so a resume continues exactly here."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch already trained on
    step: int = 0  # optimizer steps taken
    best: float | None = None  # best monitored value so far
    stale_evals: int = 0  # evaluations since it last improved (early stopping)
    # Sums over the current epoch, kept on the device: [loss x samples, correct].
    sums: Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))
    seen: int = 0  # samples trained on this epoch
    # The epoch's (loss x samples, samples) at the last train/loss record, where the next
    # record's interval starts; None (a checkpoint from before this was kept): now.
    logged: tuple[float, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sums": self.sums.detach().cpu()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        logged = data.get("logged")
        return cls(**{**data, "logged": tuple(logged) if logged is not None else None})


@dataclass
class Outcome:
    status: Literal["completed", "early_stopped", "interrupted"]
    state: TrainState
    metrics: dict[str, float]


Totals = tuple[float, float, int]  # an epoch's (loss x samples, correct, samples) so far


def evaluate(parts: Parts, batches: Batches, num_classes: int | None = None) -> dict[str, Any]:
    """Loss and accuracy over a whole split (and per-class accuracy with `num_classes`).

    In a multi-process run each rank scores its shard of the split and the sums are
    added, so every rank must call this together.
    """
    model, objective = parts.eval_model, parts.objective
    parts.world.broadcast_buffers(parts.scored_network)
    was_training = model.training
    model.eval()
    dtype = torch.float32 if parts.device.type == "mps" else torch.float64
    loss_sum = torch.zeros((), dtype=dtype, device=parts.device)
    correct = torch.zeros((), dtype=torch.int64, device=parts.device)
    per_class = torch.zeros(2, num_classes or 0, dtype=torch.int64, device=parts.device)
    with torch.no_grad():
        for inputs, targets in batches.epoch():
            with parts.precision.autocast(parts.device):
                outputs = model(inputs)
                loss = objective.loss(outputs, targets)
            loss_sum += loss.to(loss_sum.dtype) * len(targets)
            if objective.classify is not None:
                hits = objective.classify(outputs) == targets
                correct += hits.sum()
                if num_classes:
                    per_class[0] += torch.bincount(targets[hits], minlength=num_classes)
                    per_class[1] += torch.bincount(targets, minlength=num_classes)
    model.train(was_training)
    sums = torch.stack([loss_sum, correct.to(dtype), loss_sum.new_tensor(batches.num_samples)])
    loss_total, correct_total, samples = parts.world.all_reduce_sum(sums).tolist()
    samples = int(samples)
    result: dict[str, Any] = {"loss": loss_total / samples, "samples": samples}
    if objective.classify is not None:
        result["accuracy"] = correct_total / samples
    if num_classes:
        hit, total = parts.world.all_reduce_sum(per_class).tolist()
        result["per_class_accuracy"] = [
            h / t if t else None for h, t in zip(hit, total, strict=True)
        ]
    return result


def fit(
    parts: Parts,
    settings: LoopSettings,
    state: TrainState,
    checkpointer: Checkpointer | None,  # None on ranks other than 0
    metrics_log: MetricsLog | None,
    reporter: Reporter,
    # Given whether this rank's clock says a checkpoint is due: whether any rank was
    # asked to stop, and whether any rank's clock says so (one exchange a step).
    votes_all_ranks: Callable[[bool], tuple[bool, bool]],
) -> Outcome:
    model, optimizer, scaler = parts.train_model, parts.optimizer, parts.scaler
    objective, precision, device, world = (
        parts.objective,
        parts.precision,
        parts.device,
        parts.world,
    )
    classification = objective.classify is not None
    batches = len(parts.train)
    accumulate = settings.accumulate_steps
    metrics: dict[str, float] = {}
    # MPS has no float64; elsewhere float64 keeps long sums exact enough to resume bit for bit.
    state.sums = state.sums.to(device, torch.float32 if device.type == "mps" else torch.float64)

    saved_at = time.monotonic()  # the clock checkpoint.every_minutes counts from
    model.train()
    loss_total, correct_total = state.sums.unbind()  # views: adding to them adds to sums
    for epoch in range(state.epoch, settings.epochs):
        if state.batch == 0:
            state.sums.zero_()
            state.seen = 0
            state.logged = (0.0, 0)
        reporter.start_epoch(epoch, settings.epochs, batches, state.batch)
        epoch_start = last_log_time = time.perf_counter()
        loss_now, _, seen_at_start = _totals_all_ranks(state, world)
        logged_loss, logged_seen = state.logged or (loss_now, seen_at_start)
        timed_seen = seen_at_start  # throughput counts only what this process trained

        for index, (inputs, targets) in enumerate(
            parts.train.epoch(epoch, state.batch), state.batch
        ):
            labels = targets
            if parts.mixer is not None:  # targets become class probabilities
                inputs, targets = parts.mixer(inputs, targets, epoch, index)
                labels = targets.argmax(dim=1)  # the class with the larger share
            # Accumulation groups are fixed by position in the epoch, so a resume
            # (which only happens between optimizer steps) lines up with them.
            group_start = index - index % accumulate
            group_size = min(accumulate, batches - group_start)
            step_now = index + 1 - group_start == group_size  # the group's last batch
            # Ranks exchange gradients once per optimizer step, not after every batch.
            hold = world.distributed and not step_now
            with model.no_sync() if hold else contextlib.nullcontext():
                with precision.autocast(device):
                    outputs = model(inputs)
                    loss = objective.loss(outputs, targets)
                scaled = loss / group_size if group_size > 1 else loss
                (scaler.scale(scaled) if scaler else scaled).backward()

            with torch.no_grad():
                loss_total.add_(loss.detach(), alpha=len(targets))
                if classification:
                    correct_total.add_((objective.classify(outputs) == labels).sum())
            state.seen += len(targets)
            state.batch = index + 1
            reporter.advance()
            if not step_now:
                continue

            if scaler is not None:
                scaler.unscale_(optimizer)
            if settings.grad_clip is not None:
                nn.utils.clip_grad_norm_(parts.model.parameters(), settings.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if parts.scheduler is not None:
                parts.scheduler.step()
            if parts.ema is not None:
                parts.ema.update_parameters(parts.model)
            state.step += 1

            if state.step % settings.log_every_steps == 0:
                loss_sum, _, seen = _totals_all_ranks(state, world)  # the interval's one sync
                now = time.perf_counter()
                interval = {
                    "train/loss": (loss_sum - logged_loss) / max(seen - logged_seen, 1),
                    "lr": optimizer.param_groups[0]["lr"],
                    "samples_per_sec": (seen - timed_seen) / max(now - last_log_time, 1e-9),
                }
                _check_finite("the training loss", interval, state, checkpointer)
                if metrics_log:
                    metrics_log.log(state.step, epoch + 1, interval, "interval")
                reporter.log_step(state.step, state.batch, interval)
                logged_loss, logged_seen, last_log_time = loss_sum, seen, now
                timed_seen, state.logged = seen, (loss_sum, seen)
            every, seconds = settings.checkpoint_every_steps, settings.checkpoint_every_seconds
            late = seconds is not None and time.monotonic() - saved_at >= seconds
            stop, late = votes_all_ranks(late)
            periodic = (bool(every) and state.step % every == 0) or late
            if (periodic and state.batch < batches) or stop:  # an epoch's end saves anyway
                totals = _totals_all_ranks(state, world)
                _check_finite(
                    "the training loss", _epoch_means(totals, classification), state, checkpointer
                )
                _save_all_ranks(parts, state, totals, metrics, checkpointer)
                saved_at = time.monotonic()
            if stop:
                return Outcome("interrupted", state, metrics)

        # End of the epoch: summarize (a sync, so the time covers all queued device work),
        # evaluate, checkpoint.
        totals = _totals_all_ranks(state, world)
        epoch_time = time.perf_counter() - epoch_start
        epoch_metrics = _epoch_means(totals, classification)
        _check_finite("the training loss", epoch_metrics, state, checkpointer)
        epoch_metrics["lr"] = optimizer.param_groups[0]["lr"]
        epoch_metrics["epoch_time"] = epoch_time
        epoch_metrics["samples_per_sec"] = (totals[2] - seen_at_start) / max(epoch_time, 1e-9)
        improved = False
        if (epoch + 1) % settings.eval_every_epochs == 0 or epoch + 1 == settings.epochs:
            val = evaluate(parts, parts.val)
            epoch_metrics.update({f"val/{k}": v for k, v in val.items() if k != "samples"})
            monitored = epoch_metrics[settings.monitor]
            improved = _improved(monitored, state.best, settings)
            if improved:
                state.best, state.stale_evals = monitored, 0
            else:
                state.stale_evals += 1
        metrics = epoch_metrics
        state.epoch, state.batch = epoch + 1, 0
        if metrics_log:
            metrics_log.log(state.step, epoch + 1, epoch_metrics, "epoch")
        reporter.end_epoch(epoch, settings.epochs, epoch_metrics)
        _save_all_ranks(
            parts, state, totals, metrics, checkpointer, finished_epoch=epoch + 1, best=improved
        )
        saved_at = time.monotonic()
        if settings.patience is not None and state.stale_evals >= settings.patience:
            return Outcome("early_stopped", state, metrics)
        if votes_all_ranks(False)[0] and epoch + 1 < settings.epochs:
            return Outcome("interrupted", state, metrics)
    return Outcome("completed", state, metrics)


def _totals_all_ranks(state: TrainState, world: World) -> Totals:
    """The epoch's (loss x samples, correct, samples) so far, over all ranks: one sync,
    and an all-reduce in a multi-process run."""
    local = torch.cat([state.sums, state.sums.new_tensor([state.seen])])
    loss_sum, correct, seen = world.all_reduce_sum(local).tolist()
    return loss_sum, correct, int(seen)


def _epoch_means(totals: Totals, classification: bool) -> dict[str, float]:
    loss_sum, correct, seen = totals
    means = {"train/loss": loss_sum / max(seen, 1)}
    if classification:
        means["train/accuracy"] = correct / max(seen, 1)
    return means


def _improved(value: float, best: float | None, settings: LoopSettings) -> bool:
    if best is None:
        return True
    if settings.mode == "min":
        return value < best - settings.min_delta
    return value > best + settings.min_delta


def _save_all_ranks(
    parts: Parts,
    state: TrainState,
    totals: Totals,
    metrics: dict[str, float],
    checkpointer: Checkpointer | None,
    *,
    finished_epoch: int | None = None,
    best: bool = False,
) -> None:
    """Gather every rank's augmentation state (an all-gather), then rank 0 writes the
    checkpoint with the epoch's `totals` over all ranks."""
    # A step can leave non-finite weights behind a finite loss; never save those.
    finite = torch.stack([p.detach().isfinite().all() for p in parts.model.parameters()])
    if not bool(finite.all()):
        _non_finite("the weights", state, checkpointer)
    loss_sum, correct, seen = totals
    augmentation = parts.world.all_gather_objects(parts.train.transform.state_dict())
    if checkpointer is None:
        return
    payload = {
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler else None,
        "scaler": parts.scaler.state_dict() if parts.scaler else None,
        "state": {
            **state.as_dict(),
            "sums": torch.tensor([loss_sum, correct], dtype=torch.float64),
            "seen": seen,
        },
        "data": augmentation,  # one generator state per rank
        "world_size": parts.world.size,
        "rng": capture_rng(),
        "metrics": metrics,
    }
    if parts.ema is not None:
        payload[EMA_KEY] = parts.ema.state_dict()
    checkpointer.save(payload, finished_epoch=finished_epoch, best=best)


def _check_finite(
    what: str, values: dict[str, float], state: TrainState, checkpointer: Checkpointer | None
) -> None:
    if not all(math.isfinite(v) for v in values.values()):
        _non_finite(what, state, checkpointer)


def _non_finite(what: str, state: TrainState, checkpointer: Checkpointer | None) -> None:
    if checkpointer is None or checkpointer.has_checkpoint():
        where = f" in {checkpointer.run_dir}" if checkpointer else ""
        kept = f"The last good checkpoint{where} is kept."
    else:
        kept = "No checkpoint had been written yet, so nothing was saved."
    raise RunFailed(
        f"{what} became non-finite (NaN or infinite) in epoch {state.epoch + 1}, by step "
        f"{state.step}. {kept} Lower optimizer.lr, set trainer.grad_clip, or use "
        "precision fp32, then resume or start again."
    )
