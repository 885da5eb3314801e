"""`trainkit train` and `trainkit resume`, in one process or several (torchrun)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from trainkit.cli.app import Nproc, Overrides, Quiet, Unsets, as_arguments, command, command_line
from trainkit.errors import RunFailed, UserError


def _finish(result: Any, quiet: bool) -> None:
    """The run's last line, with the scores it ended on; exit like the process was killed
    by the signal (130, 143) when the run was stopped."""
    from trainkit.console import is_rank_zero, print_line

    if result.status == "interrupted":
        raise typer.Exit(128 + int(result.signal or signal.SIGINT))
    if quiet or not is_rank_zero():
        return
    shown = "  ".join(
        f"{k} {v:.4f}" for k, v in result.metrics.items() if k.startswith(("val/", "test/"))
    )
    epochs = f"{result.epoch} epoch{'s' * (result.epoch != 1)}"
    steps = f"{result.step} step{'s' * (result.step != 1)}"
    print_line(f"{result.status.replace('_', ' ')}: {epochs}, {steps}  {shown}")
    print_line(f"run directory: {result.run_dir}")


@command()
def train(
    config: Annotated[Path, typer.Argument(help="The YAML experiment file.")],
    overrides: Overrides = None,
    unsets: Unsets = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Write the run here instead of <checkpoint.runs_dir>/<name>/<run-id>; if it "
            "holds an unfinished run of this config, continue it.",
        ),
    ] = None,
    quiet: Quiet = False,
    nproc: Nproc = 1,
) -> None:
    """Train a model as the experiment file describes."""
    from trainkit.config.loading import load_config

    # A bad config stops here, before any worker starts.
    loaded = load_config(config, command_line(overrides, unsets))
    if nproc > 1:
        from trainkit.training.relaunch import job_run_dir

        run_dir = run_dir or job_run_dir(loaded)  # a Slurm job's, before the workers start
        extra = ["--run-dir", str(run_dir)] if run_dir else []
        options = as_arguments(overrides, unsets)
        _launch(nproc, ["train", str(config), *options, *extra, *["-q"] * quiet])
        return
    from trainkit.tracking import watchers_for
    from trainkit.training.relaunch import train_or_continue

    _finish(train_or_continue(loaded, run_dir, quiet=quiet, watch=watchers_for), quiet)


@command()
def resume(
    path: Annotated[Path, typer.Argument(help="A run directory, or one checkpoint file in it.")],
    overrides: Overrides = None,
    unsets: Unsets = None,
    quiet: Quiet = False,
    nproc: Nproc = 1,
) -> None:
    """Continue an interrupted run or sweep where it stopped (--set trainer.epochs=N extends)."""
    from trainkit.sweep.results import is_sweep

    if is_sweep(path):
        from trainkit.cli.sweep import run_sweep
        from trainkit.sweep.coordinator import reopen

        if overrides or unsets or nproc > 1:
            raise UserError(
                "resume of a sweep takes no --set, --unset or --nproc: give --set and --unset "
                "to the sweep command (trainkit sweep FILE --dir SWEEP_DIR --set KEY=VALUE), "
                "which continues the sweep with them."
            )
        run_sweep(reopen(path, quiet=quiet), path, quiet=quiet)
        return
    if nproc > 1:
        options = as_arguments(overrides, unsets)
        _launch(nproc, ["resume", str(path), *options, *["-q"] * quiet])
        return
    from trainkit.tracking import watchers_for
    from trainkit.training.resume import resume as resume_run

    _finish(
        resume_run(path, command_line(overrides, unsets), quiet=quiet, watch=watchers_for), quiet
    )


def _launch(nproc: int, command: list[str]) -> None:
    """Run `trainkit COMMAND` in `nproc` local workers under torchrun's elastic agent.

    Rank 0 prints the run's output and any error; the agent's own log is silenced. The
    exit code is rank 0's when it reported an error (2 bad input, 1 failed run), 128 + the
    signal when the launcher was stopped (each worker saves last.pt first), else 1.
    """
    from trainkit.training.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise UserError(
            "--nproc was given to a process that torchrun already started; leave --nproc out "
            "when launching with torchrun (--nproc-per-node sets the number of processes)."
        )
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from trainkit.training.relaunch import OWN_LAUNCH

    logging.disable(logging.ERROR)  # the agent's own log; the workers say what happened
    os.environ[OWN_LAUNCH] = "1"  # its agent's run id is not a job's: see training.relaunch
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "trainkit", *command])
    try:
        run(args)
    except SignalException as stop:
        raise typer.Exit(128 + int(stop.sigval)) from None
    except ChildFailedError as failed:
        main = failed.failures.get(0)
        if main is not None and main.exitcode in (1, 2):  # rank 0 has printed why
            raise typer.Exit(main.exitcode) from None
        rank, failure = failed.get_first_failure()  # the agent stopped the others after it
        if failure.exitcode in (1, 2) and isinstance(failure.message, str):
            error = UserError if failure.exitcode == 2 else RunFailed
            raise error(failure.message) from None  # the first failure's own message, once
        raise RunFailed(
            f"worker {rank} of {nproc} stopped first, with exit code {failure.exitcode}; "
            "its output is above. The checkpoints written so far are kept: trainkit resume "
            f"RUN_DIR --nproc {nproc} continues from the newest."
        ) from None
