"""Data-parallel runs across processes started by torchrun (torch.distributed.run).

torchrun starts one worker process per device and tells each who it is through the
environment (RANK, WORLD_SIZE, LOCAL_RANK, and where to meet). A `World` is that
identity plus the few collective operations the loop needs: summing metrics over ranks,
agreeing to stop on the same step, and gathering per-rank state into a checkpoint. Each
collective's name says it is one (`all_reduce_*`, `all_gather_*`, `broadcast_*`): every
rank must call it, at the same point, or the ranks wait on each other for ever. In a
plain single process every operation is the identity, so the loop reads the same
either way. Collectives run on the device's backend (NCCL on CUDA, gloo on CPU);
the stop vote runs on a separate gloo group, so it never waits on the GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    _control: Any = field(default=None, repr=False)  # gloo group for host-side votes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `tensor` over all ranks (a new tensor)."""
        if not self.distributed:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    def all_reduce_any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (a vote: an all-reduce of the
        maximum), so all ranks act on the same step."""
        if not self.distributed:
            return flag
        vote = torch.tensor([int(flag)])
        dist.all_reduce(vote, op=dist.ReduceOp.MAX, group=self._control)
        return bool(vote.item())

    def all_gather_objects(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value, group=self._control)
        return values

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every rank, so all evaluate one model."""
        if self.distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def join(device_type: str) -> World:
    """This process's place in the run: rank 0 of 1 unless torchrun started it."""
    if not launched_by_torchrun():
        return World()
    world = World(
        rank=int(os.environ["RANK"]),
        size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )
    if not world.distributed:
        return world
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    world._control = dist.new_group(backend="gloo")
    return world
