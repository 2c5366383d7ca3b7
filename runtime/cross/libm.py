"""Float32 inverse-trigonometric and hyperbolic functions for freestanding cross builds.

The cpu backend calls libm's ``asinf``, ``acosf``, ``atanf``, ``sinhf``, ``coshf``,
``asinhf``, ``acoshf`` and ``atanhf`` lane by lane (``math.LIBM``); a freestanding build has no
libm and zig's compiler-rt has none of these, so ``fp32.libm_object`` defines them from these
LLVM IR bodies: branch-free float32 code (selects, no calls but ``llvm.sqrt`` / ``llvm.fabs``
and the backend's own ``exp``, ``log`` and ``log1p``), so nothing in them needs a library.

* atan: Cephes' ``atanf`` reduction (|x| > tan(3pi/8): pi/2 + atan(-1/x); > tan(pi/8):
  pi/4 + atan((x-1)/(x+1))) and its odd polynomial on |t| <= tan(pi/8);
* asin: Cephes' ``asinf`` (|x| > 1/2: pi/2 - 2 asin(sqrt((1-|x|)/2))), acos from the same core;
* sinh, cosh: with h = exp(|x|/2), e^|x| = h * h without overflowing before sinh does;
  sinh(|x| < 1) = (E + E/(E+1))/2 with E = expm1(|x|) (no cancellation);
* asinh, acosh, atanh: log1p forms (asinh(a) = log1p(a + a^2/(1 + sqrt(1 + a^2))), acosh(x) =
  log1p(t + sqrt(2t + t^2)) with t = x - 1, atanh(a) = log1p(2a/(1-a))/2), and log(a) + ln 2
  for a > 2^12, where the square root is a to float precision.

Domains and specials as C99: asin/acos/acosh/atanh outside their domain are NaN, atanh(+-1) is
+-inf, odd functions keep the sign of zero, a NaN stays NaN. Accuracy is measured against numpy
in tests/test_cross_libm.py (a few ulp).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llvmlite import ir

F32 = ir.FloatType()
# Cephes atanf / asinf coefficients (single precision, ~1-2 ulp on their reduced ranges)
_ATAN_P = (-3.33329491539e-1, 1.99777106478e-1, -1.38776856032e-1, 8.05374449538e-2)
_ASIN_P = (1.6666752422e-1, 7.4953002686e-2, 4.5470025998e-2, 2.4181311049e-2,
           4.2163199048e-2)
TAN_3PI_8, TAN_PI_8 = 2.414213562373095, 0.4142135623730950
BIG = 4096.0  # above, sqrt(1 + a^2) is a in float32: asinh/acosh are log(a) + ln 2


def _c(v: float) -> ir.Constant:
    return ir.Constant(F32, v)


class _Body:
    """A builder for one ``float name(float)`` function, with the few helpers the bodies
    share."""

    def __init__(self, module: ir.Module, name: str) -> None:
        fn = ir.Function(module, ir.FunctionType(F32, [F32]), name)
        fn.linkage = "weak"
        self.module, self.b, self.x = module, ir.IRBuilder(fn.append_basic_block()), fn.args[0]

    def call(self, name: str, *args: ir.Value) -> ir.Value:
        from ...backends.cpu.llvm import intrinsic

        fn = intrinsic(self.module, name, [F32], F32, [F32] * len(args))
        return self.b.call(fn, list(args))

    def poly(self, t: ir.Value, coeffs: tuple[float, ...]) -> ir.Value:
        """sum(coeffs[i] * t**i), lowest degree first."""
        y = _c(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            y = self.b.fadd(self.b.fmul(y, t), _c(c))
        return y

    def lt(self, a: ir.Value, v: float) -> ir.Value:
        return self.b.fcmp_ordered("<", a, _c(v))

    def gt(self, a: ir.Value, v: float) -> ir.Value:
        return self.b.fcmp_ordered(">", a, _c(v))

    def sign_of_x(self, y: ir.Value) -> ir.Value:
        return self.call("llvm.copysign", y, self.x)

    def nan_unless(self, ok: ir.Value, y: ir.Value) -> ir.Value:
        """y where ``ok``, else NaN (a NaN x is kept: it fails every ordered test)."""
        return self.b.select(ok, y, self.b.fadd(self.x, _c(math.nan)))


def _atan(s: _Body) -> ir.Value:
    b = s.b
    a = s.call("llvm.fabs", s.x)
    big, mid = s.gt(a, TAN_3PI_8), s.gt(a, TAN_PI_8)
    t = b.select(big, b.fdiv(_c(-1.0), a),
                 b.select(mid, b.fdiv(b.fsub(a, _c(1.0)), b.fadd(a, _c(1.0))), a))
    y0 = b.select(big, _c(math.pi / 2), b.select(mid, _c(math.pi / 4), _c(0.0)))
    z = b.fmul(t, t)
    y = b.fadd(b.fmul(b.fmul(s.poly(z, _ATAN_P), z), t), t)
    return s.sign_of_x(b.fadd(y0, y))


def _asin_core(s: _Body, a: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(asin of the reduced argument, whether |x| > 1/2: then asin(|x|) = pi/2 - 2 of it)."""
    b = s.b
    high = s.gt(a, 0.5)
    z = b.select(high, b.fmul(_c(0.5), b.fsub(_c(1.0), a)), b.fmul(a, a))
    r = b.select(high, s.call("llvm.sqrt", z), a)
    return b.fadd(b.fmul(b.fmul(s.poly(z, _ASIN_P), z), r), r), high


def _asin(s: _Body) -> ir.Value:
    b = s.b
    a = s.call("llvm.fabs", s.x)
    y, high = _asin_core(s, b.select(s.gt(a, 1.0), _c(0.0), a))
    y = b.select(high, b.fsub(_c(math.pi / 2), b.fadd(y, y)), y)
    return s.nan_unless(b.not_(s.gt(a, 1.0)), s.sign_of_x(y))


def _acos(s: _Body) -> ir.Value:
    """acos(x) = pi/2 - asin(x) for |x| <= 1/2; 2 asin(sqrt((1-|x|)/2)) (or pi minus it for
    x < 0) above, which is what the core computes before its pi/2 - 2y step."""
    b = s.b
    a = s.call("llvm.fabs", s.x)
    y, high = _asin_core(s, b.select(s.gt(a, 1.0), _c(0.0), a))
    twice = b.fadd(y, y)
    negative = s.lt(s.x, 0.0)
    far = b.select(negative, b.fsub(_c(math.pi), twice), twice)
    near = b.fsub(_c(math.pi / 2), s.sign_of_x(y))
    return s.nan_unless(b.not_(s.gt(a, 1.0)), b.select(high, far, near))


def _exp_halves(s: _Body, a: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(e^a / 2, e^-a / 2) from h = exp(a/2): finite while sinh/cosh are (a <= 89.4)."""
    from ...backends.cpu.math import _exp

    b = s.b
    h = _exp(b, b.fmul(a, _c(0.5)))
    return b.fmul(b.fmul(h, _c(0.5)), h), b.fdiv(b.fdiv(_c(0.5), h), h)


def _sinh(s: _Body) -> ir.Value:
    from ...backends.cpu.math import _expm1_in

    b = s.b
    a = s.call("llvm.fabs", s.x)
    up, down = _exp_halves(s, a)
    e = _expm1_in(b, s.call("llvm.minnum", a, _c(1.0)), None, 1.0)
    small = b.fmul(_c(0.5), b.fadd(e, b.fdiv(e, b.fadd(e, _c(1.0)))))
    small = b.select(b.fcmp_ordered("==", a, _c(0.0)), a, small)  # +-0 stays
    return s.sign_of_x(b.select(s.lt(a, 1.0), small, b.fsub(up, down)))


def _cosh(s: _Body) -> ir.Value:
    up, down = _exp_halves(s, s.call("llvm.fabs", s.x))
    return s.b.fadd(up, down)


def _log_big(s: _Body, a: ir.Value) -> ir.Value:
    """log(a) + ln 2 = log(2a) without overflowing 2a."""
    from ...backends.cpu.math import _log

    return s.b.fadd(_log(s.b, a), _c(math.log(2.0)))


def _log1p(s: _Body, u: ir.Value) -> ir.Value:
    from ...backends.cpu.math import _log1p

    return _log1p(s.b, u)


def _asinh(s: _Body) -> ir.Value:
    b = s.b
    a = s.call("llvm.fabs", s.x)
    m = s.call("llvm.minnum", a, _c(BIG))  # the small form on a finite argument
    aa = b.fmul(m, m)
    u = b.fadd(m, b.fdiv(aa, b.fadd(_c(1.0), s.call("llvm.sqrt", b.fadd(_c(1.0), aa)))))
    y = b.select(s.gt(a, BIG), _log_big(s, a), _log1p(s, u))
    y = b.select(b.fcmp_ordered("==", a, _c(0.0)), a, y)
    return s.nan_unless(b.fcmp_ordered("==", a, a), s.sign_of_x(y))


def _acosh(s: _Body) -> ir.Value:
    b = s.b
    t = b.fsub(s.call("llvm.minnum", s.call("llvm.maxnum", s.x, _c(1.0)), _c(BIG)), _c(1.0))
    u = b.fadd(t, s.call("llvm.sqrt", b.fadd(b.fadd(t, t), b.fmul(t, t))))
    y = b.select(s.gt(s.x, BIG), _log_big(s, s.x), _log1p(s, u))
    return s.nan_unless(b.not_(s.lt(s.x, 1.0)), b.select(b.fcmp_ordered("==", s.x, s.x), y,
                                                         s.x))


def _atanh(s: _Body) -> ir.Value:
    b = s.b
    a = s.call("llvm.fabs", s.x)
    inside = s.lt(a, 1.0)
    m = b.select(inside, a, _c(0.0))
    y = b.fmul(_c(0.5), _log1p(s, b.fdiv(b.fadd(m, m), b.fsub(_c(1.0), m))))
    y = b.select(b.fcmp_ordered("==", a, _c(0.0)), a, y)
    y = b.select(b.fcmp_ordered("==", a, _c(1.0)), _c(math.inf), y)
    ok = b.and_(b.not_(s.gt(a, 1.0)), b.fcmp_ordered("==", a, a))  # a NaN fails too
    return s.nan_unless(ok, s.sign_of_x(y))


_BODIES: dict[str, Callable[[_Body], ir.Value]] = {
    "atanf": _atan, "asinf": _asin, "acosf": _acos, "sinhf": _sinh, "coshf": _cosh,
    "asinhf": _asinh, "acoshf": _acosh, "atanhf": _atanh}


def emit(module: ir.Module, name: str) -> None:
    """Define ``float name(float)`` (one of ``FUNCTIONS``) in ``module``."""
    s = _Body(module, name)
    s.b.ret(_BODIES[name](s))


FUNCTIONS = tuple(_BODIES)
