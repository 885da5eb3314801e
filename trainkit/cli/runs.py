"""`trainkit runs`: a table of the runs under a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from trainkit.cli.app import command


@command()
def runs(
    root: Annotated[
        Path, typer.Argument(help="Folder to look through (a run directory counts too).")
    ] = Path("checkpoints"),
    name: Annotated[
        str | None,
        typer.Option("--name", help="Only runs whose name matches, e.g. --name 'mnist_*'."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON, one object per run.")
    ] = False,
) -> None:
    """List runs: status, progress, best score, test accuracy, time."""
    from trainkit.console import clock, say
    from trainkit.errors import UserError
    from trainkit.listing import list_runs
    from trainkit.sweep import TRIALS_FILE, results_table

    if not root.is_dir():
        raise UserError(f"runs: {root} is not a folder; pass the folder that holds your runs.")
    if not as_json and (root / TRIALS_FILE).is_file():  # a sweep: its trials, best first
        for line in results_table(root):
            say(line)
        return
    found = list_runs(root, name)
    if as_json:
        typer.echo(json.dumps([run.as_dict() for run in found], indent=2))
        return
    monitors = {run.monitor for run in found if run.best is not None}
    shared = monitors.pop() if len(monitors) == 1 else None
    header = ["name", "run", "status", "epochs", f"best {shared or ''}".strip(), "test acc"]
    rows = [[*header, "time", "started"]]
    for run in found:
        best = "-"
        if run.best is not None:
            best = f"{run.best:.4f}" + ("" if shared else f" {run.monitor}")
        rows.append(
            [
                run.name,
                run.run_id,
                run.status.replace("_", "-"),
                f"{run.epochs_done}/{run.epochs_planned or '?'}",
                best,
                f"{run.test_accuracy:.4f}" if run.test_accuracy is not None else "-",
                clock(run.wall_seconds) if run.wall_seconds is not None else "-",
                (run.started or "-")[5:16].replace("T", " "),
            ]
        )
    say(f"{len(found)} run{'s' * (len(found) != 1)} under {root}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(width) if 3 <= i <= 6 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        say("  ".join(cells).rstrip())
