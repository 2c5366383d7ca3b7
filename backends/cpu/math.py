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


def _horner(b: ir.IRBuilder, t: ir.Value, coeffs: tuple[float, ...]) -> ir.Value:
    """sum(coeffs[i] * t**i), lowest degree first (separate mul and add: no contraction)."""
    y = splat(b, t, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        y = b.fadd(b.fmul(y, t), splat(b, t, c))
    return y


# erf has no LLVM intrinsic and libm's erff is one call per lane, so it is two polynomials, both
# evaluated and one selected (branch-free: it vectorizes). Least-squares fits on Chebyshev nodes
# to float64 erf, rounded to float32; max error 1.4 ulp (measured in tests/test_activations.py).
# |x| <= 1: erf(a) = a + a * Q(a * a), so the leading term is exact and Q's error is damped.
_ERF_SMALL = (0.12837917, -0.3761263, 0.11283612, -0.026854806, 0.0051900498,
              -0.00080243207, 7.898098e-05)
# 1 < |x| <= ERF_ONE: erf(a) = 1 - R(t), t = a mapped onto [-1, 1]; R(t) = erfc(a) <= 0.16.
_ERF_LARGE = (0.0005033536, -0.0038781061, 0.013928984, -0.030599944, 0.04504726,
              -0.04510702, 0.028447647, -0.006495267, -0.0073476364, 0.009031152,
              -0.0033370154, -0.0015874337, 0.0016258644, -1.2977581e-05, -0.0002188414)
ERF_ONE = 3.92  # from here on erfc(a) < 2**-25: float32 erf(a) rounds to 1


def _erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    a = _min(b, _call(b, "llvm.fabs", x), splat(b, x, ERF_ONE))  # inf -> ERF_ONE; NaN stays
    small = b.fadd(a, b.fmul(a, _horner(b, b.fmul(a, a), _ERF_SMALL)))
    t = b.fmul(b.fsub(a, splat(b, x, (1 + ERF_ONE) / 2)), splat(b, x, 2 / (ERF_ONE - 1)))
    large = b.fsub(splat(b, x, 1.0), _horner(b, t, _ERF_LARGE))
    y = b.select(b.fcmp_ordered("<=", a, splat(b, x, 1.0)), small, large)
    return _call(b, "llvm.copysign", y, x)  # erf is odd; keeps -0


def _log1p(b: ir.IRBuilder, u: ir.Value) -> ir.Value:
    """log(1 + u), accurate for tiny u (Goldberg): with w = 1 + u rounded, log(w) * u / (w - 1)
    cancels w's rounding error; where w rounds to 1, log1p(u) = u. Not for u = inf."""
    one = splat(b, u, 1.0)
    w = b.fadd(one, u)
    y = b.fdiv(b.fmul(_call(b, "llvm.log", w), u), b.fsub(w, one))
    return b.select(b.fcmp_ordered("==", w, one), u, y)


def _expm1(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """exp(x) - 1, accurate near 0 (Kahan): with u = exp(x) rounded, (u - 1) * x / log(u);
    where u rounds to 1 it is x, where u underflows to 0 it is -1. For x <= 0 only (Elu)."""
    one = splat(b, x, 1.0)
    u = _call(b, "llvm.exp", x)
    um1 = b.fsub(u, one)
    y = b.fdiv(b.fmul(um1, x), _call(b, "llvm.log", u))
    y = b.select(b.fcmp_ordered("==", um1, splat(b, x, -1.0)), um1, y)
    return b.select(b.fcmp_ordered("==", u, one), x, y)


def _softplus(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """max(x, 0) + log1p(exp(-|x|)): exp never overflows, and tiny results do not round to 0."""
    e = _call(b, "llvm.exp", b.fneg(_call(b, "llvm.fabs", x)))
    return b.fadd(_max(b, x, splat(b, x, 0.0)), _log1p(b, e))


def _special(b: ir.IRBuilder, fn: Unary, attrs: Mapping[str, Any], x: ir.Value) -> ir.Value:
    """Erf, Elu, Softplus, ThresholdedRelu, Shrink (a comparison false on NaN selects 0)."""
    zero = splat(b, x, 0.0)
    if fn is Unary.ERF:
        return _erf(b, x)
    if fn is Unary.ELU:
        neg = b.fmul(splat(b, x, attrs["alpha"]), _expm1(b, x))
        return b.select(b.fcmp_ordered(">", x, zero), x, neg)
    if fn is Unary.SOFTPLUS:
        return _softplus(b, x)
    if fn is Unary.THRESHOLDED_RELU:
        return b.select(b.fcmp_ordered(">", x, splat(b, x, attrs["alpha"])), x, zero)
    lambd, bias = attrs["lambd"], attrs["bias"]
    below = b.select(b.fcmp_ordered("<", x, splat(b, x, -lambd)),
                     b.fadd(x, splat(b, x, bias)), zero)
    return b.select(b.fcmp_ordered(">", x, splat(b, x, lambd)), b.fsub(x, splat(b, x, bias)),
                    below)


SPECIAL = frozenset({Unary.ERF, Unary.ELU, Unary.SOFTPLUS, Unary.THRESHOLDED_RELU,
                     Unary.SHRINK})


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
    if fn in SPECIAL:
        return _special(b, fn, attrs, x)
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
