"""Stopping on a signal without losing rounds: SIGTERM, and SIGUSR1 (what SLURM's
``--signal=B:USR1@120`` makes the launch script forward ahead of the time limit), ask the
job to stop at the next round boundary, after a checkpoint.

Every rank installs the handlers (mpirun and srun deliver a signal to all ranks, and the
default action would kill a worker mid-round); only the server acts: it finishes the round,
writes the checkpoint (write, flush, rename: a second signal meanwhile only sets the flag
again) and ends the job with exit status STOPPED, which launch/psgd_job.sh answers with a
requeue. A requeued run resumes from that checkpoint, so at most the round in flight is redone.
"""

from __future__ import annotations

import signal
import threading

STOPPED = 3  # exit status: stopped on a signal, checkpoint written, resume with --resume
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Records the first stop signal received while installed (``received``: its name)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.previous: dict = {}

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for s in SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = self.received or signal.Signals(signum).name

    def uninstall(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}
