"""trainer.compile: torch.compile, with every graph compiled in the first epoch.

Left to itself, torch.compile specializes on the first batch's size and recompiles as
new sizes come: the epoch's smaller last batch, each evaluation split's last batch, a
batch of one sample (which a dynamic graph cannot take either). Here shapes are static
and evaluation always sees one size: a smaller evaluation batch is padded to the full
evaluation batch size with copies of its last sample, and only its own outputs are
kept. So training compiles a graph for its batch and one for its last batch, and
evaluation (no gradients, modules in eval mode) one more, all in the first epoch; a
weight average (trainer.ema) is a second network, compiled once at the first
evaluation. After that nothing recompiles, whatever the splits' sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainkit.errors import UserError


class FixedEvalBatch(nn.Module):
    """`compiled`, given evaluation batches of exactly `eval_batch_size` samples."""

    def __init__(self, compiled: nn.Module, eval_batch_size: int) -> None:
        super().__init__()
        self.compiled = compiled
        self.eval_batch_size = eval_batch_size

    def forward(self, inputs: Tensor) -> Tensor:
        missing = self.eval_batch_size - inputs.shape[0]
        if torch.is_grad_enabled() or missing <= 0:
            return self.compiled(inputs)
        filler = inputs[-1:].expand(missing, *inputs.shape[1:])
        padded = torch.cat([inputs, filler])
        if inputs.dim() == 4 and inputs.is_contiguous(memory_format=torch.channels_last):
            padded = padded.contiguous(memory_format=torch.channels_last)  # the graph's layout
        return self.compiled(padded)[: inputs.shape[0]]


def check_backend(setting: bool | str) -> None:
    """A backend trainer.compile names must be one torch.compile has."""
    if isinstance(setting, str):
        known = torch._dynamo.list_backends(exclude_tags=())
        if setting not in known:
            raise UserError(
                f"trainer.compile={setting!r} is not a torch.compile backend; this torch has "
                f"{', '.join(sorted(known))}. Use true (inductor), false, or one of those."
            )


def compile_network(network: nn.Module, setting: bool | str, eval_batch_size: int) -> nn.Module:
    """`network` as trainer.compile says: as it is (false), or compiled with the inductor
    backend (true) or the backend named."""
    if setting is False:
        return network
    backend = "inductor" if setting is True else setting
    compiled = torch.compile(network, backend=backend, dynamic=False)
    return FixedEvalBatch(compiled, eval_batch_size)
