"""Index ops: ArgMax/ArgMin, Hardmax, TopK and OneHot, composed from comparisons, WHERE,
REDUCE and GATHER.

The extremes are found by a MAX reduction in the data's own type (exact for ints), the
index of the first (last) one by a MAX reduction over float32 indices (exact below 2^24, the
longest axis taken); the outputs are int64.
"""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Op, Reduce, Unary
from ..ir.types import DTYPES, FLOATS, UNSIGNED
from .convert import Ctx, Val, as_array, converter, prod
from .ops_logic import cast_to

F32 = np.float32
MAX_AXIS = 1 << 24  # float32 holds every index below this exactly
MAX_TOPK_AXIS = 4096  # TopK ranks by comparing every pair along the axis


def _along(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """A 1-D array shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    return values.reshape([-1 if a == axis else 1 for a in range(rank)])


def _is_nan(cx: Ctx, x: Val) -> Val:
    return cx.unary(Unary.NOT, cx.binary(Binary.EQ, x, x))


def order_key(cx: Ctx, x: Val, largest: bool) -> Val:
    """``x``, or for the minimum a tensor in reverse order: -x for floats, ~x (= -1 - x, or
    max - x if unsigned: no overflow) for ints."""
    dtype = cx.type(x).dtype
    if largest:
        return x
    if dtype in FLOATS:
        return cx.unary(Unary.NEG, x)
    if dtype == "bool":
        raise cx.error("the input is a bool tensor")
    top = np.iinfo(dtype).max if dtype in UNSIGNED else -1
    return cx.binary(Binary.SUB, np.array(top, dtype), x)


def extreme_mask(cx: Ctx, x: Val, axis: int, largest: bool) -> Val:
    """Bool mask of the positions holding the maximum (minimum) along ``axis``; a NaN is the
    extreme of any slice holding one (as numpy's argmax)."""
    v = order_key(cx, x, largest)
    eq = cx.binary(Binary.EQ, v, cx.reduce(Reduce.MAX, v, (axis,)))
    if cx.type(x).dtype in FLOATS:  # max propagates NaN, which equals nothing
        eq = cx.binary(Binary.OR, eq, _is_nan(cx, v))
    return eq


def first_index(cx: Ctx, mask: Val, axis: int, last: bool = False) -> Val:
    """The float32 index of the first (last) true position along ``axis``, dim kept."""
    shape = cx.shape(mask)
    n = shape[axis]
    iota = _along(np.arange(n, dtype=F32), axis, len(shape))
    if last:
        return cx.reduce(Reduce.MAX, cx.add(Op.WHERE, [mask, iota, np.array(-1, F32)]), (axis,))
    neg = cx.reduce(Reduce.MAX, cx.add(Op.WHERE, [mask, -iota, np.array(-n, F32)]), (axis,))
    return cx.unary(Unary.NEG, neg)


def _check_axis_len(cx: Ctx, n: int, limit: int) -> None:
    if n == 0:
        raise cx.error("the axis is empty")
    if n > limit:
        raise cx.unsupported(f"an axis of {n} elements is longer than the {limit} sw2c "
                             "supports for this op")


@converter("ArgMax", "ArgMin")
def arg_extreme(cx: Ctx) -> Val:
    """int64 index of the max (min) along ``axis``; ties take the first index, or the last
    with select_last_index (opset 12)."""
    x = cx.x(0)
    shape = cx.shape(x)
    axis = cx.axis(int(cx.attr("axis", 0)), len(shape))
    _check_axis_len(cx, shape[axis], MAX_AXIS)
    mask = extreme_mask(cx, x, axis, cx.op_type == "ArgMax")
    idx = first_index(cx, mask, axis, bool(cx.attr("select_last_index", 0)))
    idx = cast_to(cx, idx, "int64")
    if cx.attr("keepdims", 1):
        return idx
    return cx.reshape(idx, [d for a, d in enumerate(shape) if a != axis])


def _hardmax(cx: Ctx, x: Val, axis: int) -> Val:
    shape = cx.shape(x)
    _check_axis_len(cx, shape[axis], MAX_AXIS)
    idx = first_index(cx, extreme_mask(cx, x, axis, True), axis)
    iota = _along(np.arange(shape[axis], dtype=F32), axis, len(shape))
    one, zero = np.ones((), cx.type(x).dtype), np.zeros((), cx.type(x).dtype)
    return cx.add(Op.WHERE, [cx.binary(Binary.EQ, idx, iota), one, zero])


@converter("Hardmax")
def hardmax_2d(cx: Ctx) -> Val:
    """Opset < 13: the input is coerced to 2-D at ``axis`` (default 1)."""
    x = cx.x(0)
    shape = cx.shape(x)
    axis = int(cx.attr("axis", 1))
    if not -len(shape) <= axis <= len(shape):
        raise cx.error(f"axis {axis} is out of range for rank {len(shape)}")
    axis += len(shape) if axis < 0 else 0
    flat = cx.reshape(x, [prod(shape[:axis]), prod(shape[axis:])])
    if 0 in cx.shape(flat):
        return x
    return cx.reshape(_hardmax(cx, flat, 1), shape)


@converter("Hardmax", since=13)
def hardmax(cx: Ctx) -> Val:
    x = cx.x(0)
    shape = cx.shape(x)
    return _hardmax(cx, x, cx.axis(int(cx.attr("axis", -1)), len(shape)))


# --- TopK ------------------------------------------------------------------------------------
def _rank(cx: Ctx, x: Val, axis: int, largest: bool) -> Val:
    """float32 count, per element, of the elements ordered before it along ``axis``: larger
    (smaller) ones and equal ones at lower indices. NaN orders as the largest value."""
    shape = cx.shape(x)
    n, r = shape[axis], len(shape)
    if cx.type(x).dtype in FLOATS:
        inf = np.array(np.inf if largest else -np.inf, F32)
        x = cx.add(Op.WHERE, [_is_nan(cx, x), inf, x])
    mine = cx.reshape(x, [*shape[:axis + 1], 1, *shape[axis + 1:]])  # element i
    other = cx.reshape(x, [*shape[:axis], 1, *shape[axis:]])  # element j
    ahead = cx.binary(Binary.GT if largest else Binary.LT, other, mine)
    lower = np.arange(n)[None, :] < np.arange(n)[:, None]  # [i, j]: j < i
    tie = cx.binary(Binary.AND, cx.binary(Binary.EQ, other, mine),
                    lower.reshape([n, n] + [1] * (r - axis - 1)))
    count = cast_to(cx, cx.binary(Binary.OR, ahead, tie), "float32")
    return cx.reshape(cx.reduce(Reduce.SUM, count, (axis + 1,)), shape)


def take_along(cx: Ctx, data: Val, idx: Val, axis: int) -> Val:
    """data[..., idx[..., j, ...], ...] along ``axis`` (idx: int64 in range, data's rank): one
    GATHER from the flattened data at flat positions."""
    shape, ishape = cx.shape(data), cx.shape(idx)
    strides = np.cumprod((*shape[1:], 1)[::-1])[::-1].astype(np.int64)
    grid = np.indices(ishape, dtype=np.int64)
    base = sum((grid[a] * strides[a] for a in range(len(shape)) if a != axis),
               np.zeros(ishape, np.int64))
    flat = cx.binary(Binary.ADD, cx.binary(Binary.MUL, idx, strides[axis]), base)
    return cx.add(Op.GATHER, [cx.reshape(data, [prod(shape)]), flat], axis=0)


def _topk(cx: Ctx, k: int) -> list[Val]:
    x = cx.x(0)
    shape = cx.shape(x)
    axis = cx.axis(int(cx.attr("axis", -1)), len(shape))
    n = shape[axis]
    if not 0 <= k <= n:
        raise cx.error(f"k = {k} is outside [0, {n}], the axis length")
    out = [*shape[:axis], k, *shape[axis + 1:]]
    if k == 0:
        empty = cx.slice(x, [0] * len(shape), [1] * len(shape), out)
        return [empty, np.zeros(out, np.int64)]
    _check_axis_len(cx, n, MAX_TOPK_AXIS)
    rank = _rank(cx, x, axis, bool(cx.attr("largest", 1)))  # sorted or not: sorted
    r = cx.reshape(rank, [*shape[:axis + 1], 1, *shape[axis + 1:]])
    slot = np.arange(k, dtype=F32).reshape([k] + [1] * (len(shape) - axis - 1))
    iota = _along(np.arange(n, dtype=F32), axis, len(shape) + 1)
    hit = cx.binary(Binary.EQ, r, slot)  # [..., n, k, ...]: element i goes to slot p
    pos = cx.reduce(Reduce.SUM, cx.add(Op.WHERE, [hit, iota, np.array(0, F32)]), (axis,))
    idx = cast_to(cx, cx.reshape(pos, out), "int64")
    return [take_along(cx, x, idx, axis), idx]


@converter("TopK")
def topk_attr(cx: Ctx) -> list[Val]:
    return _topk(cx, int(cx.attr("k", -1)))


@converter("TopK", since=10)
def topk_input(cx: Ctx) -> list[Val]:
    k = cx.const_ints(1, "k")
    if k is None or len(k) != 1:
        raise cx.error("k must be a 1-element tensor")
    return _topk(cx, k[0])


# --- OneHot ----------------------------------------------------------------------------------
@converter("OneHot", since=9)
def one_hot(cx: Ctx) -> Val:
    """values[1] where the (wrapped once if negative) index equals the position along the
    new ``axis``, else values[0]; an index outside [-depth, depth) gives all off values."""
    indices, values = cx.x(0), cx.x(2)
    depth = cx.const(1, "depth")
    if depth is None or depth.size != 1:
        raise cx.error("depth must be a 1-element tensor")
    depth = int(np.asarray(depth).reshape(-1)[0])
    if depth < 1:
        raise cx.error(f"depth {depth} must be positive")
    ishape = cx.shape(indices)
    rank = len(ishape) + 1
    axis = cx.axis(int(cx.attr("axis", -1)), rank)
    if isinstance(values, np.ndarray) and str(as_array(values).dtype) not in DTYPES:
        raise cx.unsupported(f"values of type {values.dtype} are not supported")
    if cx.shape(values) != (2,):
        raise cx.error(f"values has shape {list(cx.shape(values))}, expected [2]")
    i = cast_to(cx, indices, "int64")  # float indices truncate, as onnxruntime
    d = np.array(depth, np.int64)
    i = cx.add(Op.WHERE, [cx.binary(Binary.LT, i, np.zeros((), np.int64)),
                          cx.binary(Binary.ADD, i, d), i])
    i = cx.reshape(i, [*ishape[:axis], 1, *ishape[axis:]])
    hit = cx.binary(Binary.EQ, i, _along(np.arange(depth, dtype=np.int64), axis, rank))
    off = cx.reshape(cx.slice(values, [0], [1], [1]), [])
    on = cx.reshape(cx.slice(values, [1], [1], [1]), [])
    return cx.add(Op.WHERE, [hit, on, off])
