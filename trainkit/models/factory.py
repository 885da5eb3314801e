"""Building a model from its parameters: the one factory every command uses.

A run, a resume, `eval`, `predict` and `export` all build the network the same way, from
the registered builder and the model's `freeze` (which changes the module: frozen
BatchNorm layers are replaced), so that a checkpoint's weights always fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from trainkit.config.registry import MODELS, ModelParams
from trainkit.errors import UserError
from trainkit.models.table_inputs import CategoryInputs, TableModel

if TYPE_CHECKING:
    from trainkit.models.inference_spec import InferenceSpec


def build_model(
    params: ModelParams, spec: InferenceSpec, *, from_checkpoint: bool = False
) -> nn.Module:
    """The registered architecture `params` names, for the inputs and outputs of `spec`,
    with its `freeze` applied (which changes the module, so a resumed or evaluated run
    must build it the same way). A table with category columns gets them encoded in
    front of it (see `models.table_inputs`).

    `from_checkpoint`: the caller loads a checkpoint's weights next, so pretrained ones
    are not read.
    """
    if from_checkpoint:
        params = params.for_checkpoint()
    table = spec.table
    if table is None or not table.categories:
        module = MODELS.build(params, spec.input_shape, spec.num_outputs)
        freeze(module, params.freeze)
        return module
    widths = [params.category_width(n) for n in table.cardinalities]
    inputs = CategoryInputs(table.numeric_width, table.cardinalities, widths)
    network = MODELS.build(params, (inputs.width,), spec.num_outputs)
    freeze(network, params.freeze)
    return TableModel(inputs, network)


def freeze(module: nn.Module, prefixes: list[str]) -> None:
    """Stop training the parameters under `prefixes`; BatchNorm layers wholly inside them
    become torchvision's FrozenBatchNorm2d, so their running statistics stay fixed too."""
    if not prefixes:
        return
    names = [name for name, _ in module.named_parameters()]

    def frozen(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    for prefix in prefixes:
        if not any(
            frozen_name == prefix or frozen_name.startswith(prefix + ".") for frozen_name in names
        ):
            top = sorted({name.split(".")[0] for name in names})
            raise UserError(
                f"model.freeze: no parameter is under {prefix!r}. Top-level modules: "
                f"{', '.join(top)}."
            )
    if all(frozen(name) for name in names):
        raise UserError("model.freeze covers every parameter: nothing would be trained.")
    _freeze_batch_norms(module, "", frozen)
    for name, parameter in module.named_parameters():
        if frozen(name):
            parameter.requires_grad_(False)


def _freeze_batch_norms(module: nn.Module, prefix: str, frozen: Any) -> None:
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.BatchNorm2d) and child.affine and frozen(f"{path}.weight"):
            replacement = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            replacement.weight.copy_(child.weight.detach())
            replacement.bias.copy_(child.bias.detach())
            if child.running_mean is not None:
                replacement.running_mean.copy_(child.running_mean)
                replacement.running_var.copy_(child.running_var)
            setattr(module, name, replacement)
        else:
            _freeze_batch_norms(child, f"{path}.", frozen)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total
