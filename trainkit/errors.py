"""The two ways a command fails on purpose, each shown as one paragraph without a traceback.

`UserError` (exit 2): the user asked for something that cannot work, such as a bad
config, a missing dataset or an unreadable checkpoint; nothing has been written.
`RunFailed` (exit 1): a run that started could not go on, such as a non-finite loss or a
full disk; every checkpoint written before is intact and the message says how to go on.
Any other exception is a bug: the command line keeps its traceback in a file and says
so (see `trainkit.cli.app`), so that a bug never looks like the user's fault.
"""

from __future__ import annotations

import re


class UserError(Exception):
    """A problem with the user's input, explained in words that say how to fix it."""

    exit_code = 2


class RunFailed(Exception):
    """A started run had to stop; its earlier checkpoints are kept."""

    exit_code = 1


SHOWN = 200  # characters of the user's input that an error message repeats at most
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def shown(value: object) -> str:
    """User input as an error message repeats it: a YAML file that expands to megabytes
    must not become a megabyte-long message."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text):,} characters)"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), as
    an error paragraph quotes a library's reason."""
    lines = plain(str(exc)).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


def plain(text: str) -> str:
    """`text` without the terminal escape codes (colours) some libraries put in messages."""
    return _ESCAPES.sub("", text)


def missing_extra(what: str, packages: list[str], extra: str) -> UserError:
    """The error for a command or option whose optional packages are not installed."""
    return UserError(
        f"{what} needs {', '.join(packages)}, which trainkit installs as its `{extra}` extra: "
        f"pip install 'trainkit[{extra}]' (from a clone: pip install -e '.[{extra}]')."
    )


def write_failed(what: str, run_dir: object, exc: BaseException, *, resumable: bool) -> RunFailed:
    """One paragraph for a write that failed in a started run: a full disk (where
    torch.save raises RuntimeError, not OSError), a lost mount, a revoked permission."""
    import shutil

    reason = getattr(exc, "strerror", None) or first_line(exc, limit=10_000)
    try:
        free = f"; {shutil.disk_usage(str(run_dir)).free / 2**20:,.1f} MiB free there"
    except OSError:
        free = ""
    kept = (
        f"The checkpoints written before are intact; free some space and continue with "
        f"`trainkit resume {run_dir}`."
        if resumable
        else "No checkpoint had been written yet, so nothing was saved; free some space "
        "and start the run again."
    )
    return RunFailed(f"could not write {what} in {run_dir} ({shown(reason)}{free}). {kept}")
