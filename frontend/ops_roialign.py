"""RoiAlign with a fixed sampling grid (sampling_ratio > 0) and 2-D DeformConv (group 1):
bilinear sampling at run-time positions, composed of IR ops.

Follows onnx/reference/ops/op_roi_align.py (as onnxruntime): each output bin averages (or, in
max mode, takes the max of the weighted corner values of) ``sampling_ratio``^2 bilinear
samples. Sample positions are separable: per axis a [R, out * grid] float row of coordinates
gives a low and a high int64 tap and their weights; each of the 4 corner combinations is one
GATHER of channel vectors from the channels-last input at flat positions.
"""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Op, Reduce
from .convert import Ctx, Val, converter
from .ops_sample import _Ops


def _axis_taps(o: _Ops, start: Val, bin_size: Val, out: int, grid: int,
               size: int) -> tuple[Val, Val, Val, Val]:
    """(low, high) int64 taps and their weights, [R, out * grid], along an axis of ``size``."""
    steps = (np.arange(out)[:, None] + (np.arange(grid)[None, :] + 0.5) / grid).reshape(1, -1)
    pos = o.add(start, o.mul(bin_size, steps.astype(np.float32)))
    valid = o.cx.binary(Binary.AND, o.cx.binary(Binary.GE, pos, o.c(-1.0)),
                        o.cx.binary(Binary.LE, pos, o.c(float(size))))
    y = o.cx.binary(Binary.MAX, pos, o.c(0.0))
    low = o.floor(y)
    top = o.cx.binary(Binary.GE, low, o.c(size - 1.0))  # at the last row: both taps on it
    low = o.where(top, float(size - 1), low)
    y = o.where(top, low, y)
    high = o.where(top, low, o.add(low, 1.0))
    frac = o.sub(y, low)
    w_low = o.where(valid, o.sub(1.0, frac), 0.0)
    w_high = o.where(valid, frac, 0.0)

    def index(v: Val) -> Val:  # clamped, so the flat position stays inside the input
        return o.cx.add(Op.CAST, [o.clamp(v, 0.0, size - 1.0)], to="int64")

    return index(low), index(high), w_low, w_high


@converter("RoiAlign", since=10)
def roi_align(cx: Ctx) -> Val:
    """[R, C, output_height, output_width] (see the module docstring)."""
    x, rois, idx = cx.x(0), cx.x(1), cx.x(2)
    xs = cx.shape(x)
    if cx.type(x).dtype != "float32" or cx.type(rois).dtype != "float32":
        raise cx.unsupported("X and rois must be float32")
    if len(xs) != 4:
        raise cx.error(f"X {list(xs)} must be [N, C, H, W]")
    n, c, h, w = xs
    r = cx.shape(rois)[0] if len(cx.shape(rois)) == 2 else -1
    if cx.shape(rois) != (r, 4) or cx.shape(idx) != (r,):
        raise cx.error(f"rois {list(cx.shape(rois))} and batch_indices "
                       f"{list(cx.shape(idx))} must be [R, 4] and [R]")
    if cx.type(idx).dtype not in ("int64", "int32"):
        raise cx.error(f"batch_indices must be int64, got {cx.type(idx).dtype}")
    oh, ow = int(cx.attr("output_height", 1)), int(cx.attr("output_width", 1))
    grid = int(cx.attr("sampling_ratio", 0))
    scale = float(cx.attr("spatial_scale", 1.0))
    mode = cx.attr("mode", "avg")
    if mode not in ("avg", "max"):
        raise cx.error(f"mode '{mode}' is not avg or max")
    if oh < 1 or ow < 1:
        raise cx.error("output_height and output_width must be positive")
    if grid <= 0:
        raise cx.unsupported("sampling_ratio 0 (an adaptive grid: its size depends on the "
                             "values of rois)")
    ctm = cx.attr("coordinate_transformation_mode", "half_pixel") if cx.opset >= 16 else None
    if ctm not in (None, "half_pixel", "output_half_pixel"):
        raise cx.error(f"coordinate_transformation_mode '{ctm}' is not half_pixel or "
                       "output_half_pixel")
    half_pixel = ctm == "half_pixel"
    o = _Ops(cx)

    def coord(i: int) -> Val:  # [R, 1]: rois[:, i] * scale - offset
        v = o.mul(cx.slice(rois, (0, i), (1, 1), (r, 1)), scale)
        return o.sub(v, 0.5) if half_pixel else v

    x0, y0, x1, y1 = (coord(i) for i in range(4))
    width, height = o.sub(x1, x0), o.sub(y1, y0)
    if not half_pixel:
        width = cx.binary(Binary.MAX, width, o.c(1.0))
        height = cx.binary(Binary.MAX, height, o.c(1.0))
    ylo, yhi, wylo, wyhi = _axis_taps(o, y0, o.mul(height, 1 / oh), oh, grid, h)
    xlo, xhi, wxlo, wxhi = _axis_taps(o, x0, o.mul(width, 1 / ow), ow, grid, w)
    b = cx.add(Op.CAST, [idx], to="int64") if cx.type(idx).dtype != "int64" else idx
    b = cx.binary(Binary.MIN, cx.binary(Binary.MAX, b, np.array(0, np.int64)),
                  np.array(n - 1, np.int64))
    rows = cx.binary(Binary.MUL, cx.reshape(b, (r, 1, 1)), np.array(h * w, np.int64))
    table = cx.reshape(cx.transpose(x, (0, 2, 3, 1)), (n * h * w, c))
    ny, nx = oh * grid, ow * grid
    corners = []
    for yi, wy in ((ylo, wylo), (yhi, wyhi)):
        for xi, wx in ((xlo, wxlo), (xhi, wxhi)):
            flat = cx.binary(Binary.ADD, rows, cx.binary(
                Binary.ADD, cx.binary(Binary.MUL, cx.reshape(yi, (r, ny, 1)),
                                      np.array(w, np.int64)), cx.reshape(xi, (r, 1, nx))))
            vals = cx.add(Op.GATHER, [table, flat], axis=0)  # [R, ny, nx, C]
            weight = cx.binary(Binary.MUL, cx.reshape(wy, (r, ny, 1)), cx.reshape(wx, (r, 1, nx)))
            corners.append(cx.binary(Binary.MUL, cx.reshape(weight, (r, ny, nx, 1)), vals))
    fn = Binary.ADD if mode == "avg" else Binary.MAX
    y = cx.binary(fn, cx.binary(fn, corners[0], corners[1]), cx.binary(fn, corners[2], corners[3]))
    y = cx.reshape(y, (r, oh, grid, ow, grid, c))
    y = cx.reduce(Reduce.SUM if mode == "avg" else Reduce.MAX, y, (2, 4))
    if mode == "avg":
        y = cx.binary(Binary.DIV, y, o.c(float(grid * grid)))
    return cx.transpose(cx.reshape(y, (r, oh, ow, c)), (0, 3, 1, 2))


# --- DeformConv -----------------------------------------------------------------------------------
def _deform_taps(o: _Ops, pos: Val, size: int) -> list[tuple[Val, Val]]:
    """The two bilinear taps (int64 index, weight) of float positions along an axis of
    ``size``; a tap outside the axis weighs 0 (zero padding) and its index is clamped."""
    low = o.floor(pos)
    frac = o.sub(pos, low)
    out = []
    for tap, weight in ((low, o.sub(1.0, frac)), (o.add(low, 1.0), frac)):
        inside = o.cx.binary(Binary.AND, o.cx.binary(Binary.GE, tap, o.c(0.0)),
                             o.cx.binary(Binary.LE, tap, o.c(size - 1.0)))
        index = o.cx.add(Op.CAST, [o.clamp(tap, 0.0, size - 1.0)], to="int64")
        out.append((index, o.where(inside, weight, 0.0)))
    return out


@converter("DeformConv", since=19)
def deform_conv(cx: Ctx) -> Val:
    """2-D deformable convolution (group 1): every kernel tap of every output position samples
    X bilinearly (zero padding) at its grid position plus its offset, times the mask; the
    [N * oh * ow, C * kh * kw] samples then meet the weights in one GEMM."""
    x, wt, off = cx.x(0), cx.x(1), cx.x(2)
    xs, ws, offs = cx.shape(x), cx.shape(wt), cx.shape(off)
    if any(cx.type(v).dtype != "float32" for v in (x, wt, off)):
        raise cx.unsupported("X, W and offset must be float32")
    if len(xs) != 4 or len(ws) != 4 or len(offs) != 4:
        raise cx.unsupported(f"X {list(xs)}: 2-D deformable convolution only")
    n, c, h, w = xs
    m, cw, kh, kw = ws
    if int(cx.attr("group", 1)) != 1:
        raise cx.unsupported("group > 1")
    if cw != c or cx.ints("kernel_shape") not in (None, [kh, kw]):
        raise cx.error(f"W {list(ws)} does not fit X {list(xs)} / kernel_shape")
    g = int(cx.attr("offset_group", 1))
    if g < 1 or c % g:
        raise cx.error(f"offset_group {g} does not divide {c} channels")
    cg = c // g
    sh, sw = cx.ints("strides", [1, 1])
    dh, dw = cx.ints("dilations", [1, 1])
    pt, pl, pb, pr = cx.ints("pads", [0, 0, 0, 0])
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    if oh < 1 or ow < 1 or offs != (n, g * kh * kw * 2, oh, ow):
        raise cx.error(f"offset {list(offs)} must be [{n}, {g * kh * kw * 2}, {oh}, {ow}]")
    grid = (n, g, kh, kw, oh, ow)
    off = cx.reshape(off, (n, g, kh, kw, 2, oh, ow))
    mask: Val | None = None
    if cx.has(4):
        mask = cx.x(4)
        if cx.type(mask).dtype != "float32" or cx.shape(mask) != (n, g * kh * kw, oh, ow):
            raise cx.error(f"mask must be float32 [{n}, {g * kh * kw}, {oh}, {ow}]")
        mask = cx.reshape(mask, grid)
    o = _Ops(cx)

    def positions(axis: int, pad: int, stride: int, dil: int, k_axis: int) -> Val:
        shape = [1, 1, 1, 1, 1, 1]
        base = (np.arange((oh, ow)[axis]) * stride - pad).reshape(
            [1, 1, 1, 1, oh, 1] if axis == 0 else [1, 1, 1, 1, 1, ow])
        shape[k_axis] = (kh, kw)[axis]
        taps = (np.arange((kh, kw)[axis]) * dil).reshape(shape)
        delta = cx.slice(off, (0, 0, 0, 0, axis, 0, 0), (1,) * 7, (n, g, kh, kw, 1, oh, ow))
        return o.add(cx.reshape(delta, grid), (base + taps).astype(np.float32))

    ys = _deform_taps(o, positions(0, pt, sh, dh, 2), h)
    xs_ = _deform_taps(o, positions(1, pl, sw, dw, 3), w)
    table = cx.reshape(cx.transpose(cx.reshape(x, (n, g, cg, h * w)), (0, 1, 3, 2)),
                       (n * g * h * w, cg))
    rows = (np.arange(n * g, dtype=np.int64) * (h * w)).reshape(n, g, 1, 1, 1, 1)
    sampled: Val | None = None
    for yi, wy in ys:
        for xi, wx in xs_:
            flat = cx.binary(Binary.ADD, cx.binary(Binary.ADD, cx.binary(
                Binary.MUL, yi, np.array(w, np.int64)), xi), rows)
            weight = cx.binary(Binary.MUL, wy, wx)
            if mask is not None:
                weight = cx.binary(Binary.MUL, weight, mask)
            term = cx.binary(Binary.MUL, cx.reshape(weight, (*grid, 1)),
                             cx.add(Op.GATHER, [table, flat], axis=0))  # [*grid, Cg]
            sampled = term if sampled is None else cx.binary(Binary.ADD, sampled, term)
    # [N, G, kh, kw, oh, ow, Cg] -> [N, oh, ow, G, Cg, kh, kw]: W's [M, C, kh, kw] order
    patches = cx.reshape(cx.transpose(sampled, (0, 4, 5, 1, 6, 2, 3)),
                         (n * oh * ow, c * kh * kw))
    y = cx.matmul(patches, cx.transpose(cx.reshape(wt, (m, c * kh * kw)), (1, 0)))
    if cx.has(3):
        bias = cx.x(3)
        if cx.shape(bias) != (m,):
            raise cx.error(f"B {list(cx.shape(bias))} must be [{m}]")
        y = cx.binary(Binary.ADD, y, cx.reshape(bias, (1, m)))
    return cx.transpose(cx.reshape(y, (n, oh, ow, m)), (0, 3, 1, 2))
