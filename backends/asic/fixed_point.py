"""Fixed-point arithmetic of the integer kernels: the one definition, in numpy.

Requantization follows gemmlowp / TFLite: a real multiplier ``m`` is stored as an int32
``multiplier`` in Q31 (in [2^30, 2^31)) and a ``shift`` (left if > 0, right if < 0), and

    requantize(acc) = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc << left, M), right)

``SaturatingRoundingDoublingHighMul`` rounds to nearest with ties toward +inf (gemmlowp's
"nudge" then a truncating division); ``RoundingDivideByPOT`` rounds half away from zero.
The C export and the simulator use exactly these formulas; the
only wider-than-32-bit arithmetic is the 32x32->64 product inside the high multiply, as in
TFLite Micro and CMSIS-NN. A left shift that would overflow int32 saturates.

The float boundary (quantize on entry, dequantize on exit) is defined in float32 so that C
gives the same bits: ``q = clamp(round_half_away(x / scale) + zp)``, NaN -> the lowest code.
"""

from __future__ import annotations

import numpy as np

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
Q_MIN, Q_MAX = -128, 127


def quantize_multiplier(real: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Real multipliers (> 0) -> (int32 Q31 multipliers, int32 shifts), elementwise.

    A multiplier of 0 (a channel whose weights are all zero) encodes as (0, 0)."""
    real = np.asarray(real, np.float64)
    if np.any(real < 0) or not np.all(np.isfinite(real)):
        raise ValueError(f"requantization multipliers must be finite and >= 0, got {real}")
    mant, exp = np.frexp(real)  # real = mant * 2^exp, mant in [0.5, 1)
    q = np.round(mant * (1 << 31)).astype(np.int64)
    exp = exp.astype(np.int64)
    carry = q == (1 << 31)  # mant rounded up to 1.0
    q = np.where(carry, q // 2, q)
    exp = np.where(carry, exp + 1, exp)
    tiny = exp < -31  # too small to represent: the product rounds to 0 anyway
    q, exp = np.where(tiny, 0, q), np.where(tiny | (q == 0), 0, exp)
    if np.any(exp > 30):
        raise ValueError(f"requantization multiplier too large: {real.max()}")
    return q.astype(np.int32), exp.astype(np.int32)


def _saturate(x: np.ndarray) -> np.ndarray:
    return np.clip(x, I32_MIN, I32_MAX)


def high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul of int32 values: a * b / 2^31 rounded to
    nearest, ties toward +inf; saturates the one overflow (INT32_MIN * INT32_MIN)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    out = np.where(num >= 0, num >> 31, -((-num) >> 31))  # C division truncates toward zero
    return np.where((a == I32_MIN) & (b == I32_MIN), I32_MAX, out)


def divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero."""
    x, exponent = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(acc: np.ndarray, multiplier: np.ndarray,
                                     shift: np.ndarray) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier on int32 ``acc``; the result as int64."""
    shift = np.asarray(shift, np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    shifted = _saturate(np.asarray(acc, np.int64) << left)
    return divide_by_pot(high_mul(shifted, multiplier), right)


def requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, zero_point: int,
               lo: int = Q_MIN, hi: int = Q_MAX) -> np.ndarray:
    """int32 accumulators -> int8: scaled, offset by the output zero point, clamped."""
    y = multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point
    return np.clip(y, lo, hi).astype(np.int8)


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float -> int8 at the model's input, in float32 like the C export (see module doc)."""
    v = np.asarray(x, np.float32) / np.float32(scale)
    lo, hi = np.float32(Q_MIN - zero_point), np.float32(Q_MAX - zero_point)
    with np.errstate(invalid="ignore"):
        v = np.where(v >= lo, v, lo)  # NaN lands here too
        v = np.where(v <= hi, v, hi)
        half = np.where(v >= 0, np.float32(0.5), np.float32(-0.5)).astype(np.float32)
        r = np.trunc((v + half).astype(np.float32))
    return (r.astype(np.int32) + zero_point).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 -> float32 at the model's outputs: (q - zp) * scale in float32."""
    return ((q.astype(np.int32) - zero_point).astype(np.float32) * np.float32(scale))
