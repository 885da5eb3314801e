"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _publish(path: Path, make: Callable[[Path], object]) -> None:
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

    _publish(path, make)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_copy(source: Path, target: Path) -> None:
    """Give `target` the content of `source`: a hard link where the filesystem has them
    (no second write of a large file), else a copy; either way replaced atomically.

    Safe because files here are never modified in place, only replaced by rename.
    """
    try:
        _publish(target, lambda tmp: os.link(source, tmp))
    except OSError:
        with source.open("rb") as original:
            atomic_write(target, lambda handle: shutil.copyfileobj(original, handle))


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
