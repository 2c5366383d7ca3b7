"""Elementwise functions in LLVM IR, for scalars and vectors alike (the same code serves the
loop kernels and the GEMM epilogue)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llvmlite import ir

from ...ir import Binary, Unary
from .llvm import F32, intrinsic

FAST = ("fast",)


def splat(b: ir.IRBuilder, like: ir.Value, value: float | ir.Value) -> ir.Value:
    """``value`` in the type of ``like``: a constant, or a broadcast vector."""
    t = like.type
    if isinstance(value, ir.Value) and not isinstance(value, ir.Constant):
        if isinstance(t, ir.VectorType):
            undef = ir.Constant(t, ir.Undefined)
            v = b.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
            zeros = ir.Constant(ir.VectorType(ir.IntType(32), t.count), None)
            return b.shuffle_vector(v, undef, zeros)
        return value
    value = float(value.constant) if isinstance(value, ir.Constant) else float(value)
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [ir.Constant(F32, value)] * t.count)
    return ir.Constant(F32, value)


def _call(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    t = args[0].type
    return b.call(intrinsic(b.module, name, [t], t, [t] * len(args)), list(args))


# bounds of unary ops (Relu, Clip): a NaN in x propagates, as in numpy; y is a constant, so this
# form (one vmaxps/vminps) is exact. Max/Min of two tensors and max reductions use
# llvm.maximum/minimum instead, which propagate a NaN from either side as np.maximum does.
def _max(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.fcmp_unordered(">", x, y), x, y)


def _min(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.fcmp_unordered("<", x, y), x, y)


def _libm(b: ir.IRBuilder, name: str, x: ir.Value) -> ir.Value:
    """A libm float function applied lane by lane (tanhf has no LLVM intrinsic)."""
    fn = b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(F32, [F32]), name)
    if not isinstance(x.type, ir.VectorType):
        return b.call(fn, [x])
    out = x
    for lane in range(x.type.count):
        idx = ir.Constant(ir.IntType(32), lane)
        out = b.insert_element(out, b.call(fn, [b.extract_element(x, idx)]), idx)
    return out


def _sigmoid(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    e = _call(b, "llvm.exp", b.fneg(x))
    return b.fdiv(splat(b, x, 1.0), b.fadd(splat(b, x, 1.0), e))


def _hard_sigmoid(b: ir.IRBuilder, x: ir.Value, alpha: float, beta: float) -> ir.Value:
    y = b.fadd(b.fmul(x, splat(b, x, alpha)), splat(b, x, beta))
    return _min(b, _max(b, y, splat(b, x, 0.0)), splat(b, x, 1.0))


def emit_unary(b: ir.IRBuilder, fn: Unary, attrs: Mapping[str, Any], x: ir.Value) -> ir.Value:
    if fn is Unary.RELU:
        return _max(b, x, splat(b, x, 0.0))
    if fn is Unary.LEAKY_RELU:
        return b.select(b.fcmp_ordered(">=", x, splat(b, x, 0.0)), x,
                        b.fmul(x, splat(b, x, attrs["alpha"])))
    if fn is Unary.CLIP:
        return _min(b, _max(b, x, splat(b, x, attrs["lo"])), splat(b, x, attrs["hi"]))
    if fn is Unary.SIGMOID:
        return _sigmoid(b, x)
    if fn is Unary.HARD_SIGMOID:
        return _hard_sigmoid(b, x, attrs["alpha"], attrs["beta"])
    if fn is Unary.HARD_SWISH:
        return b.fmul(x, _hard_sigmoid(b, x, 1 / 6, 0.5))
    if fn is Unary.TANH:
        return _libm(b, "tanhf", x)
    if fn is Unary.NEG:
        return b.fneg(x)
    intrinsic = {Unary.EXP: "llvm.exp", Unary.LOG: "llvm.log", Unary.SQRT: "llvm.sqrt",
                 Unary.ABS: "llvm.fabs"}[fn]
    return _call(b, intrinsic, x)


def emit_binary(b: ir.IRBuilder, fn: Binary, x: ir.Value, y: ir.Value) -> ir.Value:
    if fn is Binary.ADD:
        return b.fadd(x, y)
    if fn is Binary.SUB:
        return b.fsub(x, y)
    if fn is Binary.MUL:
        return b.fmul(x, y)
    if fn is Binary.DIV:
        return b.fdiv(x, y)
    if fn is Binary.MAX:
        return _call(b, "llvm.maximum", x, y)
    if fn is Binary.MIN:
        return _call(b, "llvm.minimum", x, y)
    return _call(b, "llvm.pow", x, y)
