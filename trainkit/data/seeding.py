"""Random draws keyed by where they happen, not by what came before.

Augmentation and batch mixing seed their generators from a key such as (seed, epoch,
sample): a resume, another number of workers or another process order then draws the
same numbers, with no generator state to save. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib


def derived_seed(*key: object) -> int:
    """A 63-bit seed that is a function of `key` alone (its parts joined by ':')."""
    digest = hashlib.blake2b(":".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
