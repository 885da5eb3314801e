"""`trainkit export`: a trained model as ONNX, a torch.export program or safetensors.

Each artefact is run before it is declared done: the ONNX file in onnxruntime, the
`.pt2` program through `torch.export.load`, the safetensors weights in a freshly built
model, each on a batch of a size other than the one it was traced with (the batch
dimension is dynamic) and compared with the eager model. A file that does not pass is
never left in place. Beside the artefacts, `model.json` holds what a consumer needs to
feed them: class names, input shape, and the exact preprocessing.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import trainkit
from trainkit.config.schema import to_dict
from trainkit.errors import UserError, missing_extra, plain
from trainkit.files import atomic_write_bytes, publish
from trainkit.inference.trained_model import TrainedModel
from trainkit.models.factory import build_model

FILES = {"onnx": "model.onnx", "torch-export": "model.pt2", "safetensors": "model.safetensors"}
CARD = "model.json"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the `export` extra
TRACE_BATCH, CHECK_BATCH = 2, 3
RELATIVE_TOLERANCE = 1e-4  # of the largest output magnitude (at least 1)


@dataclass
class Exported:
    format: str
    path: Path
    max_abs_diff: float
    tolerance: float


def sample_inputs(trained: TrainedModel, batch: int, seed: int) -> Tensor:
    """A batch the model could see: random pixels through the stored preprocessing, or
    standard-normal feature rows."""
    generator = torch.Generator().manual_seed(seed)
    spec = trained.spec
    if spec.table is not None:  # numbers, then valid category indices
        rows = torch.randn(batch, spec.table.width, generator=generator)
        for i, n in enumerate(spec.table.cardinalities):
            column = spec.table.numeric_width + i
            rows[:, column] = torch.randint(0, n, (batch,), generator=generator).float()
        return rows
    if spec.image is None:
        return torch.randn(batch, *spec.input_shape, generator=generator)
    pixels = torch.randint(0, 256, (batch, *spec.input_shape), generator=generator)
    return trained.transform(pixels.to(torch.uint8), train=False).contiguous()


def check_installed(formats: list[str]) -> None:
    """ONNX export needs the `export` extra; say so before any work is done."""
    import importlib.util

    if "onnx" in formats:
        missing = [m for m in ONNX_PACKAGES if importlib.util.find_spec(m) is None]
        if missing:
            raise missing_extra("--format onnx", missing, "export")


def export(trained: TrainedModel, formats: list[str], out: Path) -> list[Exported]:
    """Write and check each format in `formats` (keys of FILES) into `out`, then model.json."""
    check_installed(formats)
    module = trained.model.to(memory_format=torch.contiguous_format).eval()
    example = sample_inputs(trained, TRACE_BATCH, seed=0)
    check = sample_inputs(trained, CHECK_BATCH, seed=1)
    with torch.no_grad():
        expected = module(check)
    tolerance = RELATIVE_TOLERANCE * max(1.0, expected.abs().max().item())
    out.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path], Tensor]] = {
        "onnx": lambda tmp: _onnx(module, example, check, tmp),
        "torch-export": lambda tmp: _torch_export(module, example, check, tmp),
        "safetensors": lambda tmp: _safetensors(trained, module, check, tmp),
    }
    done: list[Exported] = []
    try:
        for name in formats:
            done.append(_checked(name, writers[name], out / FILES[name], expected, tolerance))
    finally:  # the files that passed are described even when a later format fails
        if done:
            _write_card(trained, done, out / CARD)
    return done


def _write_card(trained: TrainedModel, done: list[Exported], path: Path) -> None:
    """model.json, keeping what an earlier export of the same checkpoint wrote beside it."""
    card = model_card(trained, done)
    previous = _read_card(path)
    if previous.get("checkpoint") == card["checkpoint"] and previous.get("step") == card["step"]:
        card["files"] = {**previous.get("files", {}), **card["files"]}
        card["checks"] = {**previous.get("checks", {}), **card["checks"]}
    atomic_write_bytes(path, (json.dumps(card, indent=2) + "\n").encode())


def _read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def _checked(
    name: str, write: Callable[[Path], Tensor], path: Path, expected: Tensor, tolerance: float
) -> Exported:
    """Write one artefact under a temporary name, run it, and publish it only if its
    outputs match the eager model's."""
    differences = []

    def make(tmp: Path) -> None:
        difference = (write(tmp) - expected).abs().max().item()
        if not difference <= tolerance:  # also catches NaN
            raise UserError(
                f"the {name} export does not reproduce the model: outputs differ by up to "
                f"{difference:.3g}, more than the tolerance {tolerance:.3g}. Nothing was "
                f"written to {path}."
            )
        differences.append(difference)

    publish(path, make)
    return Exported(name, path, differences[0], tolerance)


def _dynamic_batch() -> tuple[dict[int, Any], ...]:
    return ({0: torch.export.Dim("batch", min=1)},)


def _onnx(module: nn.Module, example: Tensor, check: Tensor, tmp: Path) -> Tensor:
    import onnxruntime

    try:
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            dynamic_shapes=_dynamic_batch(),
            input_names=["input"],
            output_names=["output"],
            verbose=False,
        )
    except RuntimeError as exc:  # torch.onnx's exporter errors, tracing errors among them
        raise _failure("onnx", exc) from None
    program.save(str(tmp))
    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(None, {"input": check.numpy()})
    return torch.from_numpy(outputs)


def _torch_export(module: nn.Module, example: Tensor, check: Tensor, tmp: Path) -> Tensor:
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=_dynamic_batch())
    except RuntimeError as exc:  # torch.export's tracing errors (dynamo's among them)
        raise _failure("torch-export", exc) from None
    buffer = io.BytesIO()  # torch.export wants a name ending in .pt2, or a buffer
    torch.export.save(program, buffer)
    tmp.write_bytes(buffer.getvalue())
    with torch.no_grad():
        return torch.export.load(io.BytesIO(tmp.read_bytes())).module()(check)


def _safetensors(trained: TrainedModel, module: nn.Module, check: Tensor, tmp: Path) -> Tensor:
    from safetensors.torch import load_model, save_model

    metadata = {
        "trainkit_config": json.dumps(to_dict(trained.config)),
        "trainkit_inputs": json.dumps(trained.spec.as_dict()),
    }
    save_model(module, str(tmp), metadata=metadata)
    umask = os.umask(0)  # safetensors makes its file private (0600); give it the usual mode
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    spec = trained.spec
    fresh = build_model(trained.config.model, spec, from_checkpoint=True).eval()
    load_model(fresh, str(tmp))
    with torch.no_grad():
        return fresh(check)


_OPERATOR = re.compile(r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)|target=torch\.ops\.([\w.]+)")


def _failure(name: str, exc: Exception) -> UserError:
    """One paragraph for an export that failed: the operator at fault where one is named,
    and the line of the model's code where tracing stopped."""
    text = plain(str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    operator = ""
    if match := _OPERATOR.search(text):
        op = f"{match.group(1)}.{match.group(2)}" if match.group(1) else match.group(3)
        operator = f" at operator {op}"
    detail = next(
        (line for line in lines if "No ONNX function found" in line or "Could not guard" in line),
        lines[0] if lines else type(exc).__name__,
    )
    if ">:" in detail:
        detail = detail.split(">:", 1)[1].strip()
    code = ""
    if "The following call raised this error:" in lines:
        at = lines.index("The following call raised this error:")
        code = f" Tracing stopped at: {' '.join(lines[at + 1 : at + 3])}."
    return UserError(
        f"export to {name} failed{operator}: {detail[:300]}.{code} The model cannot be "
        f"exported as {name} as it is; other formats may still work (safetensors always "
        "does)."
    )


def model_card(trained: TrainedModel, done: list[Exported]) -> dict[str, Any]:
    """What a consumer of the exported files needs to know, as JSON."""
    spec, objective = trained.spec, trained.objective
    if objective.classify is None:
        output = "regression values"
    elif objective.probabilities is not None:
        output = f"logits; {trained.config.loss.name} reads them as class probabilities"
    else:
        output = "per-class scores; the largest is the predicted class"
    image = spec.image
    if spec.table is not None:
        preprocessing = spec.table.describe()
    elif image is None:
        preprocessing = "none: feature rows as they are"
    else:
        size = f"{image.size[0]}x{image.size[1]}"
        resize = (
            f"resize the shorter side to {image.resize} and centre-crop {size}"
            if image.resize
            else f"resize to {size}"
        )
        preprocessing = (
            f"decode to {'RGB' if image.channels == 3 else 'greyscale'}, {resize} (bilinear, "
            "antialiased), scale to 0..1, subtract mean and divide by std per channel"
        )
    return {
        "trainkit": trainkit.__version__,
        "checkpoint": str(trained.path),
        "epoch": trained.epoch,
        "step": trained.step,
        "input": {
            "name": "input",
            "shape": ["batch", *spec.input_shape],
            "dtype": "float32",
            "preprocessing": preprocessing,
        },
        "output": {"name": "output", "shape": ["batch", spec.num_outputs], "meaning": output},
        "inputs": spec.as_dict(),
        "config": to_dict(trained.config),
        "files": {e.format: e.path.name for e in done},
        "checks": {
            e.format: {"max_abs_diff": e.max_abs_diff, "tolerance": e.tolerance} for e in done
        },
    }
