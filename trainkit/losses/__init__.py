"""Losses: importing this package registers the built-in ones (without importing torch).

A loss builder takes its validated parameters and the dataset's `DataInfo` and returns
an `Objective`: the loss, and how to read classes and probabilities off the outputs.
"""

from trainkit.losses import torch_losses

__all__ = ["torch_losses"]
