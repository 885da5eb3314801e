"""A loss that misbehaves at one call, as a user's world would: a test plugin.

Cross-entropy, until call `at_call`, where it does `action`:
- `sigterm`: the process sends itself SIGTERM (a stop at a known step);
- `sigint_twice`: Ctrl-C twice (stop at once);
- `nan`: from this call on the loss is NaN;
- `fill_disk`: the filesystem holding `disk` is filled to the last byte.

Written against `trainkit.plugin` only, like any plugin. Tests copy it beside their
config with `tests.helpers.install_plugin`.
"""

import os
import signal
from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from trainkit.plugin import LossParams, Objective, register_loss


class MisbehavingParams(LossParams):
    action: Literal["sigterm", "sigint_twice", "nan", "fill_disk"]
    at_call: int = Field(ge=1, description="The loss call (1 is the start-up probe) it acts at.")
    disk: str | None = Field(None, description="For fill_disk: a folder on the disk to fill.")


@register_loss("tk_misbehaving", MisbehavingParams)
def misbehaving(params, data):
    """Cross-entropy that misbehaves at one call."""
    calls = [0]

    def loss(outputs, targets):
        calls[0] += 1
        value = F.cross_entropy(outputs, targets)
        if calls[0] == params.at_call:
            _act(params)
        if params.action == "nan" and calls[0] >= params.at_call:
            return value * float("nan")
        return value

    return Objective(loss, lambda outputs: outputs.argmax(1))


def _act(params):
    if params.action == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
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
