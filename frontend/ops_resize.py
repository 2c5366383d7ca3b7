"""Resize (opsets 10, 11, 13, 18, 19) and Upsample (opsets 7, 9), with scales or sizes known at
compile time.

Resizing is separable: each resized axis is one 1-D map from input to output positions, built
here in numpy (the coordinate transformation, rounding and coefficient rules follow the ONNX
reference implementation). linear and cubic apply it as a constant [out, in] weight matrix: one
MATMUL per axis, with the axis moved last (so a NaN or inf in the input spreads along its row:
0 * inf is NaN). nearest must copy exactly, so it is a gather done with layout ops: the index
map of a rational scale is periodic, idx[j + P] = idx[j] + Q, so P strided slices, stacked and
interleaved by a reshape, produce it (an integer upscale is a broadcast multiply by ones; a
long period, a GATHER of constant indices).
tf_crop_and_resize's out-of-range positions read a pad of extrapolation_value appended to the
axis.

Where onnxruntime departs from the spec, this follows the spec and ONNX's reference (the
backend node tests): align_corners and tf_crop_and_resize divide by scale * size, not the
truncated size; half_pixel_symmetric's centre is size / 2, not size // 2; tf_crop_and_resize
crops an axis whose size stays (onnxruntime skips it). The half-pixel and asymmetric maps
round in float32 as onnxruntime does, so their nearest ties agree with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..ir import Binary, Op
from .convert import Ctx, Val, converter, prod
from .limits import check_bytes

MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
         "asymmetric", "tf_crop_and_resize")
NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")
MAX_PHASES = 8  # longer periods gather instead: one slice per phase is one node per phase


def source_coords(mode: str, size_in: int, size_out: int, scale: float, width: float,
                  roi: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per output position its coordinate in the input and whether it lies outside the input
    (only tf_crop_and_resize extrapolates). ``width`` is the output size before truncation:
    scale * size_in, or the exact size when sizes were given. As ONNX's reference, except that
    the half-pixel and asymmetric maps round in float32 as onnxruntime does (they differ
    where nearest rounding meets a tie: (1 + 0.5) / 0.6f - 0.5 is 2 in float32)."""
    y = np.arange(size_out, dtype=np.float64)
    f32 = np.float32
    yf, sf = y.astype(f32), f32(scale)
    outside = np.zeros(size_out, bool)
    if mode == "align_corners":
        x = np.zeros(size_out) if width == 1 else y * (size_in - 1) / (width - 1)
    elif mode == "asymmetric":
        x = (yf / sf).astype(np.float64)
    elif mode == "tf_crop_and_resize":  # float32 roi arithmetic, as the reference's
        lo, hi = f32(roi[0]), f32(roi[1])
        if width == 1:
            x = np.full(size_out, (hi - lo) * (size_in - 1) / 2)
        else:
            x = y * (hi - lo) * (size_in - 1) / (width - 1)
        x = x + lo * (size_in - 1)
        outside = (x < 0) | (x > size_in - 1)
    elif mode == "pytorch_half_pixel":
        # one output samples x = 0, as the spec and onnxruntime say (the reference: -0.5)
        x = np.zeros(1) if size_out == 1 else ((yf + f32(0.5)) / sf - f32(0.5))
        x = x.astype(np.float64)
    elif mode == "half_pixel":
        x = ((yf + f32(0.5)) / sf - f32(0.5)).astype(np.float64)
    else:  # half_pixel_symmetric: the centre of the input maps to the centre of the output
        offset = size_in / 2 * (1 - size_out / width)
        x = offset + (y + 0.5) / scale - 0.5
    return x, outside


def nearest_index(x: np.ndarray, rule: str, size_in: int, scale: float) -> np.ndarray:
    """The input index each output position copies, clamped into the input."""
    lo = np.floor(x)
    frac = x - lo
    if rule == "round_prefer_floor":
        idx = np.where(frac <= 0.5, lo, lo + 1)
    elif rule == "round_prefer_ceil":
        idx = np.where(frac < 0.5, lo, lo + 1)
    elif rule == "floor":
        idx = lo
    elif rule == "ceil":
        idx = np.ceil(x)
    else:  # "simple" (Resize-10, Upsample): truncate, or ceil when downsampling (onnxruntime)
        idx = np.ceil(x) if scale < 1 else np.trunc(x)
    return np.clip(idx, 0, size_in - 1).astype(np.int64)


def _cubic(a: float) -> Callable[[np.ndarray], np.ndarray]:
    """Keys' cubic convolution kernel with parameter ``a``."""

    def k(t: np.ndarray) -> np.ndarray:
        t = np.abs(t)
        near = ((a + 2) * t - (a + 3)) * t * t + 1
        far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return np.where(t <= 1, near, np.where(t < 2, far, 0.0))

    return k


def _triangle(t: np.ndarray) -> np.ndarray:
    return np.clip(1 - np.abs(t), 0, 1)


def weight_matrix(x: np.ndarray, size_in: int, scale: float, kind: str, a: float,
                  antialias: bool, exclude_outside: bool) -> np.ndarray:
    """[out, in] float64 weights of linear or cubic interpolation at coordinates ``x``.

    Taps are the ``n`` input positions nearest to x (edge positions repeat past the ends,
    unless ``exclude_outside`` drops them and renormalizes); with ``antialias`` the kernel
    is stretched by 1 / scale when downsampling, and the weights renormalized."""
    kernel, radius = (_triangle, 1) if kind == "linear" else (_cubic(a), 2)
    stretch = min(scale, 1.0) if antialias else 1.0
    start = int(np.floor(-radius / stretch) + 1) if antialias else 1 - radius
    n = 2 - 2 * start  # even: the taps are floor(x) + start ... floor(x) + 1 - start
    base = np.floor(x)
    ratio = x - base
    ratio = np.where(ratio == 0, 1.0, ratio)  # an integer x takes floor(x) - 1 as its base
    base = np.where(x == np.floor(x), x - 1, base)
    offsets = np.arange(start, start + n)
    w = kernel((offsets[None, :] - ratio[:, None]) * stretch)
    idx = base[:, None].astype(np.int64) + offsets[None, :]
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= size_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    m = np.zeros((len(x), size_in))
    rows = np.repeat(np.arange(len(x)), n)
    np.add.at(m, (rows, np.clip(idx, 0, size_in - 1).reshape(-1)), w.reshape(-1))
    return m


# --- applying a 1-D map along one axis --------------------------------------------------------
def _pad_end(cx: Ctx, x: Val, axis: int, count: int, value: float = 0.0) -> Val:
    """``x`` with ``count`` elements of ``value`` appended along ``axis``."""
    if count == 0:
        return x
    rank = len(cx.shape(x))
    pads = [0] * 2 * rank
    pads[rank + axis] = count
    return cx.add(Op.PAD, [x], pads=tuple(pads), value=float(value))


def _apply_matrix(cx: Ctx, x: Val, axis: int, m: np.ndarray) -> Val:
    """y[.., j, ..] = sum_i m[j, i] x[.., i, ..]: a MATMUL with the axis moved last."""
    rank = len(cx.shape(x))
    perm = [*(a for a in range(rank) if a != axis), axis]
    back = list(np.argsort(perm))
    y = cx.matmul(cx.transpose(x, perm), np.ascontiguousarray(m.T, dtype=np.float32))
    return cx.transpose(y, back)


def _period(idx: np.ndarray) -> tuple[int, int]:
    """The smallest P <= MAX_PHASES with idx[j + P] - idx[j] the same Q for every j, else
    (len(idx), 0) when that is shorter, else (MAX_PHASES + 1, 0)."""
    for p in range(1, min(len(idx), MAX_PHASES + 1)):
        d = idx[p:] - idx[:-p]
        if np.all(d == d[0]):
            return p, int(d[0])
    return (len(idx), 0) if len(idx) <= MAX_PHASES else (MAX_PHASES + 1, 0)


def gather_axis(cx: Ctx, x: Val, axis: int, idx: np.ndarray) -> Val:
    """y[.., j, ..] = x[.., idx[j], ..] with layout ops: phase b of the period is the strided
    slice idx[b], idx[b] + Q, ...; the P phases stack on a new axis after ``axis`` and a
    reshape interleaves them. When they are all one slice (an integer upscale), the stack is
    a broadcast multiply by ones instead: an elementwise kernel, not a concat."""
    xs = list(cx.shape(x))
    total = len(idx)
    p, q = _period(idx)
    rows = -(-total // p)

    def phase(b: int, count: int) -> Val:
        starts = [0] * len(xs)
        steps = [1] * len(xs)
        starts[axis], steps[axis] = int(idx[b]), q
        return cx.slice(x, starts, steps, [*xs[:axis], count, *xs[axis + 1:]])

    if p == 1:
        return phase(0, total)
    if p > MAX_PHASES:  # a long period (odd sizes): one GATHER of constant indices
        return cx.add(Op.GATHER, [x, idx.astype(np.int64)], axis=axis)
    unit = [*xs[:axis], rows, 1, *xs[axis + 1:]]
    if q == 1 and np.all(idx[:p] == idx[0]):  # each element repeated p times: one broadcast
        ones = np.ones([1] * (axis + 1) + [p] + [1] * (len(xs) - axis - 1), np.float32)
        y = cx.binary(Binary.MUL, cx.reshape(phase(0, rows), unit), ones)  # x * 1 is exact
    else:
        counts = [-(-(total - b) // p) for b in range(p)]  # padded to rows, cut off below
        y = cx.concat([cx.reshape(_pad_end(cx, phase(b, n), axis, rows - n), unit)
                       for b, n in enumerate(counts)], axis + 1)
    y = cx.reshape(y, [*xs[:axis], rows * p, *xs[axis + 1:]])
    return cx.slice(y, [0] * len(xs), [1] * len(xs), [*xs[:axis], total, *xs[axis + 1:]])


# --- the converters -----------------------------------------------------------------------------
def _geometry(cx: Ctx, shape: Sequence[int], scales: np.ndarray | None,
              sizes: np.ndarray | None, axes: list[int]) -> tuple[list[float], list[int],
                                                                    list[float]]:
    """Per axis of the input: the scale, the output size and the output size before
    truncation (exact when sizes are given: out / in * in need not be out in floats)."""
    rank = len(shape)
    if (scales is None) == (sizes is None):
        raise cx.error("exactly one of scales and sizes must be given")
    given = scales if scales is not None else sizes
    if given.size != len(axes):
        raise cx.error(f"{given.size} scales/sizes for {len(axes)} axes")
    out_scales, out_sizes = [1.0] * rank, list(shape)
    if scales is not None:
        for a, s in zip(axes, scales.reshape(-1).astype(np.float64)):
            if not s > 0:
                raise cx.error(f"scale {s} must be positive")
            out_scales[a], out_sizes[a] = float(s), int(s * shape[a])
        return out_scales, out_sizes, [s * d for s, d in zip(out_scales, shape)]
    sz = [int(v) for v in sizes.reshape(-1)]
    policy = cx.attr("keep_aspect_ratio_policy", "stretch")
    ratios = [s / shape[a] for a, s in zip(axes, sz)]
    if policy in ("not_larger", "not_smaller"):
        r = min(ratios) if policy == "not_larger" else max(ratios)
        ratios = [r] * len(axes)
        sz = [int(r * shape[a] + 0.5) for a in axes]
    elif policy != "stretch":
        raise cx.error(f"unknown keep_aspect_ratio_policy '{policy}'")
    for a, r, s in zip(axes, ratios, sz):
        out_scales[a], out_sizes[a] = r, s
    widths = [float(s) for s in out_sizes]
    if policy != "stretch":
        widths = [s * d for s, d in zip(out_scales, shape)]
    return out_scales, out_sizes, widths


def _resize(cx: Ctx, x: Val, scales: np.ndarray | None, sizes: np.ndarray | None,
            roi: np.ndarray | None, mode: str, rule: str, coord: str) -> Val:
    shape = cx.shape(x)
    rank = len(shape)
    axes = cx.ints("axes")
    axes = list(range(rank)) if axes is None else [cx.axis(a, rank) for a in axes]
    if len(set(axes)) != len(axes):
        raise cx.error(f"axes {axes} repeat")
    if mode not in ("nearest", "linear", "cubic"):
        raise cx.error(f"unknown mode '{mode}'")
    if coord not in MODES:
        raise cx.error(f"unknown coordinate_transformation_mode '{coord}'")
    if mode == "nearest" and rule not in NEAREST:
        raise cx.error(f"unknown nearest_mode '{rule}'")
    antialias = bool(cx.attr("antialias", 0))
    if antialias and mode == "nearest":
        raise cx.unsupported("antialias=1 with mode 'nearest' is not defined")
    out_scales, out_sizes, widths = _geometry(cx, shape, scales, sizes, axes)
    if any(s < 1 for s in out_sizes) or any(d < 1 for d in shape):
        raise cx.unsupported(f"an empty input or output ({list(shape)} -> {out_sizes})")
    what = f"node '{cx.label}' ({cx.op_type})"
    check_bytes(4 * prod(out_sizes), what)  # before numpy builds maps of these sizes
    for a in axes:  # the float64 weights and taps of one axis (antialias widens the taps)
        taps = 4 + (4 * int(np.ceil(2 / min(out_scales[a], 1.0))) if antialias else 0)
        check_bytes(16 * out_sizes[a] * max(shape[a] + 1, taps), f"{what}, interpolation map,")
    bounds = [(0.0, 1.0)] * rank
    if coord == "tf_crop_and_resize":
        if roi is None or roi.size != 2 * len(axes):
            raise cx.error(f"tf_crop_and_resize needs an roi of {2 * len(axes)} values")
        r = roi.reshape(-1).astype(np.float64)
        for i, a in enumerate(axes):
            bounds[a] = (float(r[i]), float(r[len(axes) + i]))
    fill = float(cx.attr("extrapolation_value", 0.0))
    a, exclude = float(cx.attr("cubic_coeff_a", -0.75)), bool(cx.attr("exclude_outside", 0))
    y = x
    for axis in reversed(axes):  # the last axis first: its matmul needs no transpose
        n_in, n_out, scale = shape[axis], out_sizes[axis], out_scales[axis]
        pos, outside = source_coords(coord, n_in, n_out, scale, widths[axis], bounds[axis])
        if mode == "nearest":
            idx = nearest_index(pos, rule, n_in, scale)
            if n_out == n_in and np.array_equal(idx, np.arange(n_in)) and not outside.any():
                continue
            if outside.any():
                y, idx = _pad_end(cx, y, axis, 1, fill), np.where(outside, n_in, idx)
            y = gather_axis(cx, y, axis, idx)
            continue
        m = weight_matrix(pos, n_in, scale, mode, a, antialias, exclude)
        if n_out == n_in and np.allclose(m, np.eye(n_in), rtol=0, atol=1e-12) \
                and not outside.any():
            continue
        m[outside] = 0
        if outside.any() and fill != 0:
            y = _pad_end(cx, y, axis, 1, fill)
            m = np.concatenate([m, outside[:, None].astype(np.float64)], axis=1)
        y = _apply_matrix(cx, y, axis, m)
    return y


def _array(cx: Ctx, i: int, what: str) -> np.ndarray | None:
    """Constant input ``i``, None when absent or empty (an empty tensor means 'not given')."""
    v = cx.const(i, what)
    return None if v is None or v.size == 0 else v


@converter("Resize", since=10)
def resize_10(cx: Ctx) -> Val:
    """Resize-10: scales only, asymmetric coordinates, nearest as Upsample rounds."""
    return _resize(cx, cx.x(0), _array(cx, 1, "scales"), None, None, cx.attr("mode", "nearest"),
                   "simple", "asymmetric")


@converter("Resize", since=11)
def resize(cx: Ctx) -> Val:
    return _resize(cx, cx.x(0), _array(cx, 2, "scales"), _array(cx, 3, "sizes"),
                   _array(cx, 1, "roi"), cx.attr("mode", "nearest"),
                   cx.attr("nearest_mode", "round_prefer_floor"),
                   cx.attr("coordinate_transformation_mode", "half_pixel"))


@converter("Upsample")
def upsample(cx: Ctx) -> Val:
    """Upsample-7 (scales attribute) and -9 (scales input): Resize-10's semantics."""
    scales = cx.attr("scales")
    scales = _array(cx, 1, "scales") if scales is None else np.asarray(scales, np.float32)
    mode = cx.attr("mode", "nearest")
    if mode == "bilinear":  # Upsample-7's other name for linear
        mode = "linear"
    return _resize(cx, cx.x(0), scales, None, None, mode, "simple", "asymmetric")
