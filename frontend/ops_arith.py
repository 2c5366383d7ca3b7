"""Mod, CumSum/CumProd and Trilu on run-time tensors."""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Op, Unary
from ..ir.types import FLOATS
from .convert import Ctx, Val, converter


def _zero(dtype: str) -> np.ndarray:
    return np.zeros((), dtype)


def _where(cx: Ctx, cond: Val, a: Val, b: Val) -> Val:
    return cx.add(Op.WHERE, [cond, a, b])


@converter("Mod", since=10)
def mod(cx: Ctx) -> Val:
    """fmod=1: C fmod (the sign of the dividend); fmod=0: the sign of the divisor (Python's %,
    numpy's mod: a non-zero remainder of the other sign moves by one divisor, a zero one takes
    the divisor's sign). Floats use the IR's exact fmod; ints a - trunc(a / b) * b, with
    x mod 0 = 0 (ONNX leaves it undefined; generated code must not trap)."""
    a, b = cx.x(0), cx.x(1)
    dtype = cx.type(a).dtype
    if cx.type(b).dtype != dtype:
        raise cx.error(f"operands differ in type: {dtype} and {cx.type(b).dtype}")
    if dtype == "bool":
        raise cx.error("Mod of bool tensors")
    zero = _zero(dtype)
    if dtype in FLOATS:
        r = cx.binary(Binary.MOD, a, b)
    else:
        r = cx.binary(Binary.SUB, a, cx.binary(Binary.MUL, cx.binary(Binary.DIV, a, b), b))
        r = _where(cx, cx.binary(Binary.EQ, b, zero), zero, r)
    if int(cx.attr("fmod", 0)):
        return r
    b_neg = cx.binary(Binary.LT, b, zero)
    other_sign = cx.binary(Binary.XOR, cx.binary(Binary.LT, r, zero), b_neg)
    nonzero = cx.unary(Unary.NOT, cx.binary(Binary.EQ, r, zero))
    r = _where(cx, cx.binary(Binary.AND, nonzero, other_sign), cx.binary(Binary.ADD, r, b), r)
    if dtype in FLOATS:  # a zero remainder has the divisor's sign
        signed = _where(cx, b_neg, np.array(-0.0, dtype), zero)
        r = _where(cx, cx.binary(Binary.EQ, r, zero), signed, r)
    return r


# --- cumulative sums and products ------------------------------------------------------------
def _take(cx: Ctx, x: Val, axis: int, start: int, count: int, step: int = 1) -> Val:
    shape = cx.shape(x)
    starts, steps, counts = [0] * len(shape), [1] * len(shape), list(shape)
    starts[axis], steps[axis], counts[axis] = start, step, count
    return cx.slice(x, starts, steps, counts)


def _scan(cx: Ctx, fn: Binary, unit: int) -> Val:
    """Inclusive scan by doubling (Hillis-Steele): log2(n) steps of y[s:] = y[s:] op y[:-s],
    each an elementwise op on slices, exact for ints; exclusive shifts the input by one
    (the identity first), reverse scans the reversed axis."""
    x = cx.x(0)
    shape = cx.shape(x)
    axis_in = cx.const_ints(1, "axis")
    if axis_in is None or len(axis_in) != 1:
        raise cx.error("axis must be a 1-element tensor")
    axis = cx.axis(axis_in[0], len(shape))
    n = shape[axis]
    if n == 0:
        return x
    reverse = bool(cx.attr("reverse", 0))
    y = _take(cx, x, axis, n - 1, n, -1) if reverse else x
    if cx.attr("exclusive", 0):
        first = [1 if a == axis else d for a, d in enumerate(shape)]
        head = np.full(first, unit, cx.type(x).dtype)
        y = cx.concat([head, _take(cx, y, axis, 0, n - 1)], axis) if n > 1 else head
    s = 1
    while s < n:
        tail = cx.binary(fn, _take(cx, y, axis, s, n - s), _take(cx, y, axis, 0, n - s))
        y = cx.concat([_take(cx, y, axis, 0, s), tail], axis)
        s *= 2
    return _take(cx, y, axis, n - 1, n, -1) if reverse else y


@converter("CumSum", since=11)
def cumsum(cx: Ctx) -> Val:
    return _scan(cx, Binary.ADD, 0)


@converter("CumProd", since=26)
def cumprod(cx: Ctx) -> Val:
    return _scan(cx, Binary.MUL, 1)


# --- Trilu ------------------------------------------------------------------------------------
@converter("Trilu", since=14)
def trilu(cx: Ctx) -> Val:
    """x where column - row >= k (upper) or <= k (lower), else 0: a constant mask."""
    x = cx.x(0)
    shape = cx.shape(x)
    if len(shape) < 2:
        raise cx.error(f"input {list(shape)} must have rank >= 2")
    k_in = cx.const_ints(1, "k")
    k = 0 if not k_in else k_in[0]
    rows, cols = shape[-2:]
    diff = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    keep = diff >= k if cx.attr("upper", 1) else diff <= k
    return _where(cx, keep, x, _zero(cx.type(x).dtype))
