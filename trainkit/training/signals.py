"""Graceful stops: SIGINT and SIGTERM become a request the training loop polls."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from trainkit.training.distributed import launched_by_torchrun


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[], int | None]]:
    """Turn SIGINT/SIGTERM into a request the training loop polls between steps.

    Yields a function returning the signal received (or None). A second Ctrl-C stops at
    once, which is safe: checkpoints are written atomically. Not in a torchrun worker: a
    Ctrl-C reaches it twice (from the terminal, then forwarded by the agent), and the
    agent itself kills workers that do not stop in time.
    """
    received: list[int] = []
    escalate = not launched_by_torchrun()

    def handler(signum: int, frame: object) -> None:
        if received and signum == signal.SIGINT and escalate:
            raise KeyboardInterrupt
        received.append(signum)

    watched = (signal.SIGINT, signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, handler) for s in watched} if in_main else {}
    try:
        yield lambda: received[0] if received else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
