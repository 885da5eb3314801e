"""`trainkit sweep`: a hyperparameter search, trials as ordinary runs."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trainkit.cli.app import Quiet, command

if TYPE_CHECKING:
    from trainkit.sweep.coordinator import Sweep


@command()
def sweep(
    file: Annotated[Path, typer.Argument(help="The sweep file (base, metric, space, ...).")],
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="The sweep's folder; default: checkpoints/<name>/."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Search hyperparameters with Optuna: parallel trials, pruning, resumable."""
    from trainkit.sweep.coordinator import start

    run_sweep(*start(file, directory, quiet=quiet), quiet=quiet)


def run_sweep(sweep: Sweep, directory: Path, *, quiet: bool) -> None:
    """Run trials until done or stopped; print the table, or how to continue."""
    from trainkit.console import print_line
    from trainkit.sweep.results import BEST_FILE, TRIALS_FILE, results_table, write_results
    from trainkit.training.signals import stop_on_signals

    try:
        with stop_on_signals() as received:
            stopped = sweep.run(received)
    finally:
        sweep.lock.release()
    if stopped is not None:
        if not quiet:
            print_line(
                f"sweep stopped by {signal.Signals(stopped).name}; its trials stopped with it "
                f"and will resume. Continue with: trainkit resume {directory}"
            )
        raise typer.Exit(128 + int(stopped))
    write_results(sweep.study, sweep.spec, directory)
    if not quiet:
        for line in results_table(directory):
            print_line(line)
        print_line(f"all trials: {directory / TRIALS_FILE}; best config: {directory / BEST_FILE}")
