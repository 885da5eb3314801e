"""Counting the history rows W&B's offline mode has written to disk.

W&B's service process writes an offline run's records to its .wandb file every few
seconds, not when `log` returns, and a killed training process can take the unwritten
ones with it. So a resumed offline run asks the files, not tracking.json, how many rows
are there. The file is a ":W&B" header, then protocol-buffer records (wandb ships the
message classes) in LevelDB's log framing: 32 KiB blocks, each piece behind a 7-byte
header of checksum, length and kind, a record possibly cut across blocks. Anything this
reader does not recognise makes the count unknown (None), never a crash.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7  # the file's header (":W&B", magic, version) and each piece's are 7 bytes
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class UnknownFormat(Exception):
    """A .wandb file this reader cannot read (another W&B version's, or damaged)."""


def records(path: Path) -> Iterator[Any]:
    """The records of one .wandb file, in order; a torn last record is left out."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise UnknownFormat(f"{path} does not start like a W&B file")
    pending, position = b"", HEADER
    while position + HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < HEADER:  # a block's tail too short for a header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if kind == 0 or kind > LAST or position + HEADER + length > len(data):
            return  # the end: zero padding, or a piece cut off by a kill
        pending += data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except DecodeError as exc:
                raise UnknownFormat(f"{path}: {exc}") from None
            yield record
            pending = b""


def session_files(run_dir: Path, run_id: str) -> list[Path]:
    """Each offline session's file of W&B run `run_id` (a folder name may end in -1...)."""
    return list((run_dir / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"))


def rows_on_disk(run_dir: Path, run_id: str) -> int | None:
    """How many history rows, numbered from 0 without a gap, the offline files hold;
    None if a file cannot be read."""
    steps: set[int] = set()
    try:
        for path in session_files(run_dir, run_id):
            for record in records(path):
                if record.WhichOneof("record_type") == "history":
                    steps.add(record.history.step.num)
    except (OSError, UnknownFormat):
        return None
    count = 0
    while count in steps:
        count += 1
    return count
