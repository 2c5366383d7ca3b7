"""Fixed-point arithmetic of the integer kernels: the one definition, in numpy.

Requantization follows TFLite: a real multiplier ``m`` is stored as an int32 ``multiplier``
in Q31 (in [2^30, 2^31)) and a ``shift`` in [-31, 30], m = multiplier * 2^(shift - 31), and

    requantize(acc) = clamp((acc * multiplier + 2^(30 - shift)) >> (31 - shift) + zp, lo, hi)

that is, TFLite's single-rounding MultiplyByQuantizedMultiplier (TFLITE_SINGLE_ROUNDING):
one rounding to nearest, ties toward +inf. (gemmlowp's older double rounding, a rounding
high multiply followed by a rounding shift, is off by one on up to a quarter of the codes when
the shift is small; with one rounding the int8 program agrees with onnxruntime's float32
requantization of the QDQ export except on exact ties.) The C export and the simulator use
exactly this formula; the only wider-than-32-bit arithmetic is the 32x32->64 product and its
rounding shift, as in TFLite Micro and CMSIS-NN.

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


def saturate(x: np.ndarray) -> np.ndarray:
    """Clamp to the int32 range (as int64)."""
    return np.clip(np.asarray(x, np.int64), I32_MIN, I32_MAX)


def shift_left_saturating(x: np.ndarray, n: int) -> np.ndarray:
    """x * 2^n saturated to int32, 0 <= n <= 30 (the addends of an int8 ADD)."""
    return saturate(np.asarray(x, np.int64) << np.int64(n))


def multiply_by_quantized_multiplier(acc: np.ndarray, multiplier: np.ndarray,
                                     shift: np.ndarray) -> np.ndarray:
    """TFLite's single-rounding MultiplyByQuantizedMultiplier: the int32 accumulator (an
    int64 one is saturated first) times ``multiplier / 2^(31 - shift)``, rounded to nearest
    with ties toward +inf, saturated to int32; returned as int64."""
    total = 31 - np.asarray(shift, np.int64)  # 1..62
    prod = saturate(acc) * np.asarray(multiplier, np.int64)  # |.| <= 2^62: no overflow
    return saturate((prod + (np.int64(1) << (total - 1))) >> total)


def requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, zero_point: int,
               lo: int = Q_MIN, hi: int = Q_MAX, dtype: type = np.int8) -> np.ndarray:
    """int32 accumulators -> int8 (``dtype`` int16 for 16-bit codes): scaled, offset by the
    output zero point, clamped."""
    y = multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point
    return np.clip(y, lo, hi).astype(dtype)


def quantize(x: np.ndarray, scale: float, zero_point: int, bits: int = 8) -> np.ndarray:
    """float -> int8 (or int16) at the model's input, in float32 like the C export (see
    module doc)."""
    v = np.asarray(x, np.float32) / np.float32(scale)
    q_min, q_max = code_range(bits)
    lo, hi = np.float32(q_min - zero_point), np.float32(q_max - zero_point)
    with np.errstate(invalid="ignore"):
        v = np.where(v >= lo, v, lo)  # NaN lands here too
        v = np.where(v <= hi, v, hi)
        half = np.where(v >= 0, np.float32(0.5), np.float32(-0.5)).astype(np.float32)
        r = np.trunc((v + half).astype(np.float32))
    return np.asarray(r.astype(np.int32) + zero_point).astype(code_dtype(bits))  # 0-d: array


ALL_CODES = np.arange(Q_MIN, Q_MAX + 1).astype(np.int8)  # what a lookup table is indexed by


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 -> float32 at the model's outputs: (q - zp) * scale in float32."""
    return np.asarray((q.astype(np.int32) - zero_point).astype(np.float32) * np.float32(scale))


# --- 16-bit activations (TFLite's 16x8: int16 symmetric activations, int8 weights) ---------
Q16_MIN, Q16_MAX = -(1 << 15), (1 << 15) - 1
WIDE_ACC_LIMIT = 1 << 47  # |int64 accumulator| fed to mbqm64 (TFLite's bound)


def code_range(bits: int) -> tuple[int, int]:
    """The (lowest, highest) code of a signed ``bits``-bit activation (8 or 16)."""
    if bits not in (8, 16):
        raise ValueError(f"activations are 8 or 16 bits, not {bits}")
    return (Q_MIN, Q_MAX) if bits == 8 else (Q16_MIN, Q16_MAX)


def code_dtype(bits: int) -> type:
    """The numpy dtype of ``bits``-bit codes."""
    code_range(bits)
    return np.int8 if bits == 8 else np.int16


def multiply_by_quantized_multiplier_wide(acc: np.ndarray, multiplier: np.ndarray,
                                          shift: np.ndarray) -> np.ndarray:
    """TFLite's int64 MultiplyByQuantizedMultiplier (the 16x8 kernels' requantization): the
    accumulator saturated to +-2^47, times the Q31 multiplier rounded to Q15 (``(m + 2^15)
    >> 16``, at most 2^15 - 1), rounded to nearest (ties toward +inf) by 2^(15 - shift) and
    saturated to int32. |acc * m15| < 2^62: int64 throughout, as the C export does it."""
    x = np.clip(np.asarray(acc, np.int64), -WIDE_ACC_LIMIT, WIDE_ACC_LIMIT - 1)
    m = np.asarray(multiplier, np.int64)
    m15 = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - np.asarray(shift, np.int64)  # shift in [-31, 14] -> 1..46
    if np.any(total < 1):
        raise ValueError("a 16x8 requantization multiplier over 2^14")
    return saturate((x * m15 + (np.int64(1) << (total - 1))) >> total)
