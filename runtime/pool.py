"""The threads of a multi-threaded module.

Generated code hands out the chunks of big kernels to whichever thread asks first
(backends/cpu/team.py); thread 0, the caller, returns once every chunk is done. Between runs a
worker waits in native code, spinning on the mailbox's generation word for a while (a run that
follows soon starts at once) before it parks on a condition variable. ctypes releases the GIL
for each native call.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence

import numpy as np

from ..backends.cpu.team import run_tag

SPINS = 1 << 14  # idle rounds (pause, later sched_yield) before a worker parks


class ThreadTeam:
    """Runs ``entry(*args, sync, tid, gen)`` on ``size`` threads at once (tid 0 is the
    caller)."""

    def __init__(self, entry: Callable[..., None], worker: int, size: int, n_args: int,
                 sync_words: int, code: object) -> None:
        self.entry = entry
        self._code = code  # the JIT engine: its code must outlive the workers running it
        self.size = size
        self._worker = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)(worker)
        self._sync = np.zeros(sync_words, np.int64)  # progress, per kernel: next/done chunk
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
        gen = int(self._mailbox[0]) + 1
        self._sync[:] = run_tag(gen)  # counters of this run, before any worker can look
        self._mailbox[2:] = args
        self._mailbox[0] = gen  # x86 keeps stores in order: all of the above is visible first
        if self._parked:
            with self._cv:
                self._cv.notify_all()
        self.entry(*args, self._sync_ptr, 0, gen)

    def close(self) -> None:
        """Stop the workers and wait until none is left inside the generated code."""
        self._mailbox[1] = 1
        self._mailbox[0] += 1
        with self._cv:
            self._cv.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
