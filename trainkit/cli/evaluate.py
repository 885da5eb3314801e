"""`trainkit eval`: score a checkpoint on a split of its data."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from trainkit.cli.app import CheckpointPath, Overrides, Unsets, command, command_line, stdout


class SplitName(str, Enum):
    test = "test"
    val = "val"


@command("eval")
def eval_(
    ckpt: CheckpointPath,
    split: Annotated[SplitName, typer.Option(help="Which split to score.")] = SplitName.test,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
    overrides: Overrides = None,
    unsets: Unsets = None,
) -> None:
    """Score a checkpoint on the test (or validation) split."""
    from rich.table import Table

    from trainkit.files import atomic_write_bytes, check_writable
    from trainkit.inference.evaluate import evaluate_checkpoint

    if out is not None:
        check_writable(out, "--out")
    result = evaluate_checkpoint(ckpt, split.value, command_line(overrides, unsets))
    console = stdout()
    console.print(f"{result['checkpoint']} (epoch {result['epoch']}, step {result['step']})")
    summary = Table(title=f"{split.value} split")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("loss", f"{result['loss']:.4f}")
    if result["accuracy"] is not None:
        summary.add_row("accuracy", f"{result['accuracy']:.4f}")
    summary.add_row("samples", str(result["samples"]))
    console.print(summary)
    if result["per_class_accuracy"] is not None:
        classes = Table(title="per-class accuracy")
        classes.add_column("class")
        classes.add_column("accuracy", justify="right")
        for name, accuracy in zip(
            result["class_names"], result["per_class_accuracy"], strict=False
        ):
            classes.add_row(name, "-" if accuracy is None else f"{accuracy:.4f}")
        console.print(classes)
    if result["parameters"] is not None:
        learned = Table(title="learned parameters")
        learned.add_column("parameter")
        learned.add_column("value")
        for name, value in result["parameters"].items():
            learned.add_row(name, _rounded(value))
        console.print(learned)
    if out is not None:
        atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())


def _rounded(value: list | float) -> str:
    """Nested lists of floats, 4 significant digits: [[2.003], [1.998]]."""
    if isinstance(value, list):
        return "[" + ", ".join(_rounded(v) for v in value) + "]"
    return f"{value:.4g}"
