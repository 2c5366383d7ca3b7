"""Fit an odd rational approximation of tanh in float32 and measure its real error: the
experiment behind backends/cpu/math.py ``_tanh`` NOT being a rational (it is u / (u + 2) with
u = expm1(2|x|), 2.4 ulp).

    python -m sw2c.benchmarks.fit_tanh [--p 5] [--q 4] [--clamp 9.1] [--stride 7]

tanh(a) ~ a * P(t) / Q(t), t = a*a, a = |x| in [0, clamp], P(0) = Q(0) = 1 (so tanh(a) = a
to the last bit near 0). The fit is Loeb's iteratively reweighted linear least squares: with
g = tanh(a) / a, minimize sum (w_i (P(t_i) - g_i Q(t_i)) / (g_i Q_prev(t_i)))**2 (the relative
error of the quotient, linearized around the previous denominator) over Chebyshev nodes in a,
in float64, with Lawson's weight update w_i *= |relative error_i|**(1/2) to push the least
squares solution towards minimax. The coefficients are then rounded to float32 and the
float32 evaluation (Horner with FMA, one division) is simulated over the float32 in
(2**-30, clamp + 1] at a stride, reporting the max error in ulps of the float64 tanh.

Measured (stride 61; degrees of P, Q in t): (4, 3) 14.4 ulp, (4, 4) 5.0, (5, 3) 5.9,
(5, 4) 4.5 (float64 fit error 0.025 ulp), (6, 3) 4.5. The float32 evaluation, not the fit,
sets the error: even with P and Q exact and only the numerator, denominator and quotient
rounded, the max is 2.9 ulp where tanh is in [0.5, 1) (each rounding is worth up to 1 ulp of
the result there), and Horner's roundings add ~2 more; a 3 ulp bound is out of reach.
"""

from __future__ import annotations

import argparse

import numpy as np


def fit(p_deg: int, q_deg: int, clamp: float, iters: int = 40,
        nodes: int = 6000) -> tuple[np.ndarray, np.ndarray, float]:
    """(p, q) lowest degree first in t = a*a with p[0] = q[0] = 1, and the max relative error
    in float64 on the nodes."""
    k = np.arange(nodes)
    a = clamp / 2 * (1 - np.cos(np.pi * (k + 0.5) / nodes))  # Chebyshev nodes on [0, clamp]
    a = np.concatenate([a, [clamp]])
    t = a * a
    g = np.where(a > 0, np.tanh(a) / np.where(a > 0, a, 1), 1.0)
    s = t / clamp**2  # scaled variable: a well conditioned system
    sp = s[:, None] ** np.arange(1, p_deg + 1)
    sq = s[:, None] ** np.arange(1, q_deg + 1)
    w = np.ones_like(s)
    q_prev = np.ones_like(s)
    best = (None, None, np.inf)
    for _ in range(iters):
        # P(s) - g Q(s) = 0 with p0 = q0 = 1: sum p_j s^j - g sum q_j s^j = g - 1
        scale = w / (g * q_prev)
        m = np.hstack([sp, -g[:, None] * sq]) * scale[:, None]
        c, *_ = np.linalg.lstsq(m, (g - 1) * scale, rcond=None)
        ps, qs = np.r_[1.0, c[:p_deg]], np.r_[1.0, c[p_deg:]]
        q_prev = np.polyval(qs[::-1], s)
        rel = np.abs(np.polyval(ps[::-1], s) / q_prev / g - 1)
        if rel.max() < best[2]:
            best = (ps, qs, rel.max())
        w = w * np.sqrt(rel / rel.max() + 1e-3)
        w /= w.max()
    ps, qs, err = best
    to_t = clamp ** -(2.0 * np.arange(max(p_deg, q_deg) + 1))
    return ps * to_t[:p_deg + 1], qs * to_t[:q_deg + 1], err


def _fma32(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """x * y + z rounded once to float32 (the float64 product of two float32 is exact)."""
    return (x.astype(np.float64) * y + z).astype(np.float32)


def _horner32(t: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    y = np.full_like(t, coeffs[-1])
    for c in coeffs[-2::-1]:
        y = _fma32(y, t, np.float32(c))
    return y


def tanh32(a: np.ndarray, p: np.ndarray, q: np.ndarray, clamp: float) -> np.ndarray:
    """The emitted float32 evaluation for a >= 0 (math.py ``_tanh``)."""
    a = np.minimum(a, np.float32(clamp))
    t = a * a
    y = (a * _horner32(t, p)) / _horner32(t, q)
    return np.minimum(y, np.float32(1))


def max_ulp(p: np.ndarray, q: np.ndarray, clamp: float, stride: int = 7) -> tuple[float, float]:
    """(max ulp error, where) of tanh32 over the float32 in [2**-30, clamp + 1] at a stride
    (below 2**-30 tanh(a) rounds to a, which P(0) = Q(0) = 1 gives exactly)."""
    lo = np.float32(2.0**-30).view(np.uint32)
    hi = np.float32(clamp + 1).view(np.uint32)
    worst, where = 0.0, 0.0
    for start in range(int(lo), int(hi), 1 << 24):
        bits = np.arange(start, min(start + (1 << 24), int(hi)), stride, dtype=np.uint32)
        a = bits.view(np.float32)
        ref = np.tanh(a.astype(np.float64))
        err = np.abs(tanh32(a, p, q, clamp) - ref) / np.spacing(ref.astype(np.float32))
        i = int(err.argmax())
        if err[i] > worst:
            worst, where = float(err[i]), float(a[i])
    return worst, where


def main(argv: list[str] | None = None) -> None:
    """Fit, round to float32, print the coefficients and the float32 error."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=int, default=5, help="degree of P in a*a")
    ap.add_argument("--q", type=int, default=4, help="degree of Q in a*a")
    ap.add_argument("--clamp", type=float, default=9.1)
    ap.add_argument("--stride", type=int, default=7)
    args = ap.parse_args(argv)
    p, q, err = fit(args.p, args.q, args.clamp)
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    print(f"P degree {args.p}, Q degree {args.q} in a*a, clamp {args.clamp}: float64 fit max "
          f"relative error {err:.3g} ({err * 2**24:.3f} ulp at 1)")
    print("P =", tuple(float(c) for c in p32))
    print("Q =", tuple(float(c) for c in q32))
    one = tanh32(np.float32([args.clamp]), p32, q32, args.clamp)[0]
    worst, where = max_ulp(p32, q32, args.clamp, args.stride)
    print(f"float32: max {worst:.3f} ulp at a = {where!r}; at the clamp {one!r}")


if __name__ == "__main__":
    main()
