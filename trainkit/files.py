"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO

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


def not_a_torch_file(path: Path) -> str | None:
    """What a file is, when its first bytes show it is not one torch.save wrote (a zip
    archive, or a pickle for the legacy format): "a text file", "a JPEG image", ...;
    None when it may be one."""
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError:
        return None
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file of another kind"
    return "a YAML text file" if path.suffix.lower() in (".yaml", ".yml") else "a text file"


_MAGIC = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"\x93NUMPY", "a NumPy array (.npy)"),
    (b'{"__metadata__', "a safetensors file"),
)


def check_writable(path: Path, option: str, *, folder: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written: a folder where a
    file is wanted or the reverse, a file where a parent folder is needed, a read-only
    place. An output folder that does not exist yet is made when writing (like mkdir
    -p); an output file goes into a folder that exists (like cp), so that a typo in its
    folder is caught rather than turned into new folders."""
    from trainkit.errors import UserError

    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; give a folder to write into.")
    if not folder and path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name inside it.")
    for parent in [path, *path.parents] if folder else path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {path}: {parent} is a file, not a folder.")
            if not folder and parent != path.parent:
                raise UserError(
                    f"{option} {path}: the folder {path.parent} does not exist. Create it "
                    "first, or write into a folder that exists."
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{option} {path}: {parent} is not writable.")
            return


class FileLock:
    """An exclusive advisory lock (flock) on a file that exists only while it is held.

    The operating system releases the lock with the process that holds it, however it
    ends. A clean release removes the file, so nothing is left behind; a holder that died
    leaves the file (and what it wrote into it) for the next one to find. Removing a
    lock file races with a process that opened it just before: so a lock is only taken
    on the file that is still at `path` once locked, else tried again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[str] | None = None

    def acquire(self, *, wait: bool) -> bool:
        """Take the lock (waiting for it when `wait`); False if another process holds
        it. Holding it, `self.handle` is the file, open for reading and writing."""
        while True:
            handle = self.path.open("a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                handle.close()
                return False
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(handle.fileno()).st_ino:
                self.handle = handle
                return True
            handle.close()  # its holder removed it as we waited: lock the one there now

    @staticmethod
    def is_held(path: Path) -> bool:
        """Whether a process holds the lock at `path`, asked without creating the file
        (a shared lock taken and dropped at once; a holder's exclusive one refuses it)."""
        try:
            handle = path.open("r")
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False

    def read(self) -> str:
        """What the lock file holds (a holder's name), read without locking it."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self.handle is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.handle.close()  # closing drops the flock
        self.handle = None


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
