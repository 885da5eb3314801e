"""The exponential moving average of the weights (trainer.ema), kept beside the trained ones.

An average of the weights along the last few hundred steps usually scores better than
the weights of the last step, at no cost to training: the optimizer never sees it. It is
torch's own `AveragedModel` with its EMA update, averaging buffers too (`use_buffers`),
so a batch-norm network's running statistics are the average's own, not the last step's
(no pass over the data is needed before it is used). Its first update copies the
weights, so weights loaded after it was made (init_from, a resume) are what it starts
from.

The run evaluates, selects best.pt by, and scores the test split with the average; a
checkpoint stores it whole (`EMA_KEY`) beside the trained weights, and every command that
uses a trained model takes the average from there (`averaged_weights`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

EMA_KEY = "ema"  # the checkpoint entry: the AveragedModel's state_dict
_PREFIX = "module."  # AveragedModel's name for the averaged network in its state_dict


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """An average of `model`'s weights and buffers, updated by `update_parameters(model)`
    after each optimizer step: average = decay x average + (1 - decay) x weights."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def averaged_weights(payload: dict[str, Any]) -> dict[str, Tensor] | None:
    """The averaged network's state_dict in a checkpoint payload; None: it has no average."""
    stored = payload.get(EMA_KEY)
    if stored is None:
        return None
    return {k.removeprefix(_PREFIX): v for k, v in stored.items() if k.startswith(_PREFIX)}
