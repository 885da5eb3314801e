"""The two ways a command fails on purpose, each shown as one paragraph without a traceback.

`UserError` (exit 2): the user asked for something that cannot work, such as a bad
config, a missing dataset or an unreadable checkpoint; nothing has been written.
`RunFailed` (exit 1): a run that started could not go on, such as a non-finite loss or a
full disk; every checkpoint written before is intact and the message says how to go on.
Any other exception is a bug or a crash and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, explained in words that say how to fix it."""

    exit_code = 2


class RunFailed(Exception):
    """A started run had to stop; its earlier checkpoints are kept."""

    exit_code = 1


SHOWN = 200  # characters of the user's input that an error message repeats at most


def shown(value: object) -> str:
    """User input as an error message repeats it: a YAML file that expands to megabytes
    must not become a megabyte-long message."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text):,} characters)"


def write_failed(what: str, run_dir: object, exc: BaseException, resumable: bool) -> RunFailed:
    """One paragraph for a write that failed in a started run: a full disk (where
    torch.save raises RuntimeError, not OSError), a lost mount, a revoked permission."""
    import shutil

    reason = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [""])[0]
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
