"""A loss that misbehaves at one call, as a user's world would: a test plugin.

Cross-entropy, until call `at_call`, where it does `action`:
- `sigterm`, `sigusr1`: the process sends itself that signal (a stop at a known step);
- `sigkill`: the process kills itself outright (a crash at a known step);
- `sigint_twice`: Ctrl-C twice (stop at once);
- `sigterm_group`, `sigint_group`: that signal to the whole process group, DataLoader
  workers included, as Ctrl-C in a terminal and Slurm's `scancel` send it (only in a
  process that leads its own group, so that a test never signals pytest);
- `nan`: from this call on the loss is NaN;
- `fill_disk`: the filesystem holding `disk` is filled to the last byte.

With `once: FILE` it acts only if FILE does not exist, and makes it: a fault that a
relaunch of the same config does not meet again. With `rank: N` it acts only in the
process of that rank (torchrun's RANK).

Written against `trainkit.plugin` only, like any plugin. Tests copy it beside their
config with `tests.helpers.install_plugin`.
"""

import os
import signal
import subprocess
from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from trainkit.plugin import LossParams, Objective, register_loss


class MisbehavingParams(LossParams):
    action: Literal[
        "sigterm",
        "sigusr1",
        "sigkill",
        "sigint_twice",
        "sigterm_group",
        "sigint_group",
        "nan",
        "fill_disk",
    ]
    at_call: int = Field(ge=1, description="The loss call (1 is the start-up probe) it acts at.")
    disk: str | None = Field(None, description="For fill_disk: a folder on the disk to fill.")
    once: str | None = Field(None, description="Act only if this file is missing; make it.")
    rank: int | None = Field(None, description="Act only in the process of this rank.")


@register_loss("tk_misbehaving", MisbehavingParams)
def misbehaving(params, data):
    """Cross-entropy that misbehaves at one call."""
    calls = [0]

    def loss(outputs, targets):
        calls[0] += 1
        value = F.cross_entropy(outputs, targets)
        if calls[0] == params.at_call and _armed(params):
            _act(params)
        if params.action == "nan" and calls[0] >= params.at_call:
            return value * float("nan")
        return value

    return Objective(loss, lambda outputs: outputs.argmax(1), soft_targets=True)


def _armed(params):
    if params.rank is not None and int(os.environ.get("RANK", "0")) != params.rank:
        return False
    if params.once is None:
        return True
    try:
        open(params.once, "x").close()
    except FileExistsError:
        return False
    return True


def _act(params):
    if params.action in ("sigterm", "sigusr1", "sigkill"):
        os.kill(os.getpid(), getattr(signal, params.action.upper()))
    elif params.action in ("sigterm_group", "sigint_group"):
        if os.getpgrp() != os.getpid():
            raise RuntimeError(f"{params.action} needs a process started in a session of its own")
        # Sent by another process, as a terminal or Slurm does: torch's workers treat a
        # SIGTERM from their parent as the parent's request to exit.
        number = int(getattr(signal, params.action.removesuffix("_group").upper()))
        subprocess.run(["kill", f"-{number}", "--", f"-{os.getpgrp()}"], check=False)
    elif params.action == "sigint_twice":
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    elif params.action == "fill_disk":
        with open(os.path.join(params.disk, "filler"), "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
