"""Preemption notices for the training loop: SIGTERM means "save this step and stop".

The trainer asks :meth:`Preemption.reached` after every step; when it turns true it
saves a checkpoint of the step reached and exits with :data:`PREEMPTED_EXIT_CODE`, and
the same command continues from there.
"""

from __future__ import annotations

import signal
import threading

from jax.experimental import multihost_utils

PREEMPTED_EXIT_CODE = 143   # 128 + SIGTERM: "stopped by a signal", so a scheduler restarts it


class Preemption:
    """Has a preemption notice arrived, at a step where every process can save?

    Multi-process jobs (``jax.distributed`` initialised) ask JAX's preemption service,
    which catches SIGTERM on any host and names one step, the same on all, at which
    ``reached`` turns true (every process must call it at every step). A single process
    catches SIGTERM itself; the handler only sets a flag, read between steps.
    """

    def __init__(self):
        from jax._src import distributed   # the client exists only after initialize()
        self._service = distributed.global_state.client is not None
        self._notice = False
        self._previous = None
        if not self._service and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self._notice = True

    def reached(self, step: int) -> bool:
        if self._service:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._notice

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def __enter__(self) -> "Preemption":
        return self

    def __exit__(self, *exc) -> None:
        self.close()     # also when training raises: SIGTERM gets its old handler back
