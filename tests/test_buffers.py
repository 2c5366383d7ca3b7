"""ir/buffers.py: large arrays come with their pages in place, small ones from numpy; both are
zeroed, writable, C-ordered and 64-byte aligned, so weights, arenas and the importer's copies
can use either without knowing which."""

from __future__ import annotations

import numpy as np
import pytest
from sw2c.ir.buffers import PREFAULT_FROM, aligned_buffer, empty


@pytest.mark.parametrize("nbytes", [1, 100, PREFAULT_FROM - 4, PREFAULT_FROM, 3 * PREFAULT_FROM])
def test_buffers_are_zeroed_aligned_and_writable(nbytes):
    raw = aligned_buffer(nbytes)
    assert raw.size == nbytes and raw.ctypes.data % 64 == 0 and not raw.any()
    raw[-1] = 7
    assert raw[-1] == 7


def test_empty_is_a_c_ordered_array_of_the_shape():
    a = empty((3, PREFAULT_FROM // 12 + 5), np.float32)  # above the threshold: a mapping
    assert a.shape == (3, PREFAULT_FROM // 12 + 5) and a.dtype == np.float32
    assert a.flags.c_contiguous and a.flags.writeable
    a[...] = np.arange(a.size, dtype=np.float32).reshape(a.shape)
    assert a[2, -1] == a.size - 1
