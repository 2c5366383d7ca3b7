"""Type inference: the output type of every op from its input types and attributes.

The verifier checks each node against this; builders use it so no pass computes a shape by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .ops import COMPARISONS, LOGIC, SHIFTS, Binary, Op, Reduce, Unary
from .types import FLOATS, INTS, TensorType, type_of

INT_UNARY = frozenset({Unary.RELU, Unary.NEG, Unary.ABS})  # defined on ints too
FLOAT_ONLY = frozenset({Op.WINDOW})  # patches padded with -inf or 0.0 (ints: 0 only)


class ShapeError(ValueError):
    """Input types that an op cannot take (raised inside the IR; callers turn it into a
    ModelError naming the node)."""


def keeps_last_axis(op: Op, attrs: Mapping[str, Any], src: Sequence[int],
                    dst: Sequence[int]) -> bool:
    """Whether a transpose, slice, pad or reshape of ``src`` into ``dst`` reads element i
    along its output's last axis from element i along its input's: vectors along that axis
    read through the op stay vectors (a reshape keeps the flat order, so it does when both
    last axes are the same length)."""
    rank = len(src)
    if not rank or not dst or src[-1] != dst[-1]:
        return False
    if op is Op.TRANSPOSE:
        return attrs["perm"][-1] == rank - 1
    if op is Op.SLICE:
        return attrs["steps"][-1] == 1 and attrs["starts"][-1] == 0
    if op is Op.PAD:
        return not attrs["pads"][rank - 1] and not attrs["pads"][-1]
    return op is Op.RESHAPE


def broadcast(*shapes: Sequence[int]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*(tuple(s) for s in shapes)))
    except ValueError as e:
        raise ShapeError(f"shapes {' and '.join(map(str, shapes))} do not broadcast") from e


def window_out(size: int, k: int, s: int, d: int, pb: int, pe: int) -> int:
    span = (k - 1) * d + 1
    out = (size + pb + pe - span) // s + 1
    if out < 1:
        raise ShapeError(f"window of span {span} does not fit a padded size of {size + pb + pe}")
    return out


def _matmul(a: TensorType, b: TensorType) -> tuple[int, ...]:
    if a.rank < 2 or b.rank < 2:
        raise ShapeError("matmul operands must have rank >= 2")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul inner dims differ: {a.shape} @ {b.shape}")
    return broadcast(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])


def _window(x: TensorType, at: Mapping[str, Any]) -> tuple[int, ...]:
    k, s, d, p = at["kernel"], at["strides"], at["dilations"], at["pads"]
    n = len(k)
    if x.rank != n + 2 or len(s) != n or len(d) != n or len(p) != 2 * n:
        raise ShapeError(f"window attributes do not match input rank {x.rank}")
    sp = [window_out(x.shape[1 + i], k[i], s[i], d[i], p[i], p[n + i]) for i in range(n)]
    return (x.shape[0], *sp, *k, x.shape[-1])


def _reshape(x: TensorType, shape: Sequence[int]) -> tuple[int, ...]:
    if int(np.prod(shape, dtype=np.int64)) != x.size:
        raise ShapeError(f"cannot reshape {x.shape} to {tuple(shape)}")
    return tuple(shape)


def _concat(xs: Sequence[TensorType], axis: int) -> tuple[int, ...]:
    first = xs[0].shape
    for t in xs[1:]:
        if t.rank != len(first) or any(
            a != b for i, (a, b) in enumerate(zip(t.shape, first)) if i != axis
        ):
            raise ShapeError(f"concat inputs {[t.shape for t in xs]} differ off axis {axis}")
    return first[:axis] + (sum(t.shape[axis] for t in xs),) + first[axis + 1 :]


def _reduce(x: TensorType, axes: Sequence[int]) -> tuple[int, ...]:
    return tuple(1 if i in axes else d for i, d in enumerate(x.shape))


def _pad(x: TensorType, pads: Sequence[int]) -> tuple[int, ...]:
    r = x.rank
    return tuple(d + pads[i] + pads[r + i] for i, d in enumerate(x.shape))


def unary_takes(fn: Unary, dtype: str) -> bool:
    if dtype == "bool" or fn is Unary.NOT:
        return fn is Unary.NOT and dtype not in FLOATS
    return dtype in FLOATS or fn in INT_UNARY


def binary_takes(fn: Binary, dtype: str) -> bool:
    if fn in LOGIC:
        return dtype not in FLOATS
    if fn in SHIFTS:
        return dtype in INTS
    if fn in (Binary.POW, Binary.MOD):
        return dtype in FLOATS
    return dtype != "bool" or fn is Binary.EQ


def infer(op: Op, ins: Sequence[TensorType], at: Mapping[str, Any]) -> TensorType:
    """The output type of ``op`` applied to inputs of types ``ins``."""
    if op is Op.CONST:
        return type_of(at["value"])
    if op is Op.KERNEL:
        body = at["body"]
        return body.type_of(body.outputs[0])
    x = ins[0]
    if op is Op.WINDOW and x.dtype in INTS and at["pad"] == 0:
        pass  # integer patches padded with 0 (QLinearConv, ConvInteger): exact
    elif op in FLOAT_ONLY and any(t.dtype not in FLOATS for t in ins):
        raise ShapeError(f"{op.value} of {', '.join(t.dtype for t in ins)} tensors is not "
                         "supported (floating point only)")
    if op in (Op.MATMUL, Op.REDUCE) and any(t.dtype == "bool" for t in ins):
        raise ShapeError(f"{op.value} of bool tensors is not supported (cast them to a number)")
    if op is Op.MATMUL:
        if ins[0].dtype != ins[1].dtype:
            raise ShapeError(f"operands of matmul differ in type: {x.dtype} and {ins[1].dtype}")
        return TensorType(_matmul(ins[0], ins[1]), x.dtype)
    if op is Op.UNARY:
        if not unary_takes(at["fn"], x.dtype):
            raise ShapeError(f"{at['fn'].value} of a {x.dtype} tensor is not supported")
        return x
    if op is Op.BINARY:
        fn = at["fn"]
        if not binary_takes(fn, x.dtype):
            raise ShapeError(f"{fn.value} of {x.dtype} tensors is not supported")
        if ins[0].dtype != ins[1].dtype:
            raise ShapeError(f"operands of {at['fn'].value} differ in type: {x.dtype} and "
                             f"{ins[1].dtype}")
        return TensorType(broadcast(ins[0].shape, ins[1].shape),
                          "bool" if fn in COMPARISONS else x.dtype)
    if op is Op.CAST:
        return TensorType(x.shape, at["to"])
    if op is Op.WHERE:
        if x.dtype != "bool" or ins[1].dtype != ins[2].dtype:
            raise ShapeError(f"where takes a bool condition and two values of one type, got "
                             f"{x.dtype}, {ins[1].dtype}, {ins[2].dtype}")
        return TensorType(broadcast(*(t.shape for t in ins)), ins[1].dtype)
    if op is Op.GATHER:
        axis, idx = at["axis"], ins[1]
        if idx.dtype not in ("int64", "int32") or not 0 <= axis < x.rank:
            raise ShapeError(f"gather takes int indices and an axis of the data, got "
                             f"{idx.dtype} and axis {axis} of rank {x.rank}")
        if x.shape[axis] == 0:
            raise ShapeError("gather from an empty axis")
        return TensorType(x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype)
    if op is Op.REDUCE:
        if at["fn"] is Reduce.MEAN and x.dtype not in FLOATS:
            raise ShapeError(f"mean of a {x.dtype} tensor is not supported (floating point only)")
        return TensorType(_reduce(x, at["axes"]), x.dtype)
    if op is Op.WINDOW:
        return TensorType(_window(x, at), x.dtype)
    if op is Op.RESHAPE:
        return TensorType(_reshape(x, at["shape"]), x.dtype)
    if op is Op.TRANSPOSE:
        perm = at["perm"]
        if sorted(perm) != list(range(x.rank)):
            raise ShapeError(f"bad permutation {perm} for rank {x.rank}")
        return TensorType(tuple(x.shape[p] for p in perm), x.dtype)
    if op is Op.CONCAT:
        return TensorType(_concat(ins, at["axis"]), x.dtype)
    if op is Op.SLICE:
        for d, st, sp, n in zip(x.shape, at["starts"], at["steps"], at["counts"]):
            if n and not (0 <= st < d and 0 <= st + (n - 1) * sp < d):
                raise ShapeError(f"slice reads outside an axis of size {d}")
        return TensorType(tuple(at["counts"]), x.dtype)
    if op is Op.PAD:
        return TensorType(_pad(x, at["pads"]), x.dtype)
    raise ShapeError(f"no type rule for {op}")
