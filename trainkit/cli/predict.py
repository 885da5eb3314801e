"""`trainkit predict`: classify (or regress) new files with a trained model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from trainkit.cli.app import CheckpointPath, command, stdout


class TTA(str, Enum):
    none = "none"
    flip = "flip"


@command()
def predict(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Image files, or folders searched for images; for a model trained on a "
            "table, .csv, .tsv or .parquet tables with its columns; for another model of "
            "feature rows, .csv, .npy or .pt files of rows."
        ),
    ],
    ckpt: CheckpointPath,
    out: Annotated[
        Path | None,
        typer.Option(help="Write every row here: FILE.csv, FILE.json or FILE.jsonl."),
    ] = None,
    topk: Annotated[int, typer.Option(min=1, help="Classes to list per input.")] = 5,
    device: Annotated[
        str, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
    ] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Inputs per batch; default: the run's evaluation batch size."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Processes decoding images; default: one per core, up to 4."),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Exit 0 even when some files could not be read.")
    ] = False,
    show: Annotated[int, typer.Option(min=0, help="Rows shown in the table.")] = 20,
    tta: Annotated[
        TTA | None,
        typer.Option(
            help="Test-time augmentation: flip averages each image with its mirror image; "
            "default: the run's trainer.tta."
        ),
    ] = None,
) -> None:
    """Predict the class (or value) of new inputs with a trained model."""
    import os

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
    from rich.table import Table

    from trainkit.config.loading import CommandLine
    from trainkit.console import stderr, warn
    from trainkit.errors import RunFailed, UserError
    from trainkit.inference.predict import check_output, collect, predict, write
    from trainkit.inference.trained_model import load_trained_model

    check_output(out)
    changes = CommandLine([f"trainer.tta={tta.value}"]) if tta is not None else None
    trained = load_trained_model(ckpt, device, changes)
    files = collect(trained, inputs)
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if trained.spec.image and len(files) > 64 else 0
    progress = Progress(
        "predicting",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )
    task = progress.add_task("", total=len(files) if trained.spec.image else None)
    with progress:
        result = predict(
            trained,
            files,
            topk=topk,
            batch_size=batch_size,
            workers=workers,
            advance=lambda n: progress.advance(task, n),
        )

    if not result.rows:  # nothing to show: every input was unreadable
        listed = "\n  ".join(result.skipped)
        raise UserError(f"predict: none of the {len(files)} inputs could be read:\n  {listed}")
    regression = trained.objective.classify is None
    table = Table(title=f"{len(result.rows)} predictions by {trained.path}")
    table.add_column("input", overflow="fold")
    table.add_column("value" if regression else f"top {topk} ({result.score})")
    for row in result.rows[:show]:
        if regression:
            table.add_row(row.input, ", ".join(f"{v:.4g}" for v in row.values))
        else:
            table.add_row(row.input, "  ".join(f"{name} {value:.3f}" for name, value in row.top))
    console = stdout()
    if show:
        console.print(table)
    if 0 < show < len(result.rows):
        console.print(
            f"... and {len(result.rows) - show} more"
            + ("" if out else "; --out FILE writes every row")
        )
    rate = len(result.rows) / max(result.seconds, 1e-9)
    stderr.print(
        f"{len(result.rows)} inputs in {result.seconds:.2f} s ({rate:,.0f}/s) on {trained.device}"
        + (f"; written to {out}" if out else ""),
        highlight=False,
    )
    if out is not None:
        write(result, out)
    if result.skipped:
        listed = "\n  ".join(result.skipped)
        message = f"{len(result.skipped)} file(s) could not be read and were skipped:\n  {listed}"
        if skip_bad:
            warn(message)
        else:
            raise RunFailed(message + "\n(--skip-bad accepts this and exits 0.)")
