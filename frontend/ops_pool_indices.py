"""MaxPool's Indices output: the flat input position of each window's maximum."""

from __future__ import annotations

import itertools

import numpy as np

from ..ir import Binary, Op, Reduce
from .convert import Ctx, Val, prod
from .ops_index import extreme_mask, first_index
from .ops_logic import cast_to
from .ops_nn import PoolGeometry, to_first


def _tap_positions(g: PoolGeometry, column_major: bool) -> tuple[np.ndarray, np.ndarray]:
    """[*O, T] flat spatial positions of each window tap (row- or column-major), and whether
    the tap is inside the input (not in the pads)."""
    n = len(g.sizes)
    pos = np.zeros((*g.outs, prod(g.kernel)), np.int64)
    inside = np.zeros(pos.shape, bool)
    for out in itertools.product(*(range(o) for o in g.outs)):
        for t, taps in enumerate(itertools.product(*(range(k) for k in g.kernel))):
            coords = [out[a] * g.strides[a] - g.begin[a] + taps[a] * g.dilations[a]
                      for a in range(n)]
            ok = all(0 <= c < s for c, s in zip(coords, g.sizes))
            inside[(*out, t)] = ok
            if ok:
                pos[(*out, t)] = np.ravel_multi_index(coords, g.sizes,
                                                      order="F" if column_major else "C")
    return pos, inside


def max_pool_indices(cx: Ctx, win: Val, g: PoolGeometry) -> Val:
    """int64 [N, C, *O] indices into the flattened input (storage_order 1: the spatial axes
    column-major), the first maximum among the window's taps inside the input."""
    n = len(g.kernel)
    batch, channels = cx.shape(cx.x(0))[:2]
    taps = prod(g.kernel)
    if taps * prod(g.outs) > 1 << 20:
        raise cx.unsupported("the Indices output of so large a pooling")
    flat = cx.reshape(win, (batch, *g.outs, taps, channels))
    pos, inside = _tap_positions(g, bool(cx.attr("storage_order", 0)))
    shape = (1, *g.outs, taps, 1)
    mask = cx.binary(Binary.AND, extreme_mask(cx, flat, n + 1, True), inside.reshape(shape))
    t = first_index(cx, mask, n + 1)  # [N, *O, 1, C] float32
    iota = np.arange(taps, dtype=np.float32).reshape((1,) * (n + 1) + (taps, 1))
    hit = cx.binary(Binary.EQ, t, iota)
    spatial = cx.reduce(Reduce.MAX, cx.add(Op.WHERE, [hit, pos.reshape(shape),
                                                      np.array(-1, np.int64)]), (n + 1,))
    plane = prod(g.sizes)
    base = (np.arange(batch * channels, dtype=np.int64) * plane).reshape(batch, 1, channels)
    spatial = cx.reshape(spatial, (batch, prod(g.outs), channels))
    idx = cx.binary(Binary.ADD, cast_to(cx, spatial, "int64"), base)
    return cx.transpose(cx.reshape(idx, (batch, *g.outs, channels)), to_first(n + 2))
