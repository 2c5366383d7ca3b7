"""An int16 softmax step in the QDQ export as int64 ONNX ops, bit-exact with
``reference.softmax`` and the step's requantization.

A float ``Softmax`` drifts from the integer definition by several int16 codes (the table's
interpolation is within 2^-12 relative, the Q30 quotient is truncated to 2^-14 of the
probability, and the output scale is ~2^-15), so the export spells the definition out with
integer ops, as it does for the int16 tables: z = x + mask, d = z - max(z), the interpolated
Q15 exp, the Q30 ratio and TFLite's MultiplyByQuantizedMultiplier. onnxruntime's int64
``Div`` truncates toward zero; a floor is a truncation corrected where the remainder is
negative. Every intermediate fits int64 (the products are below 2^62, as in fixed_point).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto

from .fixed_point import I32_MAX, I32_MIN, WIDE_ACC_LIMIT
from .program import Requant, Step

if TYPE_CHECKING:
    from .qdq import _Builder

Q30_SHIFTS = 15  # q30_ratio: total < 2^31 keeps its top 16 bits, a shift of at most 15


class _Int64:
    """int64 helpers over a ``_Builder``."""

    def __init__(self, g: _Builder) -> None:
        self.g = g

    def k(self, v: int | np.ndarray) -> str:
        return self.g.const("k", np.asarray(v, np.int64))

    def op(self, op: str, *inputs: str | int | np.ndarray, **attrs) -> str:
        args = [v if isinstance(v, str) else self.k(v) for v in inputs]
        return self.g.node(op, args, **attrs)

    def floor_div(self, a: str, b: int | np.ndarray) -> str:
        """floor(a / b) for b > 0: the truncated quotient, minus 1 where the remainder < 0."""
        q = self.op("Div", a, b)
        r = self.op("Sub", a, self.op("Mul", q, b))
        below = self.g.node("Cast", [self.op("Less", r, 0)], to=TensorProto.INT64)
        return self.op("Sub", q, below)

    def clip(self, a: str, lo: int | np.ndarray, hi: int | np.ndarray) -> str:
        return self.op("Max", self.op("Min", a, hi), lo)

    def mbqm(self, acc: str, multiplier: np.ndarray, shift: np.ndarray) -> str:
        """``fixed_point.multiply_by_quantized_multiplier``."""
        total = 31 - np.asarray(shift, np.int64)
        prod = self.op("Mul", self.clip(acc, I32_MIN, I32_MAX), np.asarray(multiplier, np.int64))
        rounded = self.op("Add", prod, np.int64(1) << (total - 1))
        return self.clip(self.floor_div(rounded, np.int64(1) << total), I32_MIN, I32_MAX)

    def mbqm_wide(self, acc: str, multiplier: np.ndarray, shift: np.ndarray) -> str:
        """``fixed_point.multiply_by_quantized_multiplier_wide``."""
        m = np.asarray(multiplier, np.int64)
        m15 = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
        total = 15 - np.asarray(shift, np.int64)
        prod = self.op("Mul", self.clip(acc, -WIDE_ACC_LIMIT, WIDE_ACC_LIMIT - 1), m15)
        rounded = self.op("Add", prod, np.int64(1) << (total - 1))
        return self.clip(self.floor_div(rounded, np.int64(1) << total), I32_MIN, I32_MAX)


def _exp(n: _Int64, d: str, step: Step) -> str:
    """``reference.exp_interpolated`` of d <= 0 (lower.py gives every int16 softmax one)."""
    table = np.asarray(step.consts["exp"], np.int64).reshape(-1)
    flat = n.g.const("exp", table)
    last = table.size - 1
    u = n.mbqm(d, np.int64(step.attrs["exp_interp"][0]), np.int64(step.attrs["exp_interp"][1]))
    seg = n.floor_div(u, 128)
    f = n.op("Sub", u, n.op("Mul", seg, 128))
    p = n.op("Add", seg, last)
    base = n.g.node("Gather", [flat, n.clip(p, 0, last)], axis=0)
    nxt = n.g.node("Gather", [flat, n.clip(n.op("Add", p, 1), 0, last)], axis=0)
    slope = n.op("Add", n.op("Mul", n.op("Sub", nxt, base), f), 64)
    e = n.op("Add", base, n.floor_div(slope, 128))
    return n.g.node("Where", [n.op("GreaterOrEqual", p, 0), e, n.k(0)])


def _q30_ratio(n: _Int64, e: str, total: str) -> str:
    """``reference.q30_ratio``: with 2^s = 1 + sum_k [total >= 2^(16+k)] 2^k (the loop's
    shift), ((e 2^15) // (total // 2^s)) * 2^(15 - s); all operands non-negative."""
    p2 = n.k(1)
    for k in range(Q30_SHIFTS):
        hit = n.g.node("Cast", [n.op("GreaterOrEqual", total, 1 << (16 + k))],
                       to=TensorProto.INT64)
        p2 = n.op("Add", p2, n.op("Mul", hit, 1 << k))
    top = n.op("Div", total, p2)
    q = n.op("Div", n.op("Mul", e, 1 << 15), top)
    return n.op("Mul", q, n.op("Div", 1 << 15, p2))


def _mask_tensor(n: _Int64, step: Step, z: str) -> str:
    """z plus (or, if it absorbs, replaced by) the rescaled mask tensor's centered codes."""
    g = n.g
    t = g.tensor(step.inputs[1])
    c = n.op("Sub", g.node("Cast", [g.int8(t.name)], to=TensorProto.INT64), t.zero_point)
    mult, shift = step.attrs["mask_rescale"]
    m = n.mbqm(c, np.int64(mult), np.int64(shift))
    if step.attrs.get("mask_absorbs"):
        return g.node("Where", [n.op("Not", n.op("Equal", c, 0)), m, z])
    return n.op("Add", z, m)


def _requantize(n: _Int64, r: Requant, acc: str, bits: int) -> str:
    """The step's requantization of the Q30 probabilities to int16 (int8) codes."""
    scale = n.mbqm_wide if r.wide else n.mbqm
    y = n.op("Add", scale(acc, r.multiplier, r.shift), r.zero_point)
    y = n.clip(y, r.lo, r.hi)
    return n.g.node("Cast", [y], to=TensorProto.INT16 if bits == 16 else TensorProto.INT8)


def softmax16(g: _Builder, step: Step) -> str:
    """The int16 softmax step's output codes, exactly as ``reference.softmax`` then
    ``run_step``'s requantization compute them."""
    n = _Int64(g)
    x = g.tensor(step.inputs[0])
    y = g.tensor(step.output)
    axes = [a % len(x.shape) for a in step.attrs["axes"]]
    z = g.node("Cast", [g.int8(x.name)], to=TensorProto.INT64)
    if "mask" in step.consts:
        z = n.op("Add", z, np.asarray(step.consts["mask"], np.int64))
    if len(step.inputs) == 2:
        z = _mask_tensor(n, step, z)
    d = n.op("Sub", z, g.reduce_max(z, axes))
    e = _exp(n, d, step)
    total = g.node("ReduceSum", [e, g.const("axes", np.array(axes, np.int64))], keepdims=1)
    p = _q30_ratio(n, e, total)
    p = g.reshape(p, x.shape, y.shape)
    return _requantize(n, step.requant, p, y.bits)
