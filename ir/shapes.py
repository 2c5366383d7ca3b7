"""Type inference: the output type of every op from its input types and attributes.

The verifier checks each node against this; builders use it so no pass computes a shape by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .ops import Op
from .types import TensorType, type_of


class ShapeError(ValueError):
    """Input types that an op cannot take (raised inside the IR; callers turn it into a
    ModelError naming the node)."""


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


def infer(op: Op, ins: Sequence[TensorType], at: Mapping[str, Any]) -> TensorType:
    """The output type of ``op`` applied to inputs of types ``ins``."""
    if op is Op.CONST:
        return type_of(at["value"])
    if op is Op.KERNEL:
        body = at["body"]
        return body.type_of(body.outputs[0])
    x = ins[0]
    if op is Op.MATMUL:
        return TensorType(_matmul(ins[0], ins[1]), x.dtype)
    if op is Op.UNARY:
        return x
    if op is Op.BINARY:
        return TensorType(broadcast(ins[0].shape, ins[1].shape), x.dtype)
    if op is Op.REDUCE:
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
