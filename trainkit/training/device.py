"""Where and in which precision a run computes."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from trainkit.errors import UserError


def resolve_device(spec: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must exist."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"trainer.device={spec!r} but PyTorch sees no CUDA GPU here; "
            "use trainer.device=auto or cpu."
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(
            f"trainer.device={spec!r} but only {torch.cuda.device_count()} CUDA device(s) exist."
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"trainer.device={spec!r} but MPS is not available; use auto or cpu.")
    return device


def use_deterministic_kernels(deterministic: bool) -> None:
    """Deterministic kernels where PyTorch has them (CPU runs are reproducible without)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be
    if deterministic or torch.are_deterministic_algorithms_enabled():
        # Only when it changes something: the call imports torch._inductor (seconds).
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def wants_channels_last(setting: bool | str, device: torch.device, module: torch.nn.Module) -> bool:
    """`auto`: on for conv nets on CUDA and on CPU (oneDNN); untested on MPS, so off there."""
    if isinstance(setting, bool):
        return setting
    is_conv = any(isinstance(m, torch.nn.Conv2d) for m in module.modules())
    return device.type in ("cuda", "cpu") and is_conv


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (None: plain fp32) and whether fp16 needs a gradient scaler."""

    name: str
    dtype: torch.dtype | None

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_precision(spec: str, device: torch.device) -> Precision:
    """`auto`: bf16 on CUDA where supported, else fp16 (with a scaler); fp32 elsewhere."""
    if spec == "auto":
        if device.type != "cuda":
            return Precision("fp32", None)
        spec = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if spec == "fp32":
        return Precision("fp32", None)
    if spec == "fp16" and device.type == "cpu":
        raise UserError("trainer.precision=fp16 is not supported on CPU; use bf16 or fp32.")
    return Precision(spec, torch.bfloat16 if spec == "bf16" else torch.float16)
