"""What a plugin is written against: everything a component of your own needs.

A plugin module registers components with the decorators below, each with a parameter
model that subclasses the matching base class, and lists itself under `plugins:` in a
config. Import from this module only: it is trainkit's promise to plugin authors, kept
across releases, while the modules behind it may move.

    from trainkit.plugin import ModelParams, register_model

Builders are called as follows (parameters first, validated):

- model: `builder(params, input_shape, num_outputs) -> torch.nn.Module`
- dataset: `builder(params, seed) -> Dataset`, usually an `InMemoryDataset` of three
  `Split`s (`hold_out` cuts a seeded validation split out of the training one)
- loss: `builder(params, data: DataInfo) -> Objective`
- optimizer: `builder(params, parameter_groups) -> torch.optim.Optimizer`
- scheduler: `builder(params, optimizer, steps_per_epoch, epochs) -> LRScheduler`

Importing this module does not import torch, so `trainkit validate` stays quick.
"""

from trainkit.config.registry import (
    DatasetParams,
    LossParams,
    ModelParams,
    OptimizerParams,
    Params,
    SchedulerParams,
    register_dataset,
    register_loss,
    register_model,
    register_optimizer,
    register_scheduler,
)
from trainkit.data.dataset import Batches, DataInfo, Dataset
from trainkit.data.memory import InMemoryDataset, Split, hold_out
from trainkit.errors import UserError
from trainkit.losses.objective import Objective

__all__ = [
    "Batches",
    "DataInfo",
    "Dataset",
    "DatasetParams",
    "InMemoryDataset",
    "LossParams",
    "ModelParams",
    "Objective",
    "OptimizerParams",
    "Params",
    "SchedulerParams",
    "Split",
    "UserError",
    "hold_out",
    "register_dataset",
    "register_loss",
    "register_model",
    "register_optimizer",
    "register_scheduler",
]
