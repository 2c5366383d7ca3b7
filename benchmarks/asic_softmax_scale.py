"""Which softmax output coding keeps a 100- or 1000-class head from tying (issue 12).

Runs the asic target's integer softmax (``reference.softmax``: Q15 exp table, Q30
probability) on classifier-like logits and compares three output codings with the float
softmax: int8 at TFLite's fixed scale 1/256, int8 at the calibrated scale lowering picks
(``lower.softmax_params``: twice the largest calibrated probability at the top code), and
int16 at scale 1/65536 (zero point -32768). Prints, per coding, the fraction of rows whose
top code is tied, the top-1 agreement with the float argmax (ties broken by the lowest index,
as argmax does), and the SQNR of the probabilities.

    python -m sw2c.benchmarks.asic_softmax_scale
"""

from __future__ import annotations

import numpy as np
from sw2c.backends.asic.calibrate import qparams
from sw2c.backends.asic.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize,
    quantize_multiplier,
)
from sw2c.backends.asic.lower import softmax_params
from sw2c.backends.asic.program import Kind, QTensor, Step
from sw2c.backends.asic.reference import softmax


def logits(rng: np.random.Generator, rows: int, classes: int, spread: float) -> np.ndarray:
    """Classifier-like logits: noise plus one favoured class per row."""
    x = rng.standard_normal((rows, classes)) * spread
    x[np.arange(rows), rng.integers(0, classes, rows)] += spread * rng.random(rows) * 2
    return x.astype(np.float32)


def q30(x: np.ndarray, scale: float) -> np.ndarray:
    """The integer softmax's Q30 probabilities of x quantized with ``scale`` (zero point 0)."""
    d = np.arange(-4095, 1, dtype=np.float64)
    table = np.round(np.exp(d * scale) * (1 << 15)).astype(np.int32)
    step = Step(Kind.SOFTMAX, ("x",), "y", "softmax", attrs={"axes": (1,)},
                consts={"exp": table})
    q = quantize(x, scale, 0)
    return softmax(step, q, QTensor("x", x.shape, scale, 0)), q.astype(np.float64) * scale


def coded(p30: np.ndarray, scale: float, zp: int, bits: int) -> np.ndarray:
    """Q30 probabilities on ``scale``: the real multiplier 2^-30 / scale, as lowering sets."""
    mult, shift = quantize_multiplier(np.array([2.0 ** -30 / scale]))
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(multiply_by_quantized_multiplier(p30, mult, shift) + zp, lo, hi)


def measure(classes: int, spread: float, rows: int = 2000) -> None:
    rng = np.random.default_rng(classes)
    calib, test = logits(rng, 256, classes, spread), logits(rng, rows, classes, spread)
    scale = float(np.abs(calib).max()) / 127
    p_cal, _ = q30(calib, scale)
    hi = float(p_cal.max()) / 2 ** 30
    p30, xq = q30(test, scale)
    exact = np.exp(xq - xq.max(axis=1, keepdims=True))
    exact /= exact.sum(axis=1, keepdims=True)
    want = exact.argmax(axis=1)
    int8_cal = softmax_params(qparams(0.0, hi))
    codings = {"int8 1/256": (1 / 256, -128, 8),
               f"int8 calibrated {int8_cal.scale:.3g}": (int8_cal.scale, -128, 8),
               "int16 1/65536": (1 / 65536, -32768, 16)}
    in_ties = float(np.mean((xq == xq.max(axis=1, keepdims=True)).sum(axis=1) > 1))
    print(f"{classes} classes, logit spread {spread}, largest calibrated p {hi:.3f}, rows whose "
          f"int8 input already ties {in_ties:.1%}:")
    for label, (s, zp, bits) in codings.items():
        y = coded(p30, s, zp, bits)
        top = y.max(axis=1, keepdims=True)
        ties = float(np.mean((y == top).sum(axis=1) > 1))
        agree = float(np.mean(y.argmax(axis=1) == want))
        real = (y - zp) * s
        sqnr = 10 * np.log10(np.sum(exact ** 2) / np.sum((real - exact) ** 2))
        print(f"  {label:28s} tied rows {ties:6.1%}  top-1 = float {agree:6.1%}  "
              f"SQNR {sqnr:5.1f} dB")


if __name__ == "__main__":
    for classes, spread in ((10, 3.0), (100, 1.0), (100, 3.0), (1000, 1.0), (1000, 3.0)):
        measure(classes, spread)
