"""Config keys that were renamed, so that every older config file and stored run works.

A key's name says what it holds; where an earlier name misled, the key got a better
one. The old name is still accepted: in a file or on the command line, with a warning
naming the new one; in a config stored with a run (which the user did not write),
silently. Setting both names at once is an error, since one would silently lose.
"""

from __future__ import annotations

from typing import Any

from trainkit.console import warn
from trainkit.errors import UserError

RENAMED = {
    "checkpoint.root": "checkpoint.runs_dir",  # it holds whole runs, not checkpoints
    "trainer.eval_every": "trainer.eval_every_epochs",  # it counts epochs, unlike *_steps
    "model.num_classes": "model.num_outputs",  # it also counts regression outputs
}


def rename_keys(raw: dict[str, Any], source: str | None) -> dict[str, Any]:
    """`raw` with every old key under its new name, in place; `source` names where the
    keys came from for the warning (None: a stored config, renamed without a word)."""
    for old, new in RENAMED.items():
        section, old_key = old.split(".")
        new_key = new.split(".")[1]
        values = raw.get(section)
        if not isinstance(values, dict) or old_key not in values:
            continue
        if new_key in values:
            raise UserError(
                f"{source or 'the config'} sets both {old} and {new}, two names of one key "
                f"({old} is the old one): keep only {new}."
            )
        values[new_key] = values.pop(old_key)
        if source is not None:
            warn(f"{source}: {old} is now called {new}; it was read as {new}.")
    return raw


def renamed_key(key: str, option: str) -> str:
    """A dotted key of --set/--unset under its current name (with a warning if it was
    an old one); `option` is the option as given, for the warning."""
    new = RENAMED.get(key.strip())
    if new is None:
        return key
    warn(f"{option}: {key.strip()} is now called {new}; it was read as {new}.")
    return new
