"""GridSample on a run-time grid, and DFT of a static length.

GridSample is separable: along each spatial axis a sampling position becomes a few integer taps
with weights (1 for nearest, 2 for linear, 4 for cubic), computed with elementwise float ops;
every combination of taps is one GATHER of channel vectors at a flat int64 position, scaled by
the product of its weights, and the combinations are summed. DFT is a MatMul by a constant
matrix of cosines and sines.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..ir import Binary, Op, Unary
from .convert import Ctx, Val, converter, prod
from .ops_nn import to_first, to_last

MODES = {"bilinear": "linear", "bicubic": "cubic", "linear": "linear", "cubic": "cubic",
         "nearest": "nearest"}
CUBIC_A = -0.75  # Keys' cubic convolution, as PyTorch and ONNX


class _Ops:
    """Elementwise float helpers over one Ctx (short names keep the formulas readable)."""

    def __init__(self, cx: Ctx) -> None:
        self.cx = cx

    def c(self, v: float) -> np.ndarray:
        return self.cx.scalar(v)

    def add(self, a: Val, b: Val | float) -> Val:
        return self.cx.binary(Binary.ADD, a, self._v(b))

    def sub(self, a: Val | float, b: Val | float) -> Val:
        return self.cx.binary(Binary.SUB, self._v(a), self._v(b))

    def mul(self, a: Val, b: Val | float) -> Val:
        return self.cx.binary(Binary.MUL, a, self._v(b))

    def where(self, cond: Val, a: Val | float, b: Val | float) -> Val:
        return self.cx.add(Op.WHERE, [cond, self._v(a), self._v(b)])

    def lt(self, a: Val, b: Val | float) -> Val:
        return self.cx.binary(Binary.LT, a, self._v(b))

    def gt(self, a: Val, b: Val | float) -> Val:
        return self.cx.binary(Binary.GT, a, self._v(b))

    def clamp(self, a: Val, lo: float, hi: float) -> Val:
        return self.cx.binary(Binary.MIN, self.cx.binary(Binary.MAX, a, self.c(lo)), self.c(hi))

    def floor(self, a: Val) -> Val:
        return self.cx.unary(Unary.FLOOR, a)

    def _v(self, v: Val | float) -> Val:
        return self.c(v) if isinstance(v, (int, float)) else v


def _reflect(o: _Ops, x: Val, lo: float, hi: float) -> Val:
    """x reflected at lo and hi until inside (ONNX's _gs_reflect), as float ops."""
    span = hi - lo
    if span <= 0:
        return o.clamp(x, lo, hi)
    below, above = o.lt(x, lo), o.gt(x, hi)
    dx = o.where(below, o.sub(lo, x), o.sub(x, hi))
    n = o.floor(o.mul(dx, 1 / span))
    n = o.where(o.gt(o.mul(n, span), dx), o.sub(n, 1.0), n)  # 1/span rounding
    r = o.sub(dx, o.mul(n, span))
    odd = o.cx.binary(Binary.EQ, o.sub(n, o.mul(o.floor(o.mul(n, 0.5)), 2.0)), o.c(1.0))
    to_lo = o.cx.binary(Binary.XOR, below, odd)  # below and even, or above and odd
    folded = o.where(to_lo, o.add(r, lo), o.sub(hi, r))
    return o.where(o.cx.binary(Binary.OR, below, above), folded, x)


def _cubic_weights(o: _Ops, t: Val) -> list[Val]:
    """Keys' weights of the taps at -1, 0, 1, 2 for a fraction t in [0, 1)."""
    a = CUBIC_A

    def near(d: Val) -> Val:  # |d| <= 1: ((a + 2) d - (a + 3)) d^2 + 1
        return o.add(o.mul(o.mul(o.sub(o.mul(d, a + 2), a + 3), d), d), 1.0)

    def far(d: Val) -> Val:  # 1 < |d| < 2: ((a d - 5a) d + 8a) d - 4a
        return o.sub(o.mul(o.add(o.mul(o.sub(o.mul(d, a), 5 * a), d), 8 * a), d), 4 * a)

    return [far(o.add(t, 1.0)), near(t), near(o.sub(1.0, t)), far(o.sub(2.0, t))]


def _taps(o: _Ops, x: Val, mode: str, padding: str, size: int,
          lo: float, hi: float) -> list[tuple[Val, Val | None]]:
    """(int64 index, weight or None for 1) per tap along one axis of ``size``."""
    if mode == "nearest":
        base, offsets, weights = x, [0], [None]
    else:
        base = o.floor(x)
        t = o.sub(x, base)
        if mode == "linear":
            offsets, weights = [0, 1], [o.sub(1.0, t), t]
        else:
            offsets, weights = [-1, 0, 1, 2], _cubic_weights(o, t)
    out = []
    for off, w in zip(offsets, weights):
        i = o.add(base, float(off)) if off else base
        if padding == "zeros":
            inside = o.cx.binary(Binary.AND, o.cx.binary(Binary.GE, i, o.c(0.0)),
                                 o.cx.binary(Binary.LE, i, o.c(size - 1.0)))
            w = o.where(inside, 1.0 if w is None else w, 0.0)
        elif padding == "reflection":
            i = _reflect(o, i, lo, hi)
        # clamped (border padding; and so the cast and the flat position stay in range)
        i = o.cx.add(Op.CAST, [o.clamp(i, 0.0, size - 1.0)], to="int64")
        out.append((i, w))
    return out


@converter("GridSample", since=16)
def grid_sample(cx: Ctx) -> Val:
    x, grid = cx.x(0), cx.x(1)
    xs, gs = cx.shape(x), cx.shape(grid)
    n = len(xs) - 2
    if n < 1 or len(gs) != n + 2 or gs[0] != xs[0] or gs[-1] != n:
        raise cx.error(f"input {list(xs)} and grid {list(gs)} must be [N, C, *S] and "
                       f"[N, *O, {n}]")
    mode = MODES.get(str(cx.attr("mode", "bilinear" if cx.opset < 20 else "linear")))
    padding = str(cx.attr("padding_mode", "zeros"))
    if mode is None or padding not in ("zeros", "border", "reflection"):
        raise cx.error(f"mode {cx.attr('mode')!r} / padding_mode {padding!r} is not defined")
    if cx.type(x).dtype != "float32" or cx.type(grid).dtype != "float32":
        raise cx.unsupported("only float32 input and grid are supported")
    align = bool(cx.attr("align_corners", 0))
    o = _Ops(cx)
    batch, sizes, outs = xs[0], xs[2:], list(gs[1:-1])
    axis_taps = []
    for i, d in enumerate(sizes):
        starts = [0] * len(gs)
        starts[-1] = n - 1 - i  # the grid's last axis lists x (the last axis) first
        g = cx.reshape(cx.slice(grid, starts, [1] * len(gs), [*gs[:-1], 1]), gs[:-1])
        if align:
            pos, lo, hi = o.mul(o.add(g, 1.0), (d - 1) / 2), 0.0, d - 1.0
        else:
            pos, lo, hi = o.sub(o.mul(o.add(g, 1.0), d / 2), 0.5), -0.5, d - 0.5
        if mode == "nearest":
            pos = cx.unary(Unary.ROUND, pos)  # half to even, as PyTorch
        if padding == "border":  # only positions outside [lo, hi] move (cubic taps differ)
            pos = o.where(o.lt(pos, lo), 0.0, o.where(o.gt(pos, hi), d - 1.0, pos))
        elif padding == "reflection":
            pos = _reflect(o, pos, lo, hi)
        axis_taps.append(_taps(o, pos, mode, padding, d, lo, hi))
    table = cx.reshape(cx.transpose(x, to_last(n + 2)), [batch * prod(sizes), xs[1]])
    strides = np.cumprod([1, *sizes[::-1]])[::-1]  # [prod(S), ..., 1]
    base = (np.arange(batch, dtype=np.int64) * int(strides[0])).reshape(batch, *[1] * n)
    total = None
    for combo in itertools.product(*axis_taps):
        flat: Val = base
        weight: Val | None = None
        for k, (i, w) in enumerate(combo):
            step = np.array(int(strides[k + 1]), np.int64)
            flat = cx.binary(Binary.ADD, flat, cx.binary(Binary.MUL, i, step))
            if w is not None:
                weight = w if weight is None else o.mul(weight, w)
        y = cx.add(Op.GATHER, [table, flat], axis=0)  # [N, *O, C]
        if weight is not None:
            y = o.mul(y, cx.reshape(weight, [batch, *outs, 1]))
        total = y if total is None else o.add(total, y)
    return cx.transpose(total, to_first(n + 2))


# --- DFT and STFT --------------------------------------------------------------------------------
MAX_MATRIX = 1 << 24  # elements of the constant DFT matrix (64 MiB of float32)


def _spectrum(signal: np.ndarray, length: int, inverse: bool, onesided: bool) -> np.ndarray:
    """ONNX's DFT of ``signal`` [K, n, 1 or 2] (real, or real and imaginary parts) along axis
    1, in float64: [K, m, 2], or [K, m, 1] for the inverse of a one-sided spectrum."""
    z = signal[..., 0] if signal.shape[-1] == 1 else signal[..., 0] + 1j * signal[..., 1]
    if inverse and onesided:
        return np.fft.irfft(z, n=length, axis=1)[..., None]
    y = np.fft.ifft(z, n=length, axis=1) if inverse else np.fft.fft(z, n=length, axis=1)
    if onesided and not inverse:
        y = y[:, :length // 2 + 1]
    return np.stack([y.real, y.imag], axis=-1)


def _dft_along(cx: Ctx, x: Val, axis: int, length: int, inverse: bool, onesided: bool) -> Val:
    """The DFT of ``x`` [..., n, ..., c] along ``axis``: a MatMul of the (axis, c) pairs by
    the constant matrix the transform is (it is linear in the real and imaginary parts)."""
    xs = cx.shape(x)
    rank, n, c = len(xs), xs[axis], xs[-1]
    if c not in (1, 2) or not 0 <= axis < rank - 1:
        raise cx.error(f"input {list(xs)} must end in 1 or 2 (real, imaginary) and the axis "
                       f"{axis} must be another")
    if length < 1:
        raise cx.error(f"dft_length {length} must be positive")
    basis = np.eye(n * c).reshape(n * c, n, c)
    out = _spectrum(basis, length, inverse, onesided)
    m, c_out = out.shape[1:]
    if out.size > MAX_MATRIX:
        raise cx.unsupported(f"a DFT of {n} -> {m} points: its {n * c} x {m * c_out} matrix "
                             "is too large (sw2c computes a DFT as one MatMul)")
    rest = [a for a in range(rank - 1) if a != axis]
    y = cx.transpose(x, [*rest, axis, rank - 1])
    lead = [xs[a] for a in rest]
    y = cx.reshape(y, [prod(lead), n * c])
    y = cx.matmul(y, out.reshape(n * c, m * c_out).astype(np.float32))
    y = cx.reshape(y, [*lead, m, c_out])
    back = np.argsort([*rest, axis, rank - 1])
    return cx.transpose(y, [int(i) for i in back])


def _dft(cx: Ctx, axis: int) -> Val:
    x = cx.x(0)
    xs = cx.shape(x)
    axis = cx.axis(axis, len(xs))
    inverse, onesided = bool(cx.attr("inverse", 0)), bool(cx.attr("onesided", 0))
    length = cx.const_ints(1, "dft_length")
    if length is None:
        n = 2 * (xs[axis] - 1) if inverse and onesided else xs[axis]
    elif len(length) != 1:
        raise cx.error(f"dft_length {length} must be one int")
    else:
        n = length[0]
    return _dft_along(cx, x, axis, n, inverse, onesided)


@converter("DFT", since=17)
def dft_17(cx: Ctx) -> Val:
    return _dft(cx, int(cx.attr("axis", 1)))


@converter("DFT", since=20)
def dft_20(cx: Ctx) -> Val:
    """The axis is an input from opset 20 (default -2)."""
    axis = cx.const_ints(2, "axis")
    if axis is not None and len(axis) != 1:
        raise cx.error(f"axis {axis} must be one int")
    return _dft(cx, -2 if axis is None else axis[0])


@converter("STFT", since=17)
def stft(cx: Ctx) -> Val:
    """Frames of the signal [batch, length, c] (a constant-index gather), times the window,
    then their DFT: [batch, frames, bins, 2]."""
    x = cx.x(0)
    xs = cx.shape(x)
    step = cx.const_ints(1, "frame_step")
    frame = cx.const_ints(3, "frame_length")
    window = cx.x(2) if cx.has(2) else None
    if len(xs) != 3 or step is None or len(step) != 1 or step[0] < 1:
        raise cx.error(f"needs a signal [batch, length, 1 or 2] and a positive frame_step, "
                       f"got {list(xs)} and {step}")
    if frame is not None:
        size = frame[0]
    else:
        size = cx.shape(window)[0] if window is not None else xs[1]
    if not 1 <= size <= xs[1] or (window is not None and cx.shape(window) != (size,)):
        raise cx.error(f"frame length {size} and window must fit the signal of {xs[1]}")
    frames = (xs[1] - size) // step[0] + 1
    idx = np.arange(frames)[:, None] * step[0] + np.arange(size)[None, :]
    y = cx.add(Op.GATHER, [x, idx.astype(np.int64)], axis=1)  # [batch, frames, size, c]
    if window is not None:
        y = cx.binary(Binary.MUL, y, cx.reshape(window, [1, 1, size, 1]))
    return _dft_along(cx, y, 2, size, False, bool(cx.attr("onesided", 1)))


# --- AffineGrid ----------------------------------------------------------------------------------
def _axis_points(d: int, align: bool) -> np.ndarray:
    """The normalized coordinates of ``d`` pixel centers (or corners) in [-1, 1]."""
    if align:
        return np.linspace(-1.0, 1.0, d) if d > 1 else np.array([-1.0])
    return -1 + (2 * np.arange(d) + 1) / d


@converter("AffineGrid", since=20)
def affine_grid(cx: Ctx) -> Val:
    """theta [N, n, n + 1] applied to every pixel's homogeneous coordinates (x first, then
    y, [z], 1): one batched MatMul by a constant [prod(S), n + 1] grid; [N, *S, n]."""
    theta = cx.x(0)
    size = cx.const_ints(1, "size")
    ts = cx.shape(theta)
    if size is None or len(size) not in (4, 5) or any(d < 1 for d in size):
        raise cx.error(f"size {size} must be [N, C, H, W] or [N, C, D, H, W]")
    n, spatial = len(size) - 2, size[2:]
    if ts != (size[0], n, n + 1):
        raise cx.error(f"theta {list(ts)} must be [{size[0]}, {n}, {n + 1}]")
    align = bool(cx.attr("align_corners", 0))
    axes = np.meshgrid(*(_axis_points(d, align) for d in spatial), indexing="ij")
    base = np.stack([*axes[::-1], np.ones(spatial)], axis=-1).reshape(1, -1, n + 1)
    y = cx.matmul(base.astype(np.float32), cx.transpose(theta, (0, 2, 1)))  # [N, P, n]
    return cx.reshape(y, [size[0], *spatial, n])
