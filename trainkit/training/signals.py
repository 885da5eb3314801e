"""Graceful stops: SIGINT, SIGTERM and SIGUSR1 become a request the training loop polls.

SIGUSR1 is what Slurm sends ahead of a job's time limit (`sbatch --signal=USR1@90`), and
what a preemption warning usually is: the run writes last.pt and stops, and a relaunch of
the same command continues it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from trainkit.training.distributed import launched_by_torchrun


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[], int | None]]:
    """Turn SIGINT/SIGTERM/SIGUSR1 into a request the training loop polls between steps.

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

    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, handler) for s in watched} if in_main else {}
    try:
        yield lambda: received[0] if received else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
