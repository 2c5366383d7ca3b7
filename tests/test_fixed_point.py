"""The fixed-point arithmetic against an independent oracle: exact rational arithmetic on
Python integers (fractions), with the rounding rule written out directly."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from sw2c.backends.asic.fixed_point import (
    I32_MAX,
    I32_MIN,
    dequantize,
    multiply_by_quantized_multiplier,
    quantize,
    quantize_multiplier,
    shift_left_saturating,
)

RNG = np.random.default_rng(0)


def round_half_up(q: Fraction) -> int:
    """To nearest, ties toward +inf."""
    return (2 * q.numerator + q.denominator) // (2 * q.denominator)


def int32s(n: int) -> np.ndarray:
    edges = [I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX, 1 << 30, -(1 << 30)]
    return np.concatenate([edges, RNG.integers(I32_MIN, I32_MAX, n, endpoint=True)]).astype(
        np.int64)


def test_requantization_rounds_once_to_nearest_ties_up_and_saturates():
    acc = int32s(3000)
    mult = RNG.integers(1 << 30, 1 << 31, acc.size)
    shift = RNG.integers(-31, 31, acc.size)
    acc[:4], mult[:4], shift[:4] = [3, -3, 1, -1], 1 << 30, [0, 0, -30, -30]  # exact ties
    got = multiply_by_quantized_multiplier(acc, mult, shift)
    for x, m, s, g in zip(acc.tolist(), mult.tolist(), shift.tolist(), got.tolist()):
        want = round_half_up(Fraction(x * m, 1 << (31 - s)))
        assert g == min(max(want, I32_MIN), I32_MAX), (x, m, s)


def test_int8_addends_shift_left_with_saturation():
    x = np.array([1, -1, 255, -255, 1 << 20, -(1 << 20)])
    assert shift_left_saturating(x, 20).tolist() == [1 << 20, -(1 << 20), 255 << 20,
                                                     -255 << 20, I32_MAX, I32_MIN]


def test_quantized_multipliers_represent_the_real_ones():
    real = np.concatenate([RNG.uniform(1e-6, 0.999, 500), [0.5, 0.25, 1.0, 3.7, 1 - 1e-12]])
    mult, shift = quantize_multiplier(real)
    assert np.all((mult >= 1 << 30) & (mult <= I32_MAX))
    approx = mult.astype(np.float64) * 2.0 ** (shift.astype(np.float64) - 31)
    assert np.all(np.abs(approx - real) <= real * 2.0 ** -30)
    assert quantize_multiplier(np.array([0.0]))[0][0] == 0


def test_requantization_is_within_one_unit_of_the_real_product():
    acc = RNG.integers(-(1 << 24), 1 << 24, 5000)
    real = RNG.uniform(1e-5, 0.9, 5000)
    mult, shift = quantize_multiplier(real)
    got = multiply_by_quantized_multiplier(acc, mult, shift)
    assert np.all(np.abs(got - acc * real) <= 1.0 + 1e-6)


def test_float_boundary_rounds_half_away_and_saturates():
    scale, zp = 0.5, -3
    x = np.array([0.25, -0.25, 0.75, -0.75, 1e9, -1e9, np.nan, np.inf, -np.inf], np.float32)
    q = quantize(x, scale, zp)
    assert q.tolist() == [-2, -4, -1, -5, 127, -128, -128, 127, -128]
    assert dequantize(q, scale, zp).tolist() == [0.5, -0.5, 1.0, -1.0, 65.0, -62.5, -62.5,
                                                 65.0, -62.5]
