"""The fixed-point arithmetic against an independent oracle: exact rational arithmetic on
Python integers (fractions), with gemmlowp's rounding rules written out directly."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from sw2c.backends.asic.fixed_point import (
    I32_MAX,
    I32_MIN,
    dequantize,
    divide_by_pot,
    high_mul,
    multiply_by_quantized_multiplier,
    quantize,
    quantize_multiplier,
)

RNG = np.random.default_rng(0)


def round_half_away(q: Fraction) -> int:
    n = abs(q.numerator) * 2 + q.denominator
    r = n // (2 * q.denominator)
    return r if q >= 0 else -r


def int32s(n: int) -> np.ndarray:
    edges = [I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX, 1 << 30, -(1 << 30)]
    return np.concatenate([edges, RNG.integers(I32_MIN, I32_MAX, n, endpoint=True)]).astype(
        np.int64)


def round_half_up(q: Fraction) -> int:
    return (2 * q.numerator + q.denominator) // (2 * q.denominator)


def test_high_mul_rounds_the_doubled_product_to_nearest_ties_up():
    a, b = int32s(2000), int32s(2000)[::-1]
    a = np.concatenate([a, [3, -3, 1 << 30, -(1 << 30)]])  # exact ties of either sign
    b = np.concatenate([b, [1 << 30, 1 << 30, 1, 1]])
    got = high_mul(a, b)
    for x, y, g in zip(a.tolist(), b.tolist(), got.tolist()):
        want = I32_MAX if x == y == I32_MIN else round_half_up(Fraction(x * y, 1 << 31))
        assert g == want, (x, y)


def test_divide_by_pot_rounds_half_away_from_zero():
    x = int32s(3000)
    for e in (0, 1, 5, 17, 31):
        got = divide_by_pot(x, e)
        for v, g in zip(x.tolist(), got.tolist()):
            assert g == round_half_away(Fraction(v, 1 << e)), (v, e)


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
