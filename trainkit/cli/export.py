"""`trainkit export`: a trained model as ONNX, a torch.export program or safetensors."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from trainkit.cli.app import CheckpointPath, command, stdout


class Format(str, Enum):
    onnx = "onnx"
    torch_export = "torch-export"
    safetensors = "safetensors"


@command()
def export(
    ckpt: CheckpointPath,
    formats: Annotated[
        list[Format],
        typer.Option("--format", help="onnx, torch-export or safetensors. Repeatable."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the files; default: export/ beside the checkpoint."),
    ] = None,
) -> None:
    """Export a trained model, run the exported file, and compare it with the model."""
    from trainkit.files import check_writable
    from trainkit.inference.export import CARD, check_installed, export
    from trainkit.inference.trained_model import load_trained_model
    from trainkit.tracking import attach

    chosen = list(dict.fromkeys(f.value for f in formats))
    check_installed(chosen)
    folder = out or (ckpt if ckpt.is_dir() else ckpt.parent) / "export"
    check_writable(folder, "--out", folder=True)
    trained = load_trained_model(ckpt, device="cpu", precision="fp32")
    console = stdout()
    written = []
    for done in export(trained, chosen, folder):
        console.print(
            f"{done.format}: {done.path}  checked: max abs difference {done.max_abs_diff:.2g} "
            f"(tolerance {done.tolerance:.2g})",
            highlight=False,
        )
        written.append(done.path)
    console.print(f"model card: {folder / CARD}", highlight=False)
    attach(ckpt if ckpt.is_dir() else ckpt.parent, "exports", [*written, folder / CARD])
