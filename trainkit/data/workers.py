"""DataLoader worker processes leave stop signals to the process that trains.

A stop signal sent to a whole process group or job reaches the loader's workers too:
Ctrl-C in a terminal, `kill -- -PGID`, Slurm's `scancel` and its time limit. torch's
workers die on such a SIGTERM, and the training process then fails at once ("DataLoader
worker ... is killed by signal") instead of finishing the step and writing last.pt;
on SIGINT they quit. So a worker ignores SIGINT and SIGUSR1, and a SIGTERM from anyone
but its parent: the training process alone decides when to stop. Its loader ends the
workers when it is done with them. A SIGTERM from the parent still ends a worker at
once, as torch intends: it is how the parent's loader and Python's exit clean up
workers that did not finish on their own. A worker whose parent is gone exits by itself
(torch's watchdog), and SIGKILL ends it at once.

Telling the sender apart needs `signal.sigwaitinfo`, which macOS lacks; there a worker
keeps torch's treatment of SIGTERM.
"""

from __future__ import annotations

import os
import signal
import threading


def leave_stop_signals_to_parent(worker_id: int) -> None:
    """A DataLoader `worker_init_fn`: see the module docstring."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):
        # Blocked here, in the worker's main thread, so that every thread started later
        # blocks it too and only the watcher below receives it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        watcher = threading.Thread(target=_exit_on_sigterm_from, args=(os.getppid(),), daemon=True)
        watcher.start()


def _exit_on_sigterm_from(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)
