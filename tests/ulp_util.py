"""Float32 accuracy helpers shared by the math tests: the special inputs, a stratified sweep
of the whole float32 range, and the error of a result in float32 ulps."""

from __future__ import annotations

import numpy as np

SPECIALS = np.float32([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38,
                       -1.1754942e-38, 3.4028235e38, -3.4028235e38])
TINY = 1.1754943508222875e-38  # smallest normal float32


def sweep(step_bits: int) -> np.ndarray:
    """Every 2**step_bits-th float32 bit pattern, both signs, finite ones, and the specials."""
    bits = np.arange(0, 0x7F800000, 1 << step_bits, dtype=np.uint32)
    x = bits.view(np.float32)
    return np.concatenate([x, -x, SPECIALS])


def ulps(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|got - ref| in units of the float32 spacing at ref (ref in float64, finite)."""
    with np.errstate(over="ignore"):  # the spacing at float32's largest value is inf
        spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / spacing


def f64(fn, x: np.ndarray) -> np.ndarray:
    """The Python float function ``fn`` element by element, in float64."""
    return np.frompyfunc(fn, 1, 1)(x.astype(np.float64)).astype(np.float64)
