"""Importing components: the built-in modules, and the user's plugin modules by name.

A plugin is an importable module name; the current directory and the config file's
folder are searched too, so a `my_models.py` beside the config works. Those folders are
put in front of `sys.path` only while the plugins import, then moved to its end (where
a plugin's own later imports still find its neighbours): a `yaml.py` or `signal.py`
beside a config must never shadow the library of that name for the rest of the run.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

from trainkit.errors import UserError, first_line

_BUILTIN_MODULES = (
    "trainkit.models",
    "trainkit.data",
    "trainkit.losses",
    "trainkit.optim",
)


def load_components(
    plugins: list[str] | tuple[str, ...] = (),
    search: Path | None = None,
    origins: dict[str, str] | None = None,
) -> None:
    """Import the built-in component modules and the user's plugin modules.

    `search` is the config file's folder, searched before the current directory.
    `origins` (module -> the folder it was imported from, as `plugin_origins` recorded
    it in a checkpoint) comes before both, so a run's plugins load from any directory.
    """
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    origins = origins or {}
    folders = [*origins.values(), *([str(search.resolve())] if search else []), str(Path.cwd())]
    with _searched_first(folders):
        for module in plugins:
            _import_plugin(module, origins.get(module))


@contextlib.contextmanager
def _searched_first(folders: list[str]) -> Iterator[None]:
    """`folders` at the front of sys.path inside the block, and at its end after it."""
    added = [folder for folder in dict.fromkeys(folders) if folder not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            sys.path.remove(folder)
        sys.path.extend(added)


def _import_plugin(module: str, recorded: str | None) -> None:
    try:
        importlib.import_module(module)
    except (ImportError, SyntaxError) as exc:
        where = (
            f" The run recorded it as loaded from {recorded}, which "
            f"{'no longer holds it' if Path(recorded).is_dir() else 'no longer exists'}; "
            "put the module back there or on PYTHONPATH."
            if recorded
            else " A plugin is a Python module name importable from the current directory, "
            "the config file's folder or PYTHONPATH, e.g. `plugins: [my_models]` for a "
            "my_models.py beside the config."
        )
        raise UserError(
            f"plugins: cannot import {module!r} ({first_line(exc, 300)}).{where}"
        ) from None
    except UserError:
        raise
    except Exception as exc:  # the plugin's own code failed as it was imported
        raise UserError(
            f"plugins: importing {module!r} raised {type(exc).__name__}: "
            f"{first_line(exc, 300)}. Fix the plugin module."
        ) from None


def plugin_origins(plugins: list[str]) -> dict[str, str]:
    """The folder each imported plugin module was loaded from: the sys.path entry that
    holds it (for `pkg.mod`, the folder above `pkg`)."""
    origins = {}
    for name in plugins:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if file is None:
            continue
        folder = Path(file).resolve().parent
        depth = name.count(".") + (Path(file).name == "__init__.py")
        for _ in range(depth):
            folder = folder.parent
        origins[name] = str(folder)
    return origins
