"""Starting a new run from other weights: `model.init_from`.

Fine-tuning takes a network trained on one task (a trainkit run, torchvision's ImageNet
weights, a state_dict from elsewhere), keeps what still fits and trains the rest. What
fits is decided by name and shape alone, and both lists are reported, so a head that was
silently left random (or a backbone that silently failed to load) cannot go unnoticed.
A trainkit run that kept a weight average (trainer.ema) lends the average, the weights
it was scored with.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from trainkit.errors import UserError, first_line
from trainkit.files import UNREADABLE_TORCH_FILE
from trainkit.training.ema import averaged_weights


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
    except UNREADABLE_TORCH_FILE as exc:
        raise UserError(
            f"model.init_from: {path} cannot be read as weights ({first_line(exc)}). It must be a "
            "trainkit checkpoint, a .safetensors file or a state_dict saved with torch.save."
        ) from None
    averaged = averaged_weights(payload) if isinstance(payload, dict) else None
    if averaged is not None:  # a trainkit run with trainer.ema: the weights it scored with
        payload = averaged
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
