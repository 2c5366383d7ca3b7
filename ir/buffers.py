"""Large arrays with their pages in place.

The first touch of a freshly mapped 4 KiB page costs microseconds here, so filling a fresh
400 MB array page by page is mostly page faults: VGG-19's fc6 weight (411 MB) took 1.1-1.3 s
per copy in the importer's transpose and the flatten-order permutation, against 0.07 s into
memory already mapped. A large buffer is therefore a mapping of its own, populated in one
system call.
"""

from __future__ import annotations

import mmap

import numpy as np

PREFAULT_FROM = 4 << 20  # bytes: a buffer this large is mapped with its pages in place


def aligned_buffer(nbytes: int) -> np.ndarray:
    """A zeroed uint8 buffer whose data starts on a 64-byte boundary. A large one (weights,
    big arenas) is a mapping of its own, populated in one system call: first touching VGG-19's
    815 MB of packed weights page by page took 0.8-1.8 s of its compile here, populated
    0.4-0.5 s (and the copy itself 0.1 s)."""
    if nbytes >= PREFAULT_FROM and hasattr(mmap, "MAP_POPULATE"):
        pages = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                          | mmap.MAP_POPULATE)  # anonymous: zeroed, page aligned
        return np.frombuffer(pages, dtype=np.uint8)
    raw = np.zeros(nbytes + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes]


def empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A writable C-ordered array of ``shape`` (zeroed) from ``aligned_buffer``."""
    dt = np.dtype(dtype)
    return aligned_buffer(int(np.prod(shape)) * dt.itemsize).view(dt).reshape(shape)
