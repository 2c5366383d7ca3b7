"""Elementwise functions in LLVM IR, for scalars and vectors alike (the same code serves the
loop kernels and the GEMM epilogue)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llvmlite import ir

from ...ir import Binary, Unary
from .llvm import F32, I32, intrinsic

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
        return ir.Constant(t, [ir.Constant(t.element, value)] * t.count)
    return ir.Constant(t, value)


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


def _is_double(x: ir.Value) -> bool:
    return isinstance(x.type.element if isinstance(x.type, ir.VectorType) else x.type,
                      ir.DoubleType)


def _libm(b: ir.IRBuilder, name: str, x: ir.Value) -> ir.Value:
    """The libm function ``name`` (the float one: tanhf; its double twin for doubles) applied
    lane by lane (tanhf has no LLVM intrinsic)."""
    t = ir.DoubleType() if _is_double(x) else F32
    name = name.removesuffix("f") if _is_double(x) else name
    fn = b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(t, [t]), name)
    if not isinstance(x.type, ir.VectorType):
        return b.call(fn, [x])
    out = x
    for lane in range(x.type.count):
        idx = ir.Constant(ir.IntType(32), lane)
        out = b.insert_element(out, b.call(fn, [b.extract_element(x, idx)]), idx)
    return out


def _int_lanes(like: ir.Value, value: int | None = None) -> ir.Type | ir.Constant:
    """The i32 type with ``like``'s lanes, or a constant of it."""
    t = ir.VectorType(I32, like.type.count) if isinstance(like.type, ir.VectorType) else I32
    if value is None:
        return t
    return ir.Constant(t, [ir.Constant(I32, value)] * t.count if t is not I32 else value)


def _pow2(b: ir.IRBuilder, k: ir.Value, like: ir.Value) -> ir.Value:
    """2.0**k as a float, for integer k in [-126, 127] (k + 127 is the exponent field)."""
    bits = b.shl(b.add(k, _int_lanes(like, 127)), _int_lanes(like, 23))
    return b.bitcast(bits, like.type)


# exp(x) = 2**n * e**r, n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 in two
# parts, the first exact in n * LN2_HI), e**r = 1 + r + r*r * Q(r): a least-squares fit on
# Chebyshev nodes to float64 expm1, 0.8 ulp on the reduced range in float32 (libm's expf is
# one call per lane; this vectorizes). 2**n is applied in two halves, so results that are
# denormal (x down to -103.97) round once, and x above 88.72 overflows to inf.
_EXP_Q = (0.49999988, 0.16666518, 0.041669533, 0.008368916, 0.0013751407)
LN2_HI, LN2_LO = 0.693145751953125, 1.428606765330187e-06
EXP_MIN, EXP_MAX = -104.0, 88.75  # exp is 0 below, inf above in float32


def _exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    if _is_double(x):
        return _call(b, "llvm.exp", x)
    xc = _call(b, "llvm.minnum", _call(b, "llvm.maxnum", x, splat(b, x, EXP_MIN)),
               splat(b, x, EXP_MAX))  # minnum/maxnum drop a NaN: n below is always defined
    nf = _call(b, "llvm.roundeven", b.fmul(xc, splat(b, x, 1.4426950408889634)))
    r = b.fsub(b.fsub(xc, b.fmul(nf, splat(b, x, LN2_HI))), b.fmul(nf, splat(b, x, LN2_LO)))
    er = b.fadd(splat(b, x, 1.0), b.fadd(r, b.fmul(b.fmul(r, r), _horner(b, r, _EXP_Q))))
    n = b.fptosi(nf, _int_lanes(x))
    half = b.ashr(n, _int_lanes(x, 1))
    y = b.fmul(b.fmul(er, _pow2(b, half, x)), _pow2(b, b.sub(n, half), x))
    return b.select(b.fcmp_unordered("!=", x, x), x, y)  # NaN in, NaN out


# tanh(a) = a + a**3 * P(a*a) for a = |x| < TANH_SMALL (least squares to float64 tanh, 0.8 ulp),
# else 1 - 2 / (exp(2a) + 1), which is at least 0.5 there, so nothing cancels; sign restored.
_TANH_P = (-0.3333332, 0.13332617, -0.053855121, 0.021082059, -0.0062876628)
TANH_SMALL = 0.55


def _tanh(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    if _is_double(x):  # the polynomial is float32's
        return _libm(b, "tanhf", x)
    a = _call(b, "llvm.fabs", x)
    t = b.fmul(a, a)
    small = b.fadd(a, b.fmul(b.fmul(a, t), _horner(b, t, _TANH_P)))
    e = _exp(b, b.fadd(a, a))
    one = splat(b, x, 1.0)
    large = b.fsub(one, b.fdiv(splat(b, x, 2.0), b.fadd(e, one)))
    y = b.select(b.fcmp_ordered("<", a, splat(b, x, TANH_SMALL)), small, large)
    return _call(b, "llvm.copysign", y, x)


def _sigmoid(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    e = _exp(b, b.fneg(x))
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
    if _is_double(x):  # the polynomials are float32's
        return _libm(b, "erff", x)
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
    u = _exp(b, x)
    um1 = b.fsub(u, one)
    y = b.fdiv(b.fmul(um1, x), _call(b, "llvm.log", u))
    y = b.select(b.fcmp_ordered("==", um1, splat(b, x, -1.0)), um1, y)
    return b.select(b.fcmp_ordered("==", u, one), x, y)


def _softplus(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """max(x, 0) + log1p(exp(-|x|)): exp never overflows, and tiny results do not round to 0."""
    e = _exp(b, b.fneg(_call(b, "llvm.fabs", x)))
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


# float functions with no LLVM intrinsic that lowers without a libm call anyway: libm's own,
# lane by lane (glibc's float versions are within an ulp of the exact result)
LIBM = {Unary.SIN: "sinf", Unary.COS: "cosf", Unary.TAN: "tanf", Unary.ASIN: "asinf",
        Unary.ACOS: "acosf", Unary.ATAN: "atanf", Unary.SINH: "sinhf", Unary.COSH: "coshf",
        Unary.ASINH: "asinhf", Unary.ACOSH: "acoshf", Unary.ATANH: "atanhf"}

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
        return _tanh(b, x)
    if fn is Unary.NEG:
        return b.fneg(x)
    if fn in SPECIAL:
        return _special(b, fn, attrs, x)
    if fn in LIBM:
        return _libm(b, LIBM[fn], x)
    if fn is Unary.EXP:
        return _exp(b, x)
    intrinsic = {Unary.LOG: "llvm.log", Unary.SQRT: "llvm.sqrt",
                 Unary.ABS: "llvm.fabs", Unary.FLOOR: "llvm.floor", Unary.CEIL: "llvm.ceil",
                 Unary.ROUND: "llvm.roundeven"}[fn]
    return _call(b, intrinsic, x)


def emit_binary(b: ir.IRBuilder, fn: Binary, x: ir.Value, y: ir.Value) -> ir.Value:
    if fn is Binary.ADD:
        return b.fadd(x, y)
    if fn is Binary.SUB:
        return b.fsub(x, y)
    if fn is Binary.MUL:
        return b.fmul(x, y)
    if fn is Binary.MOD:  # C fmod, exact (LLVM lowers it to fmodf)
        return b.frem(x, y)
    if fn is Binary.DIV:
        return b.fdiv(x, y)
    if fn is Binary.MAX:
        return _call(b, "llvm.maximum", x, y)
    if fn is Binary.MIN:
        return _call(b, "llvm.minimum", x, y)
    return _call(b, "llvm.pow", x, y)
