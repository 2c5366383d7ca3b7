"""Typed ops: Cast/CastLike, comparisons, logic (And/Or/Xor/Not), Where, and Gather on run-time
indices (embedding lookups). Masks are bool tensors and ids int64/int32 ones in the IR, as in
ONNX; constant operands fold at import."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..ir import Binary, Op, Unary
from .convert import RUNTIME_DTYPES, Ctx, Val, converter

COMPARE = {"Equal": Binary.EQ, "Less": Binary.LT, "LessOrEqual": Binary.LE,
           "Greater": Binary.GT, "GreaterOrEqual": Binary.GE}
LOGIC = {"And": Binary.AND, "Or": Binary.OR, "Xor": Binary.XOR}


def cast_to(cx: Ctx, x: Val, to: str) -> Val:
    return x if cx.type(x).dtype == to else cx.add(Op.CAST, [x], to=to)


@converter("Cast", "CastLike")
def cast(cx: Ctx) -> Val:
    """To float32, int64, int32 or bool (a run-time tensor); constants fold (any type)."""
    x = cx.x(0)
    if cx.op_type == "Cast":
        elem = int(cx.attr("to", 0))
    else:
        like = cx.x(1)
        dtype = cx.type(like).dtype
        elem = next((e for e, d in RUNTIME_DTYPES.items() if d == dtype), 0)
    if isinstance(x, np.ndarray) and elem not in RUNTIME_DTYPES:  # e.g. a shape to float16
        from onnx import helper

        return x.astype(helper.tensor_dtype_to_np_dtype(elem))
    if elem not in RUNTIME_DTYPES:
        raise cx.unsupported(f"casting a run-time tensor to {TensorProto.DataType.Name(elem)} "
                             f"is not supported (run-time types: "
                             f"{', '.join(RUNTIME_DTYPES.values())})")
    return cast_to(cx, x, RUNTIME_DTYPES[elem])


@converter(*COMPARE)
def compare(cx: Ctx) -> Val:
    return cx.binary(COMPARE[cx.op_type], cx.x(0), cx.x(1))


@converter(*LOGIC)
def logic(cx: Ctx) -> Val:
    return cx.binary(LOGIC[cx.op_type], cx.x(0), cx.x(1))


@converter("Not")
def logical_not(cx: Ctx) -> Val:
    return cx.unary(Unary.NOT, cx.x(0))


BITWISE = {"BitwiseAnd": Binary.AND, "BitwiseOr": Binary.OR, "BitwiseXor": Binary.XOR}


@converter(*BITWISE, since=18)
def bitwise(cx: Ctx) -> Val:
    return cx.binary(BITWISE[cx.op_type], cx.x(0), cx.x(1))


@converter("BitwiseNot", since=18)
def bitwise_not(cx: Ctx) -> Val:
    return cx.unary(Unary.NOT, cx.x(0))


@converter("BitShift", since=11)
def bit_shift(cx: Ctx) -> Val:
    direction = cx.attr("direction", b"")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("LEFT", "RIGHT"):
        raise cx.error(f"direction must be LEFT or RIGHT, got {direction!r}")
    return cx.binary(Binary.SHL if direction == "LEFT" else Binary.SHR, cx.x(0), cx.x(1))


@converter("Where", since=9)
def where(cx: Ctx) -> Val:
    return cx.add(Op.WHERE, [cx.x(0), cx.x(1), cx.x(2)])


def gather_runtime(cx: Ctx, data: Val, indices: Val, axis: int) -> Val:
    """data gathered along ``axis`` at run-time ``indices``: out-of-range ids are clamped into
    the axis (ONNX leaves them undefined; generated code must stay inside the table)."""
    if cx.type(indices).dtype not in ("int64", "int32"):
        raise cx.error(f"indices must be int64 or int32, got {cx.type(indices).dtype}")
    return cx.add(Op.GATHER, [data, indices], axis=axis)


@converter("GatherElements", since=11)
def gather_elements(cx: Ctx) -> Val:
    """out[i][j][k] = data[i][index[i][j][k]][k] (axis 1): one GATHER from the flattened data
    at flat positions computed with int64 ops (constant parts fold at import), so it costs
    what an embedding lookup costs and its indices are clamped the same way."""
    data, index = cx.x(0), cx.x(1)
    shape, ishape = cx.shape(data), cx.shape(index)
    rank = len(shape)
    axis = cx.axis(int(cx.attr("axis", 0)), rank)
    if len(ishape) != rank:
        raise cx.error(f"indices have rank {len(ishape)}, data rank {rank}")
    strides = np.cumprod((*shape[1:], 1)[::-1])[::-1].astype(np.int64)  # row-major
    grid = np.indices(ishape, dtype=np.int64)
    base = sum(grid[a] * strides[a] for a in range(rank) if a != axis)  # every axis but axis
    i = _in_axis(cx, cast_to(cx, index, "int64"), shape[axis])
    flat = cx.binary(Binary.ADD, cx.binary(Binary.MUL, i, strides[axis]), base)
    return cx.add(Op.GATHER, [cx.reshape(data, [int(np.prod(shape))]), flat], axis=0)


def _in_axis(cx: Ctx, i: Val, n: int) -> Val:
    """int64 indices into an axis of ``n``: a negative one counts back once, then clamped
    (as Gather's), so that a flat position built from several stays inside its row."""
    zero, size = np.zeros((), np.int64), np.array(n, np.int64)
    i = cx.add(Op.WHERE, [cx.binary(Binary.LT, i, zero), cx.binary(Binary.ADD, i, size), i])
    i = cx.add(Op.WHERE, [cx.binary(Binary.LT, i, zero), zero, i])
    return cx.binary(Binary.MIN, i, size - 1)


@converter("GatherND", since=11)
def gather_nd(cx: Ctx) -> Val:
    """Slices of data at the index tuples in indices' last axis (after ``batch_dims`` shared
    leading axes): one GATHER from data flattened over the batch and indexed axes, at flat
    positions computed with int64 ops."""
    data, index = cx.x(0), cx.x(1)
    shape, ishape = cx.shape(data), cx.shape(index)
    b = int(cx.attr("batch_dims", 0))
    k = ishape[-1] if ishape else 0
    if not ishape or b + k > len(shape) or tuple(ishape[:b]) != tuple(shape[:b]):
        raise cx.error(f"indices {list(ishape)} do not index data {list(shape)} with "
                       f"batch_dims {b}")
    rows = int(np.prod(shape[:b + k]))
    strides = np.cumprod((*shape[1:b + k], 1)[::-1])[::-1].astype(np.int64)
    i = cast_to(cx, index, "int64")
    lead = list(ishape[:-1])
    flat: Val = np.zeros((), np.int64)
    for j in range(k):  # the j-th index of each tuple
        starts, counts = [0] * len(ishape), [*lead, 1]
        starts[-1] = j
        part = cx.reshape(cx.slice(i, starts, [1] * len(ishape), counts), lead)
        part = _in_axis(cx, part, shape[b + j])
        flat = cx.binary(Binary.ADD, flat, cx.binary(Binary.MUL, part, strides[b + j]))
    if b:  # the batch position of every tuple
        grid = np.indices(lead, dtype=np.int64)[:b]
        flat = cx.binary(Binary.ADD, flat, sum(grid[a] * strides[a] for a in range(b)))
    if not k:
        flat = cx.binary(Binary.ADD, flat, np.zeros(lead, np.int64))
    table = cx.reshape(data, [rows, *shape[b + k:]])
    return cx.add(Op.GATHER, [table, flat], axis=0)
