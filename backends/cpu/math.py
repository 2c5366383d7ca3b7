"""Elementwise functions in LLVM IR, for scalars and vectors alike (the same code serves the
loop kernels and the GEMM epilogue)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llvmlite import ir

from ...ir import Binary, Unary
from .llvm import F32, I32, intrinsic, module_features

# reassociation only: "fast" would also assume no infinities or NaNs, and LLVM then drops a
# -inf (a window's padding) or a NaN from a sum
REASSOC = ("reassoc", "nsz", "contract")


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
# one call per lane; this vectorizes). 2**n is applied so that results that are denormal
# (x down to -103.97) round once, and x above 88.72 overflows to inf.
_EXP_Q = (0.49999988, 0.16666518, 0.041669533, 0.008368916, 0.0013751407)
LN2_HI, LN2_LO = 0.693145751953125, 1.428606765330187e-06
EXP_MIN, EXP_MAX = -104.0, 88.75  # exp is 0 below, inf above in float32


def _exp_reduced(b: ir.IRBuilder, xc: ir.Value,
                 xr: ir.Value | None = None) -> tuple[ir.Value, ir.Value]:
    """(n, e**r - 1) with n = round(xc / ln 2) a float integer (xc finite) and r = xr - n ln 2
    (xr defaults to xc; a NaN or a large xr gives a NaN or an overflowing e**r - 1)."""
    nf = _call(b, "llvm.roundeven", b.fmul(xc, splat(b, xc, 1.4426950408889634)))
    # nf * LN2_HI is exact, so fused or not the first step is exact
    r = _fma(b, nf, splat(b, xc, -LN2_HI), xc if xr is None else xr)
    r = _fma(b, nf, splat(b, xc, -LN2_LO), r)
    return nf, _fma(b, b.fmul(r, r), _horner(b, r, _EXP_Q), r)


def _has_scalef(module: ir.Module) -> bool:
    """AVX-512 has vscalefps, to which llvm.ldexp lowers; elsewhere LLVM calls ldexpf. Asked
    of the module's target (backends/cpu/llvm.py), not of the host."""
    return "+avx512f" in module_features(module)


def _float_scalef(b: ir.IRBuilder, y: ir.Value) -> bool:
    """y is <16 x float> and vscalefps is there: _scale takes a float exponent as it is (a
    NaN one too: no float->int conversion, whose NaN would be poison)."""
    t = y.type
    return (_has_scalef(b.module) and isinstance(t, ir.VectorType) and t.count == 16
            and isinstance(t.element, ir.FloatType))


def _scale(b: ir.IRBuilder, y: ir.Value, nf: ir.Value) -> ir.Value:
    """y * 2**n, n = nf an integer in [-150, 128] as a float, rounded once (denormal results
    too): llvm.ldexp (one vscalefps), or without AVX-512 two exponent-field factors (2**n
    alone may not be a float)."""
    if _float_scalef(b, y):
        # vscalefps takes the exponent as a float: llvm.ldexp's integer costs two conversions
        t = y.type
        fn = intrinsic(b.module, "llvm.x86.avx512.mask.scalef.ps.512", [], t,
                       [t, t, t, ir.IntType(16), I32])
        return b.call(fn, [y, nf, y, ir.Constant(ir.IntType(16), -1), ir.Constant(I32, 4)])
    n = b.fptosi(nf, _int_lanes(y))
    if _has_scalef(b.module):
        ldexp = intrinsic(b.module, "llvm.ldexp", [y.type, n.type], y.type, [y.type, n.type])
        return b.call(ldexp, [y, n])
    half = b.ashr(n, _int_lanes(y, 1))
    return b.fmul(b.fmul(y, _pow2(b, half, y)), _pow2(b, b.sub(n, half), y))


def _exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    if _is_double(x):
        return _call(b, "llvm.exp", x)
    # n from x clamped (NaN dropped: the integer conversion is defined); r from x clamped below
    # only, NaN kept (one vmaxps): NaN in gives NaN out, x above EXP_MAX an infinite e**r
    xl = _max(b, x, splat(b, x, EXP_MIN))
    nf, p = _exp_reduced(b, _call(b, "llvm.minnum", xl, splat(b, x, EXP_MAX)), xl)
    return _scale(b, b.fadd(splat(b, x, 1.0), p), nf)


# tanh(a) = u / (u + 2), u = expm1(2a), a = |x| clamped to TANH_ONE, the sign restored last;
# one formula for all a (no small-|x| polynomial, no select): 2a = n ln 2 + 2h, |h| <= ln2/4,
# expm1(2a) = (2**n - 1) + 2**n (e**(2h) - 1), e**(2h) - 1 = 2 (h + h*h * Q(h)) with exp's
# polynomial rescaled by powers of two (exact: the same roundings as exp's). n comes from the
# "magic number" rounding (adding 1.5 * 2**23 leaves n in the low bits): no float->int
# conversion, and 2**(n+1) is those bits shifted into the exponent field. For tiny a, u = 2a
# and u / (u + 2) = a exactly (denormals too); u + 2 and the division cost up to 1.5 ulp
# over u's: 2.4 ulp max (tests/test_vector_math.py), 19 vector instructions per 16 lanes.
# (An odd rational a P(a*a) / Q(a*a) is ~16 but cannot be within 3 ulp in float32: rounding
# the numerator, denominator and quotient alone gives 2.9 ulp where tanh is in [0.5, 1),
# 4.5-5 ulp with their Horner errors; see benchmarks/fit_tanh.py.)
_TANH_Q = tuple(c * 2.0 ** (k + 1) for k, c in enumerate(_EXP_Q))
TANH_ONE = 9.1  # tanh rounds to 1 in float32 from 9.01 on
MAGIC = 12582912.0  # 1.5 * 2**23: v + MAGIC rounds v to an integer kept in the low bits


def _tanh(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    if _is_double(x):  # the polynomial is float32's
        return _libm(b, "tanhf", x)
    a = _min(b, _call(b, "llvm.fabs", x), splat(b, x, TANH_ONE))  # inf -> TANH_ONE; NaN stays
    m = _fma(b, a, splat(b, x, 2 / math.log(2)), splat(b, x, MAGIC))
    nf = b.fsub(m, splat(b, x, MAGIC))  # n = round(2a / ln 2) in [0, 26]
    h = _fma(b, nf, splat(b, x, -LN2_HI / 2), a)  # exact: nf * LN2_HI / 2 is
    h = _fma(b, nf, splat(b, x, -LN2_LO / 2), h)
    half = _fma(b, b.fmul(h, h), _horner(b, h, _TANH_Q), h)  # (e**(2h) - 1) / 2
    bits = b.shl(b.bitcast(m, _int_lanes(x)), _int_lanes(x, 23))  # n << 23 (MAGIC shifts out)
    s2 = b.bitcast(b.add(bits, _int_lanes(x, 128 << 23)), x.type)  # 2**(n+1)
    u = _fma(b, s2, half, _fma(b, s2, splat(b, x, 0.5), splat(b, x, -1.0)))
    y = b.fdiv(u, b.fadd(u, splat(b, x, 2.0)))
    return _call(b, "llvm.copysign", y, x)


def _sigmoid(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """1 / (1 + e) for x >= 0, e / (1 + e) below, e = exp(-|x|) <= 1: exp never overflows and
    tiny (denormal) results keep their digits; one division either way."""
    v = b.fneg(_call(b, "llvm.fabs", x))
    if _float_scalef(b, x):  # v <= 0: no upper clamp, and n may be NaN (NaN in, NaN out)
        nf, p = _exp_reduced(b, _max(b, v, splat(b, x, EXP_MIN)))
        e = _scale(b, b.fadd(splat(b, x, 1.0), p), nf)
    else:
        e = _exp(b, v)
    num = b.select(b.fcmp_ordered(">=", x, splat(b, x, 0.0)), splat(b, x, 1.0), e)
    return b.fdiv(num, b.fadd(splat(b, x, 1.0), e))


def _hard_sigmoid(b: ir.IRBuilder, x: ir.Value, alpha: float, beta: float) -> ir.Value:
    y = b.fadd(b.fmul(x, splat(b, x, alpha)), splat(b, x, beta))
    return _min(b, _max(b, y, splat(b, x, 0.0)), splat(b, x, 1.0))


def _fma(b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
    """x * y + z, fused where the target has FMA (one instruction, one rounding), else a
    multiply and an add: the polynomials' error bounds hold either way."""
    return _call(b, "llvm.fmuladd", x, y, z)


def _horner(b: ir.IRBuilder, t: ir.Value, coeffs: tuple[float, ...]) -> ir.Value:
    """sum(coeffs[i] * t**i), lowest degree first."""
    y = splat(b, t, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        y = _fma(b, y, t, splat(b, t, c))
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


# log(x) = k ln 2 + log1p(f): x = 2**k * m with m in [sqrt(1/2), sqrt(2)) (k and m from the
# exponent bits: subtracting sqrt(1/2)'s bits carries into the exponent exactly when m would be
# below sqrt(1/2)), f = m - 1 exact (Sterbenz); log1p(f) = f - f*f/2 + f**3 * P(f), P a
# least-squares fit on Chebyshev nodes to float64 (log1p(f) - f + f*f/2) / f**3, weighted by
# f**3 / log1p(f) (relative error); 0.86 ulp on the reduced range, simulated in float32.
# k ln 2 is added last in two parts (LN2_HI * k is exact for |k| < 256).
_LOG_P = (0.33333355, -0.25000852, 0.19999826, -0.16621371, 0.14227115, -0.13202104,
          0.12620327, -0.073628679)
SQRT_HALF_BITS = 0x3F3504F3
TINY = 2.0 ** -126  # smallest normal float32: below, scale by 2**23 first


def _log_tail(b: ir.IRBuilder, f: ir.Value, kf: ir.Value) -> ir.Value:
    """kf ln 2 + log1p(f) for f in [sqrt(1/2) - 1, sqrt(2) - 1] and kf a float integer."""
    z = b.fmul(f, f)
    y = b.fmul(b.fmul(f, z), _horner(b, f, _LOG_P))
    y = b.fadd(y, b.fmul(kf, splat(b, f, LN2_LO)))
    y = b.fsub(y, b.fmul(z, splat(b, f, 0.5)))
    return b.fadd(b.fadd(f, y), b.fmul(kf, splat(b, f, LN2_HI)))


def _split(b: ir.IRBuilder, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(k, m) with x = 2**k * m, m in [sqrt(1/2), sqrt(2)), k an integer, for normal x > 0."""
    bits = b.bitcast(x, _int_lanes(x))
    k = b.ashr(b.sub(bits, _int_lanes(x, SQRT_HALF_BITS)), _int_lanes(x, 23))
    return k, b.bitcast(b.sub(bits, b.shl(k, _int_lanes(x, 23))), x.type)


def _log(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Natural log, branch-free: log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, NaN stays."""
    if _is_double(x):
        return _call(b, "llvm.log", x)
    tiny = b.fcmp_ordered("<", x, splat(b, x, TINY))  # denormals (and <= 0, selected away)
    k, m = _split(b, b.select(tiny, b.fmul(x, splat(b, x, 2.0 ** 23)), x))
    k = b.sub(k, b.select(tiny, _int_lanes(x, 23), _int_lanes(x, 0)))
    y = _log_tail(b, b.fsub(m, splat(b, x, 1.0)), b.sitofp(k, x.type))
    y = b.select(b.fcmp_ordered("<", x, splat(b, x, math.inf)), y, x)  # inf and NaN: x
    y = b.select(b.fcmp_ordered("==", x, splat(b, x, 0.0)), splat(b, x, -math.inf), y)
    return b.select(b.fcmp_ordered("<", x, splat(b, x, 0.0)), splat(b, x, math.nan), y)


def _log1p(b: ir.IRBuilder, u: ir.Value) -> ir.Value:
    """log(1 + u) for 0 <= u <= 1 (Softplus; NaN propagates), accurate for tiny u: w = 1 + u
    rounded is split as 2**k * m, and w's rounding error c = u - (w - 1) (exact) is added back
    to f = m - 1 scaled by 2**-k, so log1p(f) is that of 1 + u itself, with no division."""
    one = splat(b, u, 1.0)
    w = b.fadd(one, u)
    if _is_double(u):  # Goldberg: log(w) * u / (w - 1) cancels w's rounding error
        y = b.fdiv(b.fmul(_call(b, "llvm.log", w), u), b.fsub(w, one))
        return b.select(b.fcmp_ordered("==", w, one), u, y)
    c = b.fsub(u, b.fsub(w, one))
    k, m = _split(b, w)
    f = b.fadd(b.fsub(m, one), b.fmul(c, _pow2(b, b.neg(k), u)))
    return _log_tail(b, f, b.sitofp(k, u.type))


EXPM1_MIN = -24.0  # expm1 rounds to -1 in float32 below -17.33


def _expm1_in(b: ir.IRBuilder, v: ir.Value, lo: float | None, hi: float) -> ir.Value:
    """exp(v) - 1 for v clamped into [lo, hi] (hi <= 88; lo >= -24, or None when v >= -24),
    accurate near 0, no division: with v = n ln 2 + r and p = e**r - 1 (exp's polynomial),
    expm1(v) = (2**n - 1) + 2**n * p; 2**n - 1 is exact for n in [-24, 24], and below -24 the
    result rounds to -1 anyway. A NaN propagates (through r: the clamps keep it, one vmaxps
    each)."""
    vk = _min(b, v, splat(b, v, hi))
    vk = vk if lo is None else _max(b, vk, splat(b, v, lo))
    nf, p = _exp_reduced(b, _call(b, "llvm.minnum", vk, splat(b, v, hi)), vk)  # nf: no NaN
    t = _pow2(b, b.fptosi(nf, _int_lanes(v)), v)  # n in [-35, 127]: a normal float
    return _fma(b, t, p, b.fsub(t, splat(b, v, 1.0)))


def _expm1(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """exp(x) - 1 for x <= 0 (Elu); NaN and -0 stay."""
    if _is_double(x):  # Kahan: with u = exp(x) rounded, (u - 1) * x / log(u)
        one = splat(b, x, 1.0)
        u = _exp(b, x)
        um1 = b.fsub(u, one)
        y = b.fdiv(b.fmul(um1, x), _call(b, "llvm.log", u))
        y = b.select(b.fcmp_ordered("==", um1, splat(b, x, -1.0)), um1, y)
        return b.select(b.fcmp_ordered("==", u, one), x, y)
    y = _expm1_in(b, x, EXPM1_MIN, 0.0)
    return b.select(b.fcmp_ordered("==", x, splat(b, x, 0.0)), x, y)


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
    if fn is Unary.LOG:
        return _log(b, x)
    intrinsic = {Unary.SQRT: "llvm.sqrt",
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
