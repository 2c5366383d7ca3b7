"""Layer, RMS, Group and Instance normalization, as REDUCE (mean) + elementwise IR ops.

Each normalizes over a set of axes, then applies a scale and a bias. The statistics are
two-pass, mean((x - mean)^2), so a large mean does not cancel the variance away (E[x^2] -
E[x]^2 would), and they stay separate IR nodes: the fusion pass puts each reduction and the
elementwise ops around it into a few kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..ir import Binary, Reduce, Unary
from .convert import Ctx, Val, converter

FLOAT = 1  # onnx.TensorProto.FLOAT: the only stash_type (statistics precision) sw2c computes in


def _stash(cx: Ctx) -> None:
    stash = int(cx.attr("stash_type", FLOAT))
    if stash != FLOAT:
        raise cx.unsupported(f"stash_type={stash} (only 1, float32 statistics, is supported)")


def _inv_std(cx: Ctx, mean_square: Val) -> Val:
    """1 / sqrt(mean_square + epsilon), on the (small) reduced tensor."""
    eps = cx.scalar(cx.attr("epsilon", 1e-5))
    return cx.binary(Binary.DIV, cx.scalar(1.0),
                     cx.unary(Unary.SQRT, cx.binary(Binary.ADD, mean_square, eps)))


def standardize(cx: Ctx, x: Val, axes: Sequence[int],
                pool: Callable[[Val], Val] = lambda m: m) -> tuple[Val, Val, Val]:
    """(x - mean) / sqrt(var + eps) over ``axes``, with the mean and 1/std (reduced dims kept).
    ``pool`` turns the means over ``axes`` into the statistics' means (GroupNormalization's
    mean of its channels' means)."""
    mean = pool(cx.reduce(Reduce.MEAN, x, axes))
    centered = cx.binary(Binary.SUB, x, mean)
    var = pool(cx.reduce(Reduce.MEAN, cx.binary(Binary.MUL, centered, centered), axes))
    inv = _inv_std(cx, var)
    # x - mean again rather than reusing ``centered``: each copy then fuses into its reader
    # (the variance reduction, the output's elementwise kernel), so the centered tensor is
    # never written to memory; recomputing a subtraction is cheaper than that round trip
    return cx.binary(Binary.MUL, cx.binary(Binary.SUB, x, mean), inv), mean, inv


def _affine(cx: Ctx, y: Val, scale: Val | None, bias: Val | None) -> Val:
    if scale is not None:
        y = cx.binary(Binary.MUL, y, scale)
    if bias is not None:
        y = cx.binary(Binary.ADD, y, bias)
    return y


def _optional(cx: Ctx, i: int) -> Val | None:
    return cx.x(i) if cx.has(i) else None


def _trailing(cx: Ctx, x: Val, default: int) -> list[int]:
    """The axes ``axis``..rank-1 that Layer/RMS normalization reduce over."""
    rank = len(cx.shape(x))
    return list(range(cx.axis(int(cx.attr("axis", default)), rank), rank))


@converter("LayerNormalization", since=17)
def layer_norm(cx: Ctx) -> list[Val]:
    """Y, and the optional Mean and InvStdDev outputs (the statistics, reduced dims kept)."""
    _stash(cx)
    x = cx.x(0)
    y, mean, inv = standardize(cx, x, _trailing(cx, x, -1))
    return [_affine(cx, y, cx.x(1), _optional(cx, 2)), mean, inv]


@converter("RMSNormalization", since=23)
def rms_norm(cx: Ctx) -> Val:
    """x / sqrt(mean(x^2) + eps) * scale: no centering, no bias."""
    _stash(cx)
    x = cx.x(0)
    axes = _trailing(cx, x, -1)
    inv = _inv_std(cx, cx.reduce(Reduce.MEAN, cx.binary(Binary.MUL, x, x), axes))
    return cx.binary(Binary.MUL, cx.binary(Binary.MUL, x, inv), cx.x(1))


def _channels(cx: Ctx, x: Val, what: str) -> tuple[int, ...]:
    xs = cx.shape(x)
    if len(xs) < 3:
        raise cx.error(f"input {list(xs)} must be [N, C, D1, ...] for {what}")
    return xs


def _per_channel(cx: Ctx, p: Val, c: int, rank: int, what: str) -> Val:
    """A [C] parameter shaped [C, 1, ...] to broadcast over [N, C, *S]."""
    if cx.shape(p) != (c,):
        raise cx.error(f"{what} has shape {list(cx.shape(p))}, expected [{c}]")
    return cx.reshape(p, [c] + [1] * (rank - 2))


@converter("InstanceNormalization")
def instance_norm(cx: Ctx) -> Val:
    """Per sample and channel over the spatial axes, then a per-channel scale and bias."""
    x = cx.x(0)
    xs = _channels(cx, x, "InstanceNormalization")
    rank, c = len(xs), xs[1]
    y, _, _ = standardize(cx, x, range(2, rank))
    return _affine(cx, y, _per_channel(cx, cx.x(1), c, rank, "scale"),
                   _per_channel(cx, cx.x(2), c, rank, "bias"))


def _spread(cx: Ctx, v: Val, lead: Sequence[int], c: int, rank: int) -> Val:
    """Per-group values [*lead, G, 1] as per-channel ones [*lead, C, 1, ...]: each repeated
    for the C/G channels of its group (a broadcast multiply by ones)."""
    cg = c // cx.shape(v)[-2]
    y = cx.binary(Binary.MUL, v, np.ones(cg, np.float32)) if cg > 1 else v
    return cx.reshape(y, [*lead, c] + [1] * (rank - 2))


def _group_norm(cx: Ctx, per_group: bool) -> Val:
    """Statistics per sample and group of C/G channels, over those channels and all spatial
    axes. Every big-tensor op stays in the input's [N, C, *S] shape (so the layout pass keeps
    it channels-last and fuses it with its neighbours): per-channel means over the spatial
    axes, averaged per group on the small [N, G, C/G] tensor (equal-sized groups: the mean of
    the means is the group's mean) and spread back per channel. Opset 18 scales per group,
    opset 21 per channel."""
    x = cx.x(0)
    xs = _channels(cx, x, "GroupNormalization")
    rank, n, c = len(xs), xs[0], xs[1]
    g = int(cx.attr("num_groups", 0))
    if g < 1 or c % g:
        raise cx.error(f"num_groups {g} must be positive and divide the {c} channels")

    def pool(m: Val) -> Val:
        grouped = cx.reduce(Reduce.MEAN, cx.reshape(m, [n, g, c // g]), (2,))
        return _spread(cx, grouped, [n], c, rank)

    y, _, _ = standardize(cx, x, range(2, rank), pool)
    scale, bias = cx.x(1), cx.x(2)
    if not per_group:
        return _affine(cx, y, _per_channel(cx, scale, c, rank, "scale"),
                       _per_channel(cx, bias, c, rank, "bias"))
    for p, what in ((scale, "scale"), (bias, "bias")):
        if cx.shape(p) != (g,):
            raise cx.error(f"{what} has shape {list(cx.shape(p))}, expected [{g}]")
    return _affine(cx, y, _spread(cx, cx.reshape(scale, [g, 1]), [], c, rank),
                   _spread(cx, cx.reshape(bias, [g, 1]), [], c, rank))


@converter("GroupNormalization", since=18)
def group_norm_18(cx: Ctx) -> Val:
    return _group_norm(cx, per_group=True)


@converter("GroupNormalization", since=21)
def group_norm_21(cx: Ctx) -> Val:
    _stash(cx)
    return _group_norm(cx, per_group=False)
