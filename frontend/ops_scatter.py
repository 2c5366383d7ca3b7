"""ScatterElements, ScatterND and Scatter (its deprecated alias), composed from comparisons,
WHERE, REDUCE and GATHER: data is seen as rows [R, S], every update targets one row (a flat
row number computed with int64 ops, constant parts folded at import), and a one-hot match of
rows against updates [R, M] selects or combines the updates per row. That costs R * M * S, so
it is refused beyond MAX_SCATTER elements.

With reduction 'none', several updates of one position are undefined in ONNX; the last one
wins here, as in onnxruntime and the ONNX reference, which write in order.
"""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Op, Reduce
from ..ir.interp import lowest
from .convert import Ctx, Val, converter, prod
from .ops_index import order_key
from .ops_logic import _in_axis, cast_to

F32 = np.float32
MAX_SCATTER = 1 << 24  # rows x updates x row length of the one-hot match
REDUCTIONS = ("none", "add", "mul", "max", "min")


def _scatter_rows(cx: Ctx, data: Val, rows: Val, updates: Val, reduction: str) -> Val:
    """``data`` [R, S] with row ``rows[m]`` (int64 [M], in range) replaced by, or combined
    with, ``updates[m]`` [M, S]."""
    (r, s), m = cx.shape(data), cx.shape(rows)[0]
    if r * m * (1 if reduction == "none" else s) > MAX_SCATTER:
        raise cx.unsupported(f"{m} updates of a tensor of {r * s} elements take more than "
                             f"{MAX_SCATTER} comparisons here")
    hit = cx.binary(Binary.EQ, cx.reshape(rows, [1, m]), np.arange(r, dtype=np.int64)[:, None])
    if reduction == "none":  # the last update of each row, as a float index (exact < 2^24)
        last = cx.reduce(Reduce.MAX, cx.add(Op.WHERE, [
            hit, np.arange(m, dtype=F32)[None, :], np.array(-1, F32)]), (1,))
        which = cast_to(cx, cx.binary(Binary.MAX, cx.reshape(last, [r]), np.array(0, F32)),
                        "int64")
        picked = cx.add(Op.GATHER, [updates, which], axis=0)
        return cx.add(Op.WHERE, [cx.binary(Binary.GE, last, np.array(0, F32)), picked, data])
    dtype = cx.type(data).dtype
    hit = cx.reshape(hit, [r, m, 1])
    upd = cx.reshape(updates, [1, m, s])
    if reduction in ("add", "mul"):
        unit = 0 if reduction == "add" else 1
        red, comb = (Reduce.SUM, Binary.ADD) if reduction == "add" else (Reduce.PROD, Binary.MUL)
        total = cx.reduce(red, cx.add(Op.WHERE, [hit, upd, np.array(unit, dtype)]), (1,))
        return cx.binary(comb, data, cx.reshape(total, [r, s]))
    # max(data, max of the row's updates); min through an order-reversing key, its own inverse
    big = reduction == "max"
    key = order_key(cx, upd, big)
    floor = np.array(lowest(np.dtype(dtype)), dtype)
    top = cx.reduce(Reduce.MAX, cx.add(Op.WHERE, [hit, key, floor]), (1,))
    best = cx.binary(Binary.MAX, order_key(cx, data, big), cx.reshape(top, [r, s]))
    return order_key(cx, best, big)


def _reduction(cx: Ctx) -> str:
    reduction = cx.attr("reduction", "none")
    if reduction not in REDUCTIONS:
        raise cx.error(f"reduction '{reduction}' is not one of {', '.join(REDUCTIONS)}")
    return reduction


def _check_types(cx: Ctx, data: Val, index: Val, updates: Val) -> None:
    if cx.type(index).dtype not in ("int64", "int32"):
        raise cx.error(f"indices must be int64 or int32, got {cx.type(index).dtype}")
    if cx.type(updates).dtype != cx.type(data).dtype:
        raise cx.error(f"updates are {cx.type(updates).dtype}, data {cx.type(data).dtype}")


@converter("Scatter", since=9)
@converter("ScatterElements", since=11)
def scatter_elements(cx: Ctx) -> Val:
    """out[..., index[i, j, k], ...] = updates[i, j, k] (at ``axis``); indices may be smaller
    than data on every axis. Each update element is a row of one element."""
    data, index, updates = cx.x(0), cx.x(1), cx.x(2)
    _check_types(cx, data, index, updates)
    shape, ishape = cx.shape(data), cx.shape(index)
    rank = len(shape)
    axis = cx.axis(int(cx.attr("axis", 0)), rank)
    if len(ishape) != rank or cx.shape(updates) != ishape or any(
            i > d for a, (i, d) in enumerate(zip(ishape, shape)) if a != axis):
        raise cx.error(f"indices {list(ishape)} and updates {list(cx.shape(updates))} do not "
                       f"fit data {list(shape)} at axis {axis}")
    if prod(ishape) == 0:
        return data
    strides = np.cumprod((*shape[1:], 1)[::-1])[::-1].astype(np.int64)
    grid = np.indices(ishape, dtype=np.int64)
    base = sum((grid[a] * strides[a] for a in range(rank) if a != axis),
               np.zeros(ishape, np.int64))
    i = _in_axis(cx, cast_to(cx, index, "int64"), shape[axis])
    rows = cx.binary(Binary.ADD, cx.binary(Binary.MUL, i, strides[axis]), base)
    out = _scatter_rows(cx, cx.reshape(data, [prod(shape), 1]), cx.reshape(rows, [prod(ishape)]),
                        cx.reshape(updates, [prod(ishape), 1]), _reduction(cx))
    return cx.reshape(out, shape)


@converter("ScatterND", since=11)
def scatter_nd(cx: Ctx) -> Val:
    """out[index[..., :]] = updates[...]: each index tuple (the last axis of indices) names a
    slice of data, a row of the data seen as [prod(shape[:k]), prod(shape[k:])]."""
    data, index, updates = cx.x(0), cx.x(1), cx.x(2)
    _check_types(cx, data, index, updates)
    shape, ishape, ushape = cx.shape(data), cx.shape(index), cx.shape(updates)
    k = ishape[-1] if ishape else 0
    lead = list(ishape[:-1])
    if not ishape or not 1 <= k <= len(shape) or tuple(ushape) != (*lead, *shape[k:]):
        raise cx.error(f"indices {list(ishape)} and updates {list(ushape)} do not fit data "
                       f"{list(shape)}")
    m, r, s = prod(lead), prod(shape[:k]), prod(shape[k:])
    if m == 0:
        return data
    strides = np.cumprod((*shape[1:k], 1)[::-1])[::-1].astype(np.int64)
    i = cx.reshape(cast_to(cx, index, "int64"), [m, k])
    rows: Val = np.zeros((), np.int64)
    for j in range(k):
        part = cx.reshape(cx.slice(i, [0, j], [1, 1], [m, 1]), [m])
        part = _in_axis(cx, part, shape[j])
        rows = cx.binary(Binary.ADD, rows, cx.binary(Binary.MUL, part, strides[j]))
    out = _scatter_rows(cx, cx.reshape(data, [r, s]), rows, cx.reshape(updates, [m, s]),
                        _reduction(cx))
    return cx.reshape(out, shape)

