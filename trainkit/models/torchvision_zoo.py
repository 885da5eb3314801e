"""Any torchvision classification architecture, from scratch or from its pretrained weights.

`model: {name: torchvision, arch: resnet50, weights: DEFAULT}` builds torchvision's own
network, loads the weights through torchvision's own mechanism (its download cache under
TORCH_HOME), and gives it a new classifier head sized to the dataset's classes. The
weights bring the preprocessing they were trained with (resize, crop, mean and std),
which an image_folder dataset takes wherever its config leaves those settings unset.

The list of architectures and weight names is torchvision's, so validating such a
config imports torchvision (a few seconds); configs of other models never do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from trainkit.config.registry import ModelParams, register_model, suggest
from trainkit.errors import UserError, first_line
from trainkit.files import UNREADABLE_TORCH_FILE

if TYPE_CHECKING:
    from torch import nn

ARCH_SOURCE = "torchvision.models.list_models(module=torchvision.models)"


def architectures() -> list[str]:
    """torchvision's classification architectures (not detection, segmentation, video)."""
    from torchvision import models

    return models.list_models(module=models)


def _weights_enum(arch: str) -> Any:
    from torchvision import models

    return models.get_model_weights(arch)


class TorchvisionModelParams(ModelParams):
    arch: str = Field(
        description=f"A classification architecture, one of {ARCH_SOURCE} (e.g. resnet18, "
        "resnet50, efficientnet_b0, mobilenet_v3_small, convnext_tiny, vit_b_16)."
    )
    weights: str | None = Field(
        None,
        description="Pretrained weights: a member of the architecture's torchvision weights "
        "enum, e.g. DEFAULT or IMAGENET1K_V1; null: random initialization. Read from "
        "torchvision's cache under TORCH_HOME (downloaded there once when online).",
    )

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        known = architectures()
        if arch not in known:
            raise ValueError(
                f"torchvision has no classification architecture {arch!r}"
                f"{suggest(arch, known)} The list is {ARCH_SOURCE}"
            )
        return arch

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, weights: str | None, info: ValidationInfo) -> str | None:
        arch = info.data.get("arch")  # absent when the arch itself was refused
        if weights is not None and arch is not None:
            members = list(_weights_enum(arch).__members__)
            if weights not in members:
                raise ValueError(
                    f"{arch} has no weights {weights!r}{suggest(weights, members)} "
                    f"Choose one of: {', '.join(members)}"
                )
        return weights

    _read_weights: bool = PrivateAttr(True)

    def label(self) -> str:
        return f"torchvision {self.arch}" + (f" ({self.weights} weights)" if self.weights else "")

    def prepare(self) -> None:
        super().prepare()
        if self.weights is not None and self._read_weights:
            weights = _weights_enum(self.arch)[self.weights]
            if not weights_file(weights).is_file():
                _fetch_pretrained(weights)  # downloads into the cache, or says how to

    def for_checkpoint(self) -> TorchvisionModelParams:
        """The same network without reading the pretrained file: a checkpoint's weights
        replace them, and a fine-tuned model must load where ImageNet's are not cached."""
        copy = self.model_copy()
        copy._read_weights = False
        return copy

    def preferred_inputs(self) -> dict[str, Any]:
        if self.weights is None:
            return {}
        transform = _weights_enum(self.arch)[self.weights].transforms()
        return {
            "image_size": transform.crop_size[0],
            "resize": transform.resize_size[0],
            "mean": list(transform.mean),
            "std": list(transform.std),
        }


def weights_file(weights: Any) -> Path:
    """Where torchvision's loader keeps (or would download) these weights."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _architecture_kwargs(arch: str, weights: Any) -> dict[str, Any]:
    """What torchvision's builder changes in the architecture for these weights (the
    same settings as its `if weights is not None` branches), so the network is the same
    whether its weights come from torchvision or from a trainkit checkpoint."""
    if arch in ("googlenet", "inception_v3"):
        return {"transform_input": True, "aux_logits": True, "init_weights": False}
    if arch.startswith("vit_"):
        return {"image_size": weights.meta["min_size"][0]}
    if arch == "maxvit_t":
        return {"input_size": weights.meta["min_size"]}
    return {}


def _load_pretrained(net: nn.Module, weights: Any) -> None:
    """Load the weights through torchvision (`WeightsEnum.get_state_dict`, which reads its
    cache under TORCH_HOME and downloads there the first time, when a network is there)."""
    net.load_state_dict(_fetch_pretrained(weights))


def _fetch_pretrained(weights: Any) -> dict[str, Any]:
    """The pretrained state_dict, from torchvision's cache or downloaded into it; a
    failed download or a bad file is a UserError that says which, and what to do."""
    path = weights_file(weights)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except UNREADABLE_TORCH_FILE as exc:
        reason = first_line(exc)
        if path.is_file():
            raise UserError(
                f"the weights file {path} cannot be loaded ({reason}). Delete it and put "
                f"the original {weights.url} there."
            ) from None
        raise UserError(
            f"the pretrained weights {weights} are not in torchvision's cache and could not "
            f"be downloaded ({reason}). Download {weights.url} on a machine with network "
            f"access and put it at {path} (the cache follows TORCH_HOME)."
        ) from None


def _replace_head(net: nn.Module, old_outputs: int, num_outputs: int) -> None:
    """Give the last layer that produces `old_outputs` classes `num_outputs` instead.

    That layer is a Linear for almost every architecture (a 1x1 Conv2d for SqueezeNet);
    it is found by what it computes, not by a per-architecture attribute name.
    """
    from torch import nn

    heads = [
        (name, layer)
        for name, layer in net.named_modules()
        if (isinstance(layer, nn.Linear) and layer.out_features == old_outputs)
        or (isinstance(layer, nn.Conv2d) and layer.out_channels == old_outputs)
    ]
    if not heads:
        raise UserError("could not find the classifier layer to resize for this architecture.")
    name, layer = heads[-1]
    if isinstance(layer, nn.Linear):
        new: nn.Module = nn.Linear(layer.in_features, num_outputs, bias=layer.bias is not None)
    else:
        new = nn.Conv2d(layer.in_channels, num_outputs, layer.kernel_size, layer.stride)
    parent_name, _, attribute = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, attribute, new)


def _drop_auxiliary_heads(net: nn.Module) -> None:
    """GoogLeNet and Inception v3 return extra outputs in training; trainkit's losses take one."""
    if getattr(net, "aux_logits", False):
        net.aux_logits = False
        for name in ("AuxLogits", "aux1", "aux2"):
            if hasattr(net, name):
                setattr(net, name, None)


@register_model("torchvision", TorchvisionModelParams)
def torchvision_model(
    params: TorchvisionModelParams, input_shape: tuple[int, ...], num_outputs: int
) -> nn.Module:
    """Any torchvision classification architecture, optionally with pretrained weights."""
    import warnings

    import torch
    from torchvision import models

    if len(input_shape) != 3 or input_shape[0] != 3:
        raise UserError(
            f"model torchvision ({params.arch}) needs RGB images (3, H, W); the data gives "
            f"{tuple(input_shape)}. An image_folder dataset decodes RGB with channels: 3."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notes on init schemes of old archs
        if params.weights is None:
            net = models.get_model(params.arch, num_classes=num_outputs)
        else:
            weights = _weights_enum(params.arch)[params.weights]
            classes = len(weights.meta["categories"])
            kwargs = _architecture_kwargs(params.arch, weights)
            net = models.get_model(params.arch, num_classes=classes, **kwargs)
            if params._read_weights:
                _load_pretrained(net, weights)
            if classes != num_outputs:
                _replace_head(net, classes, num_outputs)
    _drop_auxiliary_heads(net)
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError, AssertionError) as exc:  # ViT asserts its image size
        reason = first_line(exc)
        minimum = ""
        if params.weights is not None:
            minimum = f" These weights were trained at {weights.transforms().crop_size[0]} pixels."
        raise UserError(
            f"model torchvision ({params.arch}) cannot take inputs of shape {tuple(input_shape)}"
            f" ({reason}).{minimum} Set data.image_size to a size it accepts."
        ) from None
    net.train()
    return net
