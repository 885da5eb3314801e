"""Learning-rate schedules, straight from torch.optim.lr_scheduler.

Every schedule advances once per optimizer step (not per epoch), so a run stopped
mid-epoch resumes at exactly the same learning rate. Schedule lengths are given in epochs,
as people think of them, and converted to steps here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from trainkit.config.registry import SchedulerParams, register_scheduler

if TYPE_CHECKING:
    import torch
    from torch.optim.lr_scheduler import LRScheduler


class WarmupParams(SchedulerParams):
    warmup_epochs: float = Field(
        0.0, ge=0, description="Linear warmup from warmup_start_factor x lr, in epochs."
    )
    warmup_start_factor: float = Field(0.1, gt=0, le=1, description="Warmup's first lr factor.")


class StepParams(WarmupParams):
    step_size: float = Field(30, gt=0, description="Epochs between lr drops.")
    gamma: float = Field(0.1, gt=0, description="Factor applied at each drop.")


class MultiStepParams(WarmupParams):
    milestones: list[float] = Field(description="Epochs at which the lr drops, e.g. [30, 60].")
    gamma: float = Field(0.1, gt=0, description="Factor applied at each milestone.")


class CosineParams(WarmupParams):
    min_lr: float = Field(0.0, ge=0, description="Learning rate at the end of the run.")


class OneCycleParams(SchedulerParams):
    max_lr: float | None = Field(None, gt=0, description="Peak lr; null: the optimizer's lr.")
    pct_start: float = Field(0.3, gt=0, lt=1, description="Share of the run spent warming up.")
    div_factor: float = Field(25.0, gt=0, description="Start lr = max_lr / div_factor.")
    final_div_factor: float = Field(1e4, gt=0, description="End lr = start lr / final_div_factor.")
    three_phase: bool = Field(False, description="Annealing phase symmetric to the warmup.")


def _with_warmup(
    params: WarmupParams, optimizer: torch.optim.Optimizer, main: LRScheduler, steps_per_epoch: int
) -> LRScheduler:
    warmup_steps = round(params.warmup_epochs * steps_per_epoch)
    if warmup_steps == 0:
        return main
    from torch.optim.lr_scheduler import LinearLR, SequentialLR

    warmup = LinearLR(optimizer, params.warmup_start_factor, 1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


@register_scheduler("step", StepParams)
def step(
    params: StepParams, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    """Multiply the lr by gamma every step_size epochs."""
    from torch.optim.lr_scheduler import StepLR

    size = max(1, round(params.step_size * steps_per_epoch))
    return _with_warmup(params, optimizer, StepLR(optimizer, size, params.gamma), steps_per_epoch)


@register_scheduler("multistep", MultiStepParams)
def multistep(
    params: MultiStepParams, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    """Multiply the lr by gamma at each milestone epoch."""
    from torch.optim.lr_scheduler import MultiStepLR

    milestones = sorted(round(m * steps_per_epoch) for m in params.milestones)
    main = MultiStepLR(optimizer, milestones, params.gamma)
    return _with_warmup(params, optimizer, main, steps_per_epoch)


@register_scheduler("cosine", CosineParams)
def cosine(
    params: CosineParams, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    """Cosine decay from the lr to min_lr over the run (after any warmup)."""
    from torch.optim.lr_scheduler import CosineAnnealingLR

    warmup_steps = round(params.warmup_epochs * steps_per_epoch)
    length = max(1, epochs * steps_per_epoch - warmup_steps)
    main = CosineAnnealingLR(optimizer, T_max=length, eta_min=params.min_lr)
    return _with_warmup(params, optimizer, main, steps_per_epoch)


@register_scheduler("onecycle", OneCycleParams)
def onecycle(
    params: OneCycleParams, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    """One-cycle policy: warm up to max_lr, then anneal far below the start (Smith)."""
    from torch.optim.lr_scheduler import OneCycleLR

    return OneCycleLR(
        optimizer,
        max_lr=params.max_lr or optimizer.param_groups[0]["lr"],
        total_steps=epochs * steps_per_epoch,
        pct_start=params.pct_start,
        div_factor=params.div_factor,
        final_div_factor=params.final_div_factor,
        three_phase=params.three_phase,
    )
