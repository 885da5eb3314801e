"""`trainkit runs` and `trainkit plot`: the runs under a folder, as a table and as curves."""

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
    """List runs: status, progress, best score, test accuracy, time.

    A sweep is one row; `trainkit runs SWEEP_DIR` lists its trials.
    """
    from trainkit.console import clock, print_line
    from trainkit.errors import UserError
    from trainkit.reports.runs_table import list_runs
    from trainkit.sweep.results import TRIALS_FILE, results_table

    if not root.is_dir():
        raise UserError(f"runs: {root} is not a folder; pass the folder that holds your runs.")
    if not as_json and (root / TRIALS_FILE).is_file():  # a sweep: its trials, best first
        for line in results_table(root):
            print_line(line)
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
                f"{run.trials_done}/{run.trials_planned or '?'} trials"
                if run.kind == "sweep"
                else f"{run.epochs_done}/{run.epochs_planned or '?'}",
                best,
                f"{run.test_accuracy:.4f}" if run.test_accuracy is not None else "-",
                clock(run.wall_seconds) if run.wall_seconds is not None else "-",
                (run.started or "-")[5:16].replace("T", " "),
            ]
        )
    sweeps = sum(run.kind == "sweep" for run in found)
    counted = f"{len(found) - sweeps} run{'s' * (len(found) - sweeps != 1)}"
    if sweeps:
        counted += (
            f" and {sweeps} sweep{'s' * (sweeps != 1)} (trainkit runs SWEEP_DIR lists one's trials)"
        )
    print_line(f"{counted} under {root}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(width) if 3 <= i <= 6 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print_line("  ".join(cells).rstrip())


@command()
def plot(
    runs: Annotated[
        list[Path], typer.Argument(help="Run directories, or folders of runs (all runs inside).")
    ],
    out: Annotated[Path, typer.Option(help="The picture: FILE.png, FILE.svg or FILE.pdf.")],
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help="What to draw: loss, accuracy, lr, epoch_time, samples_per_sec... "
            "Repeatable; default: loss, accuracy and lr.",
        ),
    ] = None,
) -> None:
    """Draw the loss, accuracy and learning-rate curves of one or several runs."""
    import importlib.util

    from trainkit.console import print_line
    from trainkit.errors import UserError, missing_extra
    from trainkit.files import check_writable
    from trainkit.reports.plots import FORMATS, plot_runs, plot_sweep
    from trainkit.reports.runs_table import find_runs
    from trainkit.sweep.results import is_sweep
    from trainkit.tracking import attach

    check_writable(out, "--out")
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"--out {out}: the name must end in {', '.join(FORMATS)}.")
    if importlib.util.find_spec("matplotlib") is None:
        raise missing_extra("plot", ["matplotlib"], "plot")
    if len(runs) == 1 and is_sweep(runs[0]):  # a sweep: its metric against each parameter
        drawn = plot_sweep(runs[0], out)
        print_line(f"{', '.join(drawn)} of sweep {runs[0]}: {out}")
        return
    found = []
    for path in runs:
        inside = find_runs(path) if path.is_dir() else []
        if not inside:
            raise UserError(f"plot: {path} is not a run directory and holds none.")
        found.extend(inside)
    found = list(dict.fromkeys(found))
    drawn = plot_runs(found, metrics, out)
    print_line(f"{', '.join(drawn)} of {len(found)} run{'s' * (len(found) != 1)}: {out}")
    for run in found:
        attach(run, "plots", [out])
