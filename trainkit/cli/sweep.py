"""`trainkit sweep`: a hyperparameter search, trials as ordinary runs."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trainkit.cli.app import Overrides, Quiet, Unsets, command, command_line

if TYPE_CHECKING:
    from trainkit.sweep.coordinator import Sweep


@command()
def sweep(
    file: Annotated[Path, typer.Argument(help="The sweep file (base, metric, space, ...).")],
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="The sweep's folder; default: checkpoints/<name>/."),
    ] = None,
    overrides: Overrides = None,
    unsets: Unsets = None,
    quiet: Quiet = False,
) -> None:
    """Search hyperparameters with Optuna: parallel trials, pruning, resumable.

    --set and --unset change the base config of every trial (data.root=DIR, say).
    """
    from trainkit.sweep.coordinator import start

    options = command_line(overrides, unsets)
    run_sweep(*start(file, directory, options, quiet=quiet), quiet=quiet)


def run_sweep(sweep: Sweep, directory: Path, *, quiet: bool) -> None:
    """Run trials until done, stopped or given up on; print the table and the tally."""
    from trainkit.config.loading import load_config
    from trainkit.console import print_line
    from trainkit.errors import RunFailed
    from trainkit.sweep.results import (
        BASE_FILE,
        BEST_FILE,
        TRIALS_FILE,
        results_table,
        tally,
        write_results,
    )
    from trainkit.tracking import sweep_tracking
    from trainkit.training.signals import stop_on_signals

    base = load_config(directory / BASE_FILE)
    try:
        with sweep_tracking(base, directory, sweep.spec.name) as tracked:
            with stop_on_signals() as received:
                end = sweep.run(received)
            tracked.status = (
                "KILLED" if end.signal is not None else "FAILED" if end.gave_up else "FINISHED"
            )
    finally:
        sweep.lock.release()
    if end.signal is not None:
        if not quiet:
            print_line(
                f"sweep stopped by {signal.Signals(end.signal).name}; its trials stopped with "
                f"it and will resume. Continue with: trainkit resume {directory}"
            )
        raise typer.Exit(128 + int(end.signal))
    write_results(sweep.study, sweep.spec, directory)
    counts = tally(directory)
    done = ", ".join(
        f"{counts[state]} {word}"
        for state, word in (("complete", "completed"), ("pruned", "pruned"), ("fail", "failed"))
        if counts.get(state)
    )
    if end.gave_up is not None:
        raise RunFailed(
            f"sweep {sweep.spec.name} stopped: its first trials all failed with the same "
            f"error, so every trial would. The error: {end.gave_up} Fix the cause and run the "
            f"same command again (or trainkit resume {directory}): failed trials are tried "
            f"again. Their output: {directory / 'logs'}."
        )
    if not counts.get("complete"):
        raise RunFailed(
            f"sweep {sweep.spec.name} ended with no completed trial ({done}); see "
            f"{directory / TRIALS_FILE} and the trials' output in {directory / 'logs'}. "
            "Running it again tries the failed trials again."
        )
    if not quiet:
        for line in results_table(directory):
            print_line(line)
        print_line(
            f"{done}. All trials: {directory / TRIALS_FILE}; best config: {directory / BEST_FILE}"
        )
