"""The threads of a multi-threaded module.

Generated code splits each kernel among the team and meets at its own spin barrier
(backends/cpu/team.py). Between runs a worker waits in native code, spinning on the mailbox's
generation word for a while (a run that follows soon starts at once) before it parks on a
condition variable. Thread 0 is the caller; the entry's final barrier means that when it
returns, every worker has finished. ctypes releases the GIL for each native call.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence

import numpy as np

SPINS = 1 << 14  # idle rounds (pause, later sched_yield) before a worker parks


class ThreadTeam:
    """Runs ``entry(*args, sync, tid)`` on ``size`` threads at once (tid 0 is the caller)."""

    def __init__(self, entry: Callable[..., None], worker: int, size: int, n_args: int,
                 code: object) -> None:
        self.entry = entry
        self._code = code  # the JIT engine: its code must outlive the workers running it
        self.size = size
        self._worker = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)(worker)
        self._sync = np.zeros(16, np.int32)  # the barrier's arrival count and generation
        self._mailbox = np.zeros(2 + n_args, np.int64)  # generation, exit flag, pointers
        self._parked = 0
        self._sync_ptr = self._sync.ctypes.data
        self._cv = threading.Condition()
        self._threads = [threading.Thread(target=self._work, args=(tid,), daemon=True,
                                          name=f"sw2c-worker-{tid}") for tid in range(1, size)]
        for t in self._threads:
            t.start()

    def _work(self, tid: int) -> None:
        box, sync = self._mailbox.ctypes.data, self._sync.ctypes.data
        seen = 0
        while True:
            seen = self._worker(box, sync, tid, seen, SPINS)  # runs jobs until idle
            if seen < 0:
                return
            with self._cv:  # idle for a while: park until the next run
                self._parked += 1
                while self._mailbox[0] == seen:
                    self._cv.wait()
                self._parked -= 1

    def run(self, args: Sequence[int]) -> None:
        self._mailbox[2:] = args
        self._mailbox[0] += 1  # x86 keeps stores in order: the pointers are visible first
        if self._parked:
            with self._cv:
                self._cv.notify_all()
        self.entry(*args, self._sync_ptr, 0)

    def close(self) -> None:
        """Stop the workers and wait until none is left inside the generated code."""
        self._mailbox[1] = 1
        self._mailbox[0] += 1
        with self._cv:
            self._cv.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
