"""The threads of a multi-threaded module.

Generated code hands out the chunks of big kernels, each thread's own share first, then what
the others left (backends/cpu/team.py); thread 0, the caller, returns once every chunk is done.
Between runs a worker waits in native code, spinning on the mailbox's generation word for a
while (a run that follows soon starts at once) before it parks on a condition variable. ctypes
releases the GIL for each native call. A run is published by the generated ``<name>_publish``,
a release store that the workers' acquire loads pair with; runtime/team.c is the same protocol
in C for an exported library.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

SPINS = 1 << 14  # idle rounds (spin hint, later sched_yield) before a worker parks


@dataclass(frozen=True)
class TeamCode:
    """A program's team: its size, its shared words and its generated functions' addresses."""

    threads: int
    sync_words: int  # i64 words of progress and chunk counters (backends/cpu/team.py)
    worker: int  # i64 <name>_worker(i64* mailbox, i64* sync, i64 tid, i64 seen, i64 spins)
    publish: int  # void <name>_publish(i64* mailbox, i64* sync, i64 gen)


def team_code(symbol: Callable[[str], int], name: str, threads: int,
              sync_words: int) -> TeamCode | None:
    """The team of program ``name`` generated for ``threads`` threads, with ``symbol`` giving a
    function's address by name (the JIT engine's or a loaded library's); None for one thread."""
    if threads <= 1:
        return None
    return TeamCode(threads, sync_words, symbol(f"{name}_worker"), symbol(f"{name}_publish"))


class ThreadTeam:
    """Runs ``entry(*args, sync, tid, gen)`` on ``code.threads`` threads at once (tid 0 is the
    caller). Not reentrant: the caller serializes runs (Module holds a lock)."""

    def __init__(self, entry: Callable[..., None], code: TeamCode, n_args: int,
                 keepalive: object, spins: int = SPINS) -> None:
        self.entry = entry
        self._code = keepalive  # the JIT engine or library: its code must outlive the workers
        self.size = code.threads
        self.spins = spins
        self._worker = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64)(code.worker)
        self._publish = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p,
                                         ctypes.c_int64)(code.publish)
        self._sync = np.zeros(code.sync_words, np.int64)  # progress, per kernel: next/done chunk
        self._mailbox = np.zeros(2 + n_args, np.int64)  # generation, exit flag, pointers
        self._sync_ptr, self._box = self._sync.ctypes.data, self._mailbox.ctypes.data
        self.parked = 0  # workers asleep on the condition variable now (tests read it)
        self.wakes = 0  # times a parked worker woke for a run (tests read it)
        self._closed = False
        self._cv = threading.Condition()
        self._threads = [threading.Thread(target=self._work, args=(tid,), daemon=True,
                                          name=f"sw2c-worker-{tid}")
                         for tid in range(1, self.size)]
        for t in self._threads:
            t.start()

    def _work(self, tid: int) -> None:
        seen = 0
        while True:
            seen = self._worker(self._box, self._sync_ptr, tid, seen, self.spins)
            if seen < 0:
                return
            with self._cv:  # idle for a while: park until the next run
                self.parked += 1
                # the publisher notifies under this lock after its release store, so either
                # this read sees the new generation or the notify comes after the wait began
                while self._mailbox[0] == seen:
                    self._cv.wait()
                self.parked -= 1
                self.wakes += 1

    def _start(self, gen: int) -> None:
        self._publish(self._box, self._sync_ptr, gen)  # after the words written before it
        with self._cv:
            if self.parked:
                self._cv.notify_all()

    def run(self, args: Sequence[int]) -> None:
        """One run on the team: publish ``args``, compute as thread 0, return when done."""
        gen = int(self._mailbox[0]) + 1
        self._mailbox[2:] = args
        self._start(gen)
        self.entry(*args, self._sync_ptr, 0, gen)

    def close(self) -> None:
        """Stop the workers and wait until none is left inside the generated code. Runs after
        this still work: thread 0 then takes every chunk itself."""
        if self._closed:
            return
        self._closed = True
        self._mailbox[1] = 1
        self._start(int(self._mailbox[0]) + 1)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
