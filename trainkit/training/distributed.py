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

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from trainkit.errors import RunFailed, first_line
from trainkit.training.slurm import slurm_tasks, torch_environment


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    _control: Any = field(default=None, repr=False)  # gloo group for host-side votes
    _store: Any = field(default=None, repr=False)  # this attempt's store, kept alive

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
        return self.vote(flag)[0]

    def vote(self, *flags: bool) -> tuple[bool, ...]:
        """Each of `flags`, true on every rank when it is true on any: several votes in
        one exchange."""
        if not self.distributed:
            return flags
        votes = torch.tensor([int(flag) for flag in flags])
        dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=self._control)
        return tuple(bool(v) for v in votes.tolist())

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


def adopt_launcher_environment() -> None:
    """In a task of a multi-task srun (no torchrun), put the task's place into torch's
    variables (RANK, WORLD_SIZE, ...), first thing: everything that asks whether this
    process is rank 0 reads RANK."""
    if not launched_by_torchrun() and slurm_tasks():
        os.environ.update(torch_environment())


def join(device_type: str, timeout_minutes: float = 10) -> World:
    """This process's place in the run: rank 0 of 1 unless torchrun (or a multi-task
    srun) started it. A rank that cannot reach the others within `timeout_minutes`,
    then or in any later exchange, fails (a launcher can then restart the job) instead
    of waiting for ever."""
    adopt_launcher_environment()
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
    timeout = timedelta(minutes=timeout_minutes)
    backend = "nccl" if device_type == "cuda" else "gloo"
    store = _attempt_store(world, timeout)
    if store is None:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        world._store = store
        dist.init_process_group(
            backend=backend, store=store, rank=world.rank, world_size=world.size, timeout=timeout
        )
    world._control = dist.new_group(backend="gloo", timeout=timeout)
    return world


STORE_KEY = "trainkit/attempt_store"  # in torchrun's store: where this attempt's own store is
PROBE = timedelta(seconds=5)  # how long a rank tries one address before reading it again


def _attempt_store(world: World, timeout: timedelta) -> dist.Store | None:
    """A store of this attempt's own, under torchrun's agent (None otherwise: the usual
    env:// rendezvous).

    torchrun's agent keeps one store across the restarts of a job's workers, holding the
    keys the workers before a restart wrote; new workers setting up gloo there can read
    the address of a dead predecessor, fail to connect, or wait on it. So rank 0 starts
    a fresh store and publishes its address in the agent's; the other ranks read it and
    connect, and an address that does not answer (left by the rank 0 before a restart,
    whose store died with it) is read again until the new one is there.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    shared = dist.TCPStore(host, port, is_master=False, timeout=timeout)
    if world.rank == 0:
        own = dist.TCPStore(
            host, 0, world.size, is_master=True, timeout=timeout, wait_for_workers=False
        )
        shared.set(STORE_KEY, f"{own.port}")
        return own
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        shared.wait([STORE_KEY])
        try:
            own = dist.TCPStore(host, int(shared.get(STORE_KEY)), is_master=False, timeout=PROBE)
        except (RuntimeError, dist.DistError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        own.set_timeout(timeout)
        return own


def lost_peer(exc: BaseException) -> bool:
    """Whether `exc` is an exchange with the other processes of a run failing: one of
    them stopped, or cannot be reached in time."""
    if isinstance(exc, dist.DistError):
        return True
    markers = ("gloo", "Gloo", "NCCL", "Connection reset by peer", "Connection closed by peer")
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in markers)


@contextlib.contextmanager
def lost_peers_fail_the_run() -> Iterator[None]:
    """In a multi-process run, an exchange that fails because another process stopped
    (killed, out of memory, its own error) or cannot be reached is a RunFailed naming
    what happened, not a crash of this process: the other one's output says why."""
    try:
        yield
    except Exception as exc:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not lost_peer(exc):
            raise
        rank, size = os.environ.get("RANK", "?"), os.environ["WORLD_SIZE"]
        raise RunFailed(
            f"process {rank} of {size} lost the others ({first_line(exc, 200)}): another "
            "process of this run stopped or could not be reached, and its own output says "
            "why. The checkpoints written so far are intact: under torchrun --max-restarts "
            "the job restarts and continues from the newest, and the same command run "
            "again continues it too."
        ) from None
