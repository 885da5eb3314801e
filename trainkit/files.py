"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# What torch.load(weights_only=True) raises for a file that is not a whole torch file:
# a foreign pickle, random bytes, an empty, cut-short or corrupted file, a folder. Its
# unpickler reports damage in all of these types (3,000 damaged files tried, torch
# 2.14); wrapped around torch.load alone, they mean the file, never trainkit's code.
# Anything else (MemoryError, ImportError, AttributeError, ...) is left to be a bug.
UNREADABLE_TORCH_FILE = (
    pickle.UnpicklingError,
    EOFError,
    OSError,
    RuntimeError,
    ValueError,
    struct.error,
    IndexError,
    KeyError,
    AssertionError,
    TypeError,
)


def publish(path: Path, make: Callable[[Path], object]) -> None:
    """Let `make` create the new content under a temporary name, then rename it to `path`.

    A crash, a kill or a full disk at any moment leaves the previous `path` untouched
    (and at worst a stray temporary file, removed here when Python still runs).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        make(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` through a temporary file in the same folder, fsynced before the rename."""

    def make(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())

    publish(path, make)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_copy(source: Path, target: Path) -> None:
    """Give `target` the content of `source`: a hard link where the filesystem has them
    (no second write of a large file), else a copy; either way replaced atomically.

    Safe because files here are never modified in place, only replaced by rename.
    """
    try:
        publish(target, lambda tmp: os.link(source, tmp))
    except OSError:
        with source.open("rb") as original:
            atomic_write(target, lambda handle: shutil.copyfileobj(original, handle))


def check_writable(path: Path, option: str, *, folder: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written: a folder where a
    file is wanted or the reverse, a file where a parent folder is needed, a read-only
    place. Folders that do not exist yet are fine (they are made when writing)."""
    from trainkit.errors import UserError

    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; give a folder to write into.")
    if not folder and path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name inside it.")
    for parent in [path, *path.parents] if folder else path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {path}: {parent} is a file, not a folder.")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{option} {path}: {parent} is not writable.")
            return


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (not supported everywhere, hence best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
