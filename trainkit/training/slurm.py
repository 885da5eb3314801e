"""Slurm as a launcher: `srun trainkit train ...` without torchrun.

srun starts one process per task and tells each who it is through its own variables;
torch.distributed reads torchrun's. This maps the one onto the other, as Lightning and
submitit do: SLURM_PROCID is the rank, SLURM_NTASKS the world size, SLURM_LOCALID the
local rank, the first host of the job's node list the address where the ranks meet,
and a port derived from the job id (or $MASTER_PORT) the port. A job of one task, or a
process torchrun started (`srun torchrun ...`), is left as it is.
"""

from __future__ import annotations

import os
import re

BASE_PORT, PORTS = 20000, 20000  # a job's port: BASE_PORT + job id % PORTS


def slurm_tasks() -> bool:
    """Whether this process is one task of a multi-task srun step."""
    return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ


def torch_environment() -> dict[str, str]:
    """torch.distributed's variables for this Slurm task (set ones are kept)."""
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or ""
    job = int(re.sub(r"\D", "", os.environ.get("SLURM_JOB_ID", "")) or 0)
    derived = {
        "RANK": os.environ["SLURM_PROCID"],
        "WORLD_SIZE": os.environ["SLURM_NTASKS"],
        "LOCAL_RANK": os.environ.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": first_host(nodes) if nodes else "127.0.0.1",
        "MASTER_PORT": str(BASE_PORT + job % PORTS),
    }
    return {key: os.environ.get(key, value) for key, value in derived.items()}


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: "gpu[07-09,12],cpu1" -> "gpu07"."""
    first = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if first is None:
        raise ValueError(f"not a Slurm node list: {nodelist!r}")
    prefix, ranges = first.groups()
    if not ranges:
        return prefix
    start = ranges.split(",")[0].split("-")[0]
    return prefix + start
