"""The Typer app, the way every command fails, and the options several commands share.

Only Typer is imported up front: pydantic, rich and the registries load inside the
commands that use them, and torch only in the commands that train or run a model, so
`--help` answers at once and `validate`, `ls` and `schema` never load torch.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO, TypeVar

import typer

from trainkit.errors import RunFailed, UserError, first_line, plain

if TYPE_CHECKING:
    from rich.console import Console

    from trainkit.config.loading import CommandLine

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train PyTorch models from a YAML experiment file: train, eval, resume, predict, export.",
)


class ReaderMayLeave:
    """Standard output for a command whose reader may stop reading (`trainkit ls | head`).

    A closed pipe is not an error of the command: from the first write that finds it
    closed, stdout is pointed at /dev/null and the command goes on with its work (a run
    trains to the end, `predict --out` still writes its file) and exits with the code
    of that work. Every command line print goes through `sys.stdout`, so wrapping it
    once covers print(), rich and Typer alike.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_left()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_left()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _reader_left(self) -> None:
        """Point the stream at /dev/null, so later writes (and the flush at exit) go
        nowhere; what was buffered for the closed pipe is dropped."""
        devnull = open(os.devnull, "w")  # noqa: SIM115 (it lives as long as the process)
        try:
            os.dup2(devnull.fileno(), self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            self._stream = devnull


def _print_version(wanted: bool) -> None:
    if wanted:
        from trainkit import __version__

        typer.echo(f"trainkit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options that come before the command."""


def stdout() -> Console:
    from rich.console import Console

    return Console(soft_wrap=True)


F = TypeVar("F", bound=Callable[..., Any])

Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config value (dotted key, YAML value), e.g. --set optimizer.lr=0.01. "
        "Repeatable; applied after --unset.",
    ),
]
Unsets = Annotated[
    list[str] | None,
    typer.Option(
        "--unset",
        metavar="KEY",
        help="Remove a key from the config, so it takes its default, e.g. --unset "
        "loss.label_smoothing. Repeatable.",
    ),
]


def command_line(sets: list[str] | None, unsets: list[str] | None) -> CommandLine:
    from trainkit.config.loading import CommandLine

    return CommandLine(list(sets or []), list(unsets or []))


def as_arguments(sets: list[str] | None, unsets: list[str] | None) -> list[str]:
    """The --set and --unset options again, for a command relaunched under torchrun."""
    return [
        *(arg for key in unsets or [] for arg in ("--unset", key)),
        *(arg for item in sets or [] for arg in ("--set", item)),
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
CheckpointPath = Annotated[
    Path, typer.Option("--ckpt", help="Checkpoint file (a run directory means its best.pt).")
]
Plugins = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin", metavar="MODULE", help="Also load this plugin module's components. Repeatable."
    ),
]


def command(name: str | None = None) -> Callable[[F], F]:
    """Register a command that ends in one of four ways besides success: a UserError or
    RunFailed as one paragraph and its exit code (2, 1); a Ctrl-C that is not turned
    into a graceful stop (a second one, or one before a run starts) at once, with exit
    code 130; any other exception, a bug, with exit code 1 and its traceback in a file
    whose path is printed, so that it never looks like the user's mistake."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except (UserError, RunFailed) as exc:
                _report(str(exc))
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:  # Ctrl-C twice, or once before training started
                _report(
                    "stopped at once by Ctrl-C. Checkpoints are written whole or not at all, "
                    "so any already written are intact: trainkit resume RUN_DIR continues "
                    "from the newest."
                )
                raise typer.Exit(130) from None
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise  # the command line's own ways out
            except Exception as exc:
                _report(_bug_report(exc))
                raise typer.Exit(1) from None

        app.command(name)(run)
        return function

    return decorate


def _bug_report(exc: Exception) -> str:
    """The paragraph for an exception trainkit did not expect, its traceback kept in a
    file (the checkpoints written so far are intact, as for any crash)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"trainkit-crash-{stamp}-{os.getpid()}.txt"
    try:
        path.write_text("".join(traceback.format_exception(exc)))
        kept = f"the traceback is in {path}"
    except OSError:
        kept = "the traceback could not be written to a file: " + "".join(
            traceback.format_exception(exc)
        )
    return (
        f"trainkit stopped on an unexpected {type(exc).__name__}: {first_line(exc, 300)}. "
        f"This is a bug in trainkit or in a plugin's code, not a problem with the input; "
        f"{kept}. Checkpoints written before are intact. Please report it with that "
        "traceback."
    )


def _report(message: str) -> None:
    """An error, once (rank 0 of a multi-process run), without terminal escape codes
    that a library put in its message."""
    from rich.text import Text

    from trainkit.console import is_rank_zero, stderr

    message = plain(message)
    if is_rank_zero():
        stderr.print(Text.assemble(("error: ", "bold red"), message))
    _leave_for_torchrun(message)


def _leave_for_torchrun(message: str) -> None:
    """In a torchrun worker, write the error where the agent reads why a worker failed."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        Path(path).write_text(json.dumps({"message": message, "timestamp": int(time.time())}))
