"""`trainkit plot`: the curves of runs as a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trainkit.cli.app import command


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

    from trainkit.console import say
    from trainkit.errors import UserError
    from trainkit.files import check_writable
    from trainkit.listing import find_runs
    from trainkit.plot import FORMATS, plot_runs, plot_sweep
    from trainkit.sweep import is_sweep

    check_writable(out, "--out")
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"--out {out}: the name must end in {', '.join(FORMATS)}.")
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError(
            "plot needs matplotlib, which trainkit installs as its `plot` extra: pip install "
            "'trainkit[plot]' (from a clone: pip install -e '.[plot]')."
        )
    if len(runs) == 1 and is_sweep(runs[0]):  # a sweep: its metric against each parameter
        drawn = plot_sweep(runs[0], out)
        say(f"{', '.join(drawn)} of sweep {runs[0]}: {out}")
        return
    found = []
    for path in runs:
        inside = find_runs(path) if path.is_dir() else []
        if not inside:
            raise UserError(f"plot: {path} is not a run directory and holds none.")
        found.extend(inside)
    drawn = plot_runs(list(dict.fromkeys(found)), metrics, out)
    say(f"{', '.join(drawn)} of {len(found)} run{'s' * (len(found) != 1)}: {out}")
