"""The `trainkit` command: a thin Typer shell over `trainkit.recipe` and `trainkit.config`.

Nothing here trains or validates by itself. Only Typer is imported up front: pydantic,
rich and the registries load inside the commands that use them, and torch only inside
train, resume and eval, so `--help` answers at once and `validate`, `ls` and `schema`
never load torch.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer

from trainkit.errors import RunFailed, UserError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from trainkit.registry import Entry

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train PyTorch models from a YAML experiment file: train, eval, resume.",
)


def _stdout() -> Console:
    from rich.console import Console

    return Console(soft_wrap=True)


F = TypeVar("F", bound=Callable[..., Any])

Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config value (dotted key, YAML value), e.g. --set optimizer.lr=0.01. "
        "Repeatable.",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only warnings and errors.")]
Nproc = Annotated[
    int,
    typer.Option(
        "--nproc",
        min=1,
        help="Train data-parallel in N local processes, started by torch.distributed.run "
        "(torchrun). For several machines, run torchrun -m trainkit yourself.",
    ),
]
Plugins = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin", metavar="MODULE", help="Also load this plugin module's components. Repeatable."
    ),
]


class SplitName(str, Enum):
    test = "test"
    val = "val"


class Kind(str, Enum):
    models = "models"
    datasets = "datasets"
    optimizers = "optimizers"
    schedulers = "schedulers"
    losses = "losses"


def command(name: str | None = None) -> Callable[[F], F]:
    """Register a command whose UserError/RunFailed end as one paragraph and an exit code."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except (UserError, RunFailed) as exc:
                from rich.text import Text

                from trainkit.console import speaks, stderr

                if speaks():
                    stderr.print(Text.assemble(("error: ", "bold red"), str(exc)))
                _leave_for_torchrun(str(exc))
                raise typer.Exit(exc.exit_code) from None

        app.command(name)(run)
        return function

    return decorate


def _leave_for_torchrun(message: str) -> None:
    """In a torchrun worker, write the error where the agent reads why a worker failed."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        Path(path).write_text(json.dumps({"message": message, "timestamp": int(time.time())}))


def _finish(result: Any) -> None:
    """Exit like the process was killed by the signal (130, 143) when a run was stopped."""
    from trainkit.console import speaks, stderr

    if result.status == "interrupted":
        raise typer.Exit(128 + int(result.signal or signal.SIGINT))
    if not speaks():
        return
    shown = "  ".join(
        f"{k} {v:.4f}" for k, v in result.metrics.items() if k.startswith(("val/", "test/"))
    )
    stderr.print(
        f"{result.status}: {result.epoch} epochs, {result.step} steps  {shown}", highlight=False
    )
    stderr.print(f"run directory: {result.run_dir}", highlight=False)


@command()
def train(
    config: Annotated[Path, typer.Argument(help="The YAML experiment file.")],
    overrides: Overrides = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir", help="Write the run here instead of checkpoints/<name>/<run-id>."
        ),
    ] = None,
    quiet: Quiet = False,
    nproc: Nproc = 1,
) -> None:
    """Train a model as the experiment file describes."""
    from trainkit.config import load_config

    loaded = load_config(config, overrides)  # a bad config stops here, before any worker
    if nproc > 1:
        extra = ["--run-dir", str(run_dir)] if run_dir else []
        _launch(nproc, ["train", str(config), *_set_args(overrides), *extra, *["-q"] * quiet])
        return
    from trainkit import recipe

    _finish(recipe.train(loaded, run_dir, quiet))


@command()
def resume(
    path: Annotated[Path, typer.Argument(help="A run directory, or one checkpoint file in it.")],
    overrides: Overrides = None,
    quiet: Quiet = False,
    nproc: Nproc = 1,
) -> None:
    """Continue an interrupted run exactly where it stopped (--set trainer.epochs=N to extend)."""
    if nproc > 1:
        _launch(nproc, ["resume", str(path), *_set_args(overrides), *["-q"] * quiet])
        return
    from trainkit import recipe

    _finish(recipe.resume(path, overrides, quiet))


def _set_args(overrides: list[str] | None) -> list[str]:
    return [arg for override in overrides or [] for arg in ("--set", override)]


def _launch(nproc: int, command: list[str]) -> None:
    """Run `trainkit COMMAND` in `nproc` local workers under torchrun's elastic agent.

    Rank 0 prints the run's output and any error; the agent's own log is silenced. The
    exit code is rank 0's when it reported an error (2 bad input, 1 failed run), 128 + the
    signal when the launcher was stopped (each worker saves last.pt first), else 1.
    """
    from trainkit.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise UserError(
            "--nproc was given to a process that torchrun already started; leave --nproc out "
            "when launching with torchrun (--nproc-per-node sets the number of processes)."
        )
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.disable(logging.ERROR)  # the agent's own log; the workers say what happened
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


@command("eval")
def eval_(
    ckpt: Annotated[
        Path, typer.Option("--ckpt", help="Checkpoint file (a run directory means its best.pt).")
    ],
    split: Annotated[SplitName, typer.Option(help="Which split to score.")] = SplitName.test,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
    overrides: Overrides = None,
) -> None:
    """Score a checkpoint on the test (or validation) split."""
    from rich.table import Table

    from trainkit import recipe
    from trainkit.files import atomic_write_bytes

    result = recipe.evaluate_checkpoint(ckpt, split.value, overrides)
    stdout = _stdout()
    stdout.print(f"{result['checkpoint']} (epoch {result['epoch']}, step {result['step']})")
    summary = Table(title=f"{split.value} split")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("loss", f"{result['loss']:.4f}")
    if result["accuracy"] is not None:
        summary.add_row("accuracy", f"{result['accuracy']:.4f}")
    summary.add_row("samples", str(result["samples"]))
    stdout.print(summary)
    if result["per_class_accuracy"] is not None:
        classes = Table(title="per-class accuracy")
        classes.add_column("class")
        classes.add_column("accuracy", justify="right")
        for name, accuracy in zip(
            result["class_names"], result["per_class_accuracy"], strict=False
        ):
            classes.add_row(name, "-" if accuracy is None else f"{accuracy:.4f}")
        stdout.print(classes)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())


@command()
def validate(
    config: Annotated[Path, typer.Argument(help="The YAML experiment file.")],
    overrides: Overrides = None,
) -> None:
    """Check an experiment file and print it with every default filled in."""
    from trainkit.config import load_config, to_yaml

    typer.echo(to_yaml(load_config(config, overrides)), nl=False)


def _type_name(annotation: Any) -> str:
    """Types as a user writes them in YAML terms: `int | None`, `'relu' | 'tanh'`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _describe_params(entry: Entry) -> Text:
    from rich.text import Text

    text = Text()
    for name, field in entry.params.model_fields.items():
        default = (
            "required"
            if field.is_required()
            else f"= {field.get_default(call_default_factory=True)!r}"
        )
        text.append(f"{name}", style="bold")
        text.append(f": {_type_name(field.annotation)} {default}\n")
        if field.description:
            text.append(f"  {field.description}\n", style="dim")
    text.rstrip()
    return text


@command()
def ls(
    kind: Annotated[
        Kind | None, typer.Argument(help="Which components; all when left out.")
    ] = None,
    plugins: Plugins = None,
) -> None:
    """List the registered components and their parameters."""
    from rich.table import Table

    from trainkit.registry import REGISTRIES, load_components

    stdout = _stdout()
    load_components(plugins or [])
    for key in [kind.value] if kind else list(REGISTRIES):
        table = Table(title=key, show_lines=True)
        table.add_column("name", style="bold")
        table.add_column("what it is")
        table.add_column("parameters")
        for entry in REGISTRIES[key]:
            table.add_row(entry.name, entry.summary, _describe_params(entry))
        stdout.print(table)


@command()
def schema(plugins: Plugins = None) -> None:
    """Print the JSON schema of experiment files (for editor completion)."""
    from trainkit.config import config_model
    from trainkit.registry import load_components

    load_components(plugins or [])
    typer.echo(json.dumps(config_model().model_json_schema(), indent=2))


def main() -> None:
    """The `trainkit` script. After a command that loaded torch, the process ends at once.

    Python's orderly teardown of torch's modules takes 1.5 s here (`python -c "import
    torch"` runs 4.1 s, 2.5 s when it ends with os._exit), a fifth of a quick MNIST run.
    By the time a command returns, everything it wrote is closed and on disk, so only
    the console streams are left to flush. A crash still ends the normal way.
    """
    try:
        app()
    except SystemExit as end:
        if "torch" not in sys.modules:
            raise
        code = end.code if isinstance(end.code, int) else int(end.code is not None)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
