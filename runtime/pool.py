"""The threads of a multi-threaded module: workers parked on semaphores, woken once per run.

The generated code splits each kernel among the team and meets at its own spin barrier
(backends/cpu/team.py), so Python only starts the run and waits for its end: two wake-ups
per inference, not per kernel. ctypes releases the GIL for the native call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np


class ThreadTeam:
    """Runs ``entry(*args, sync, tid)`` on ``size`` threads at once (tid 0 is the caller)."""

    def __init__(self, entry: Callable[..., None], size: int) -> None:
        self.entry = entry
        self.size = size
        self._sync = np.zeros(16, np.int32)  # the barrier's arrival count and generation
        self._sync_ptr = self._sync.ctypes.data
        self._args: Sequence[int] | None = None
        self._go = [threading.Semaphore(0) for _ in range(size - 1)]
        self._done = threading.Semaphore(0)
        self._workers = [threading.Thread(target=self._work, args=(tid,), daemon=True,
                                          name=f"sw2c-worker-{tid}") for tid in range(1, size)]
        for w in self._workers:
            w.start()

    def _work(self, tid: int) -> None:
        while True:
            self._go[tid - 1].acquire()
            args = self._args
            if args is None:
                return
            self.entry(*args, self._sync_ptr, tid)
            self._done.release()

    def run(self, args: Sequence[int]) -> None:
        self._args = args
        for go in self._go:
            go.release()
        self.entry(*args, self._sync_ptr, 0)
        for _ in self._go:
            self._done.acquire()

    def close(self) -> None:
        self._args = None
        for go in self._go:
            go.release()
