"""Starting from other weights: `model.init_from` and `model.freeze`.

Fine-tuning takes a network trained on one task (a trainkit run, torchvision's ImageNet
weights, a state_dict from elsewhere), keeps what still fits and trains the rest. What
fits is decided by name and shape alone, and both lists are reported, so a head that was
silently left random (or a backbone that silently failed to load) cannot go unnoticed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from trainkit.errors import UserError
from trainkit.registry import MODELS, ModelParams


def build_model(
    params: ModelParams,
    input_shape: tuple[int, ...],
    num_outputs: int,
    from_checkpoint: bool = False,
) -> nn.Module:
    """The registered architecture `params` names, with its `freeze` applied (which changes
    the module, so a resumed or evaluated run must build it the same way).

    `from_checkpoint`: the caller loads a checkpoint's weights next, so pretrained ones
    are not read.
    """
    if from_checkpoint:
        params = params.for_checkpoint()
    module = MODELS.build(params, input_shape, num_outputs)
    freeze(module, params.freeze)
    return module


@dataclass
class InitReport:
    source: Path
    loaded: list[str]  # model tensors taken from the file
    fresh: list[str]  # model tensors left as initialized
    mismatched: list[str]  # same name in the file, another shape

    def lines(self) -> list[str]:
        loaded = f"loaded {len(self.loaded)} tensors ({_by_module(self.loaded)})"
        lines = [f"init_from {self.source}: {loaded}"]
        if self.fresh:
            lines.append(f"  newly initialized: {', '.join(self.fresh)}")
        if self.mismatched:
            lines.append(f"  not loaded, shape differs: {', '.join(self.mismatched)}")
        return lines


def _by_module(names: list[str]) -> str:
    """`conv1 (1), layer1 (30), fc (2)`: the loaded names, counted by top-level module."""
    counts = Counter(name.split(".")[0] for name in names)
    return ", ".join(f"{module} ({count})" for module, count in counts.items())


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a trainkit checkpoint, a safetensors file or a saved state_dict."""
    if not path.is_file():
        raise UserError(f"model.init_from={str(path)!r}: no such file.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise UserError(
                f"model.init_from: {path} is not a readable safetensors file ({exc})."
            ) from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(
            f"model.init_from: {path} cannot be read as weights ({reason}). It must be a "
            "trainkit checkpoint, a .safetensors file or a state_dict saved with torch.save."
        ) from None
    for key in ("model", "state_dict"):  # a trainkit (or Lightning) checkpoint
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    tensors = (
        {k: v for k, v in payload.items() if isinstance(v, Tensor)}
        if isinstance(payload, dict)
        else {}
    )
    if not tensors:
        raise UserError(f"model.init_from: {path} holds no named tensors (no state_dict inside).")
    return tensors


def _strip_common_prefix(names: list[str]) -> str:
    """The dotted prefix every name shares ('module.' from DDP, 'model.' from wrappers)."""
    first = names[0].split(".")
    depth = 0
    while depth < len(first) - 1 and all(
        n.split(".")[depth] == first[depth] and n.count(".") > depth for n in names
    ):
        depth += 1
    return ".".join(first[:depth]) + "." if depth else ""


def load_initial_weights(module: nn.Module, path: Path) -> InitReport:
    """Copy every tensor of `path` whose name and shape match into `module`."""
    source = read_state_dict(path)
    target = module.state_dict()
    if not set(source) & set(target):
        prefix = _strip_common_prefix(list(source))
        if prefix:
            source = {k[len(prefix) :]: v for k, v in source.items()}
    loaded, mismatched = [], []
    for name, tensor in target.items():
        if name not in source:
            continue
        if source[name].shape != tensor.shape:
            mismatched.append(f"{name} {list(source[name].shape)} vs {list(tensor.shape)}")
        else:
            loaded.append(name)
    if not loaded:
        raise UserError(
            f"model.init_from: none of the {len(source)} tensors in {path} match this model's "
            f"names and shapes (the file has e.g. {', '.join(list(source)[:3])}; the model "
            f"has e.g. {', '.join(list(target)[:3])}). Pick weights of the same architecture."
        )
    with torch.no_grad():
        for name in loaded:
            target[name].copy_(source[name])
    fresh = [name for name in target if name not in loaded]
    return InitReport(path, loaded, fresh, mismatched)


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
