"""LpPool, LpNormalization, MeanVarianceNormalization, Compress, ReverseSequence, CenterCropPad
and Col2Im, composed from existing IR ops (windows and reductions, constant-index gathers,
slices and pads, and small constant scatter matrices)."""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Op, Reduce, Unary
from .convert import Ctx, Val, converter, prod
from .ops_nn import _pool, _reduce_window, batch_norm, to_first
from .ops_norm import standardize


def _power(cx: Ctx, x: Val, p: float) -> Val:
    """|x|^p (x * x for p = 2, exact)."""
    if p == 2:
        return cx.binary(Binary.MUL, x, x)
    a = cx.unary(Unary.ABS, x)
    return a if p == 1 else cx.binary(Binary.POW, a, cx.scalar(p))


def _root(cx: Ctx, s: Val, p: float) -> Val:
    if p == 1:
        return s
    if p == 2:
        return cx.unary(Unary.SQRT, s)
    return cx.binary(Binary.POW, s, cx.scalar(1 / p))


def _p(cx: Ctx) -> float:
    p = float(cx.attr("p", 2))
    if not p > 0:
        raise cx.error(f"p={p} must be positive")
    return p


@converter("LpPool")
def lp_pool(cx: Ctx) -> Val:
    """(sum of |x|^p over each window)^(1/p); padding adds zeros, which add nothing."""
    p = _p(cx)
    win, g = _pool(cx, 0.0)
    y = _root(cx, _reduce_window(cx, Reduce.SUM, _power(cx, win, p), g), p)
    return cx.transpose(y, to_first(len(g.kernel) + 2))


@converter("LpNormalization")
def lp_normalization(cx: Ctx) -> Val:
    """x / ||x||_p along ``axis`` (p 1 or 2); 0 where the norm is 0, as ONNX defines."""
    x = cx.x(0)
    p = int(cx.attr("p", 2))
    if p not in (1, 2):
        raise cx.error(f"p={p} (ONNX defines 1 and 2)")
    axis = cx.axis(int(cx.attr("axis", -1)), len(cx.shape(x)))
    norm = _root(cx, cx.reduce(Reduce.SUM, _power(cx, x, p), [axis]), p)
    zero = cx.binary(Binary.EQ, norm, cx.scalar(0.0))
    return cx.add(Op.WHERE, [zero, cx.scalar(0.0), cx.binary(Binary.DIV, x, norm)])


@converter("MeanVarianceNormalization", since=9)
def mean_variance_normalization(cx: Ctx) -> Val:
    """(x - mean) / (std + 1e-9) over ``axes`` (default N, H, W), the variance two-pass."""
    x = cx.x(0)
    rank = len(cx.shape(x))
    axes = sorted({cx.axis(a, rank, "axes") for a in cx.ints("axes", [0, 2, 3])})
    mean = cx.reduce(Reduce.MEAN, x, axes)
    centered = cx.binary(Binary.SUB, x, mean)
    var = cx.reduce(Reduce.MEAN, cx.binary(Binary.MUL, centered, centered), axes)
    std = cx.binary(Binary.ADD, cx.unary(Unary.SQRT, var), cx.scalar(1e-9))
    return cx.binary(Binary.DIV, cx.binary(Binary.SUB, x, mean), std)


# --- selections by constant indices -------------------------------------------------------------
def _take(cx: Ctx, x: Val, idx: np.ndarray, axis: int) -> Val:
    """x at the constant positions ``idx`` along ``axis`` (a gather, or empty)."""
    shape = cx.shape(x)
    if idx.size == 0:
        raise cx.unsupported("an empty result (the condition selects nothing)")
    if idx.ndim == 1 and np.array_equal(idx, np.arange(shape[axis])):
        return x
    return cx.add(Op.GATHER, [x, idx.astype(np.int64)], axis=axis)


@converter("Compress", since=9)
def compress(cx: Ctx) -> Val:
    """The slices along ``axis`` (or of the flattened input) where the constant condition is
    true; the condition may be shorter than the axis (the rest is dropped)."""
    x = cx.x(0)
    cond = cx.const(1, "condition")
    if cond is None:
        raise cx.error("required input 1 (condition) is missing")
    cond = cond.reshape(-1).astype(bool)
    axis = cx.attr("axis")
    if axis is None:
        x, axis = cx.reshape(x, [prod(cx.shape(x))]), 0
    else:
        axis = cx.axis(int(axis), len(cx.shape(x)))
    if cond.size > cx.shape(x)[axis]:
        raise cx.error(f"condition of {cond.size} is longer than the axis "
                       f"({cx.shape(x)[axis]})")
    return _take(cx, x, np.flatnonzero(cond), axis)


@converter("ReverseSequence", since=10)
def reverse_sequence(cx: Ctx) -> Val:
    """Each batch entry's first seq_len time steps reversed: one gather from the input with
    its batch and time axes flattened, at constant positions."""
    x = cx.x(0)
    shape = cx.shape(x)
    lens = cx.const_ints(1, "sequence_lens")
    t_axis, b_axis = int(cx.attr("time_axis", 0)), int(cx.attr("batch_axis", 1))
    if len(shape) < 2 or {t_axis, b_axis} != {0, 1}:
        raise cx.error(f"time_axis {t_axis} and batch_axis {b_axis} must be 0 and 1 "
                       f"(input rank {len(shape)})")
    if lens is None or len(lens) != shape[b_axis] or any(
            not 0 <= n <= shape[t_axis] for n in lens):
        raise cx.error(f"sequence_lens {lens} must give 0..{shape[t_axis]} per batch entry")
    i0, i1 = np.indices(shape[:2])
    t, b = (i0, i1) if t_axis == 0 else (i1, i0)
    n = np.array(lens)[b]
    src_t = np.where(t < n, n - 1 - t, t)
    src = (src_t * shape[1] + b) if t_axis == 0 else (b * shape[1] + src_t)
    flat = cx.reshape(x, [shape[0] * shape[1], *shape[2:]])
    return cx.add(Op.GATHER, [flat, src.astype(np.int64)], axis=0)


@converter("CenterCropPad", since=18)
def center_crop_pad(cx: Ctx) -> Val:
    """Per axis: the centered window of the new size (begin rounded down) when smaller, or
    the input centered in zeros when larger."""
    x = cx.x(0)
    shape = cx.shape(x)
    rank = len(shape)
    sizes = cx.const_ints(1, "shape")
    axes = [cx.axis(a, rank, "axes") for a in cx.ints("axes", list(range(rank)))]
    if sizes is None or len(sizes) != len(axes) or any(s < 0 for s in sizes):
        raise cx.error(f"shape {sizes} must give one size >= 0 per axis of {axes}")
    starts, counts, pads = [0] * rank, list(shape), [0] * (2 * rank)
    for a, size in zip(axes, sizes):
        if size < shape[a]:
            starts[a], counts[a] = (shape[a] - size) // 2, size
        elif size > shape[a]:
            pads[a] = (size - shape[a]) // 2
            pads[rank + a] = size - shape[a] - pads[a]
    y = cx.slice(x, starts, [1] * rank, counts)
    return cx.add(Op.PAD, [y], pads=tuple(pads), value=0.0) if any(pads) else y


# --- Col2Im --------------------------------------------------------------------------------------
def _scatter(image: int, kernel: int, stride: int, dilation: int, begin: int,
             blocks: int) -> np.ndarray:
    """[kernel * blocks, image]: 1 where tap k of block l lands on pixel y (inside)."""
    k, l_ = np.indices((kernel, blocks))
    pos = (l_ * stride - begin + k * dilation).reshape(-1)
    return (pos[:, None] == np.arange(image)[None, :]).astype(np.float32)


@converter("Col2Im", since=18)
def col2im(cx: Ctx) -> Val:
    """[N, C * prod(block), L] -> [N, C, *image], every block's taps summed where they land.
    The scatter is separable by spatial axis, so each axis is one MatMul of the (kernel tap,
    block position) pair of that axis by a small constant 0/1 matrix."""
    x = cx.x(0)
    image, block = cx.const_ints(1, "image_shape"), cx.const_ints(2, "block_shape")
    xs = cx.shape(x)
    if image is None or block is None or len(image) != len(block) or len(xs) != 3:
        raise cx.error("needs input [N, C*prod(block), L] and image_shape, block_shape of "
                       "one length")
    n = len(image)
    strides = cx.ints("strides", [1] * n)
    dilations = cx.ints("dilations", [1] * n)
    pads = cx.ints("pads", [0] * 2 * n)
    if len(strides) != n or len(dilations) != n or len(pads) != 2 * n:
        raise cx.error("strides, dilations and pads must match image_shape")
    blocks = [(i + pads[a] + pads[n + a] - ((k - 1) * dilations[a] + 1)) // strides[a] + 1
              for a, (i, k) in enumerate(zip(image, block))]
    taps = prod(block)
    if min(blocks) < 1 or xs[1] % taps or prod(blocks) != xs[2]:
        raise cx.error(f"input {list(xs)} does not hold {blocks} blocks of {block} per channel")
    batch, c = xs[0], xs[1] // taps
    y = cx.reshape(x, [batch, c, *block, *blocks])
    labels = ["n", "c", *(f"k{a}" for a in range(n)), *(f"l{a}" for a in range(n))]
    for a in range(n):
        rest = [lb for lb in labels if lb not in (f"k{a}", f"l{a}")]
        perm = [labels.index(lb) for lb in (*rest, f"k{a}", f"l{a}")]
        y = cx.transpose(y, perm)
        lead = [cx.shape(y)[i] for i in range(len(rest))]
        y = cx.reshape(y, [prod(lead), block[a] * blocks[a]])
        s = _scatter(image[a], block[a], strides[a], dilations[a], pads[a], blocks[a])
        y = cx.reshape(cx.matmul(y, s), [*lead, image[a]])
        labels = [*rest, f"i{a}"]
    order = ["n", "c", *(f"i{a}" for a in range(n))]
    return cx.transpose(y, [labels.index(lb) for lb in order])


# --- BatchNormalization in training mode -------------------------------------------------------
@converter("BatchNormalization", since=14)
def batch_norm_training(cx: Ctx) -> list[Val | None]:
    """training_mode=1: normalized by the batch's statistics (mean and population variance
    over every axis but the channels), with the running statistics updated as
    running * momentum + batch * (1 - momentum); else the inference form."""
    if not cx.attr("training_mode", 0):
        return [batch_norm(cx), None, None]
    x = cx.x(0)
    xs = cx.shape(x)
    if len(xs) < 2:
        raise cx.error(f"input {list(xs)} must be [N, C, ...]")
    axes = [0, *range(2, len(xs))]
    y, mean, inv = standardize(cx, x, axes)
    bcast = [xs[1]] + [1] * (len(xs) - 2)
    y = cx.binary(Binary.ADD, cx.binary(Binary.MUL, y, cx.reshape(cx.x(1), bcast)),
                  cx.reshape(cx.x(2), bcast))
    outs: list[Val | None] = [y, None, None]
    momentum = float(cx.attr("momentum", 0.9))
    if cx.used(1) or cx.used(2):
        centered = cx.binary(Binary.SUB, x, mean)
        var = cx.reduce(Reduce.MEAN, cx.binary(Binary.MUL, centered, centered), axes)
        for i, (running, batch) in enumerate([(cx.x(3), mean), (cx.x(4), var)], start=1):
            old = cx.binary(Binary.MUL, running, cx.scalar(momentum))
            new = cx.binary(Binary.MUL, cx.reshape(batch, [xs[1]]), cx.scalar(1 - momentum))
            outs[i] = cx.binary(Binary.ADD, old, new) if cx.used(i) else None
    return outs


# --- MaxUnpool ---------------------------------------------------------------------------------
@converter("MaxUnpool", since=9)
def max_unpool(cx: Ctx) -> Val:
    """Each input value written at its (constant) flat index of the unpooled tensor, zeros
    elsewhere (the last write wins): a gather from the input at constant positions, then
    zero padding at the end of each axis up to ``output_shape``."""
    x = cx.x(0)
    xs = cx.shape(x)
    idx = cx.const(1, "indices")
    n = len(xs) - 2
    kernel = cx.ints("kernel_shape")
    if n < 1 or kernel is None or len(kernel) != n or idx is None or idx.shape != xs:
        raise cx.error(f"input {list(xs)}, indices and kernel_shape {kernel} do not fit")
    strides = cx.ints("strides", [1] * n)
    pads = cx.ints("pads", [0] * 2 * n)
    inferred = [*xs[:2], *((xs[2 + a] - 1) * strides[a] - pads[a] - pads[n + a] + kernel[a]
                           for a in range(n))]
    total = prod(inferred)
    flat_idx = idx.reshape(-1).astype(np.int64)
    if total < 1 or flat_idx.size and not (0 <= flat_idx.min() and flat_idx.max() < total):
        raise cx.error(f"indices must lie in the unpooled tensor {inferred}")
    src = np.full(total, -1, np.int64)
    src[flat_idx] = np.arange(flat_idx.size)
    values = cx.add(Op.GATHER, [cx.reshape(x, [prod(xs)]), np.maximum(src, 0)], axis=0)
    y = cx.reshape(cx.add(Op.WHERE, [src >= 0, values, np.zeros((), cx.type(x).dtype)]), inferred)
    shape = cx.const_ints(2, "output_shape")
    if shape is None or list(shape) == inferred:
        return y
    if len(shape) != len(inferred) or any(s < d for s, d in zip(shape, inferred)):
        raise cx.error(f"output_shape {shape} is smaller than the unpooled {inferred}")
    ends = [s - d for s, d in zip(shape, inferred)]
    return cx.add(Op.PAD, [y], pads=(0,) * len(shape) + tuple(ends), value=0.0)
