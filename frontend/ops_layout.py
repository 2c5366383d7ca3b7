"""Data movement (Reshape, Flatten, Transpose, Concat, Split, Slice, Pad, Squeeze, Unsqueeze,
Expand, Tile, Gather with constant indices), pass-throughs (Identity, Dropout)
and the ops that produce constants (Constant, Shape, Size)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import numpy_helper

from ..ir import Binary, Op
from .convert import Ctx, Val, converter, prod, sparse_to_dense


def _ints(a: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


# --- reshapes -----------------------------------------------------------------------------------
@converter("Reshape")
def reshape(cx: Ctx) -> Val:
    """0 copies the input dim (unless allowzero, opset 14), one -1 is inferred."""
    x = cx.x(0)
    xs = cx.shape(x)
    target = cx.const(1, "the target shape")
    if target is None:
        raise cx.error("the target shape input is missing")
    dims = _ints(target)
    allowzero = cx.attr("allowzero", 0)
    out = []
    for i, d in enumerate(dims):
        if d == 0 and not allowzero:
            if i >= len(xs):
                raise cx.error(f"shape {dims} copies dim {i} of a rank-{len(xs)} input")
            d = xs[i]
        out.append(d)
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise cx.error(f"bad target shape {dims}")
    if -1 in out:
        known = prod([d for d in out if d != -1])
        if known == 0 or prod(xs) % known:
            raise cx.error(f"cannot reshape {list(xs)} to {dims}")
        out[out.index(-1)] = prod(xs) // known
    if prod(out) != prod(xs):
        raise cx.error(f"cannot reshape {list(xs)} to {dims}")
    return cx.reshape(x, out)


@converter("Flatten")
def flatten(cx: Ctx) -> Val:
    x = cx.x(0)
    xs = cx.shape(x)
    axis = int(cx.attr("axis", 1))
    if not -len(xs) <= axis <= len(xs):
        raise cx.error(f"axis {axis} is out of range for rank {len(xs)}")
    axis += len(xs) if axis < 0 else 0
    return cx.reshape(x, [prod(xs[:axis]), prod(xs[axis:])])


def _squeeze(cx: Ctx, axes: list[int] | None) -> Val:
    x = cx.x(0)
    xs = cx.shape(x)
    if axes is None:
        axes = [i for i, d in enumerate(xs) if d == 1]
    axes = {cx.axis(a, len(xs)) for a in axes}
    if any(xs[a] != 1 for a in axes):
        raise cx.error(f"cannot squeeze axes {sorted(axes)} of shape {list(xs)}")
    return cx.reshape(x, [d for i, d in enumerate(xs) if i not in axes])


def _unsqueeze(cx: Ctx, axes: list[int] | None) -> Val:
    x = cx.x(0)
    xs = list(cx.shape(x))
    if not axes:
        raise cx.error("axes are required")
    rank = len(xs) + len(axes)
    axes = sorted({cx.axis(a, rank) for a in axes})
    if len(axes) != len(set(axes)):
        raise cx.error("axes repeat")
    for a in axes:
        xs.insert(a, 1)
    return cx.reshape(x, xs)


@converter("Squeeze")
def squeeze_attr(cx: Ctx) -> Val:
    return _squeeze(cx, cx.ints("axes"))


@converter("Squeeze", since=13)
def squeeze_input(cx: Ctx) -> Val:
    return _squeeze(cx, cx.const_ints(1, "axes"))


@converter("Unsqueeze")
def unsqueeze_attr(cx: Ctx) -> Val:
    return _unsqueeze(cx, cx.ints("axes"))


@converter("Unsqueeze", since=13)
def unsqueeze_input(cx: Ctx) -> Val:
    return _unsqueeze(cx, cx.const_ints(1, "axes"))


@converter("Transpose")
def transpose(cx: Ctx) -> Val:
    x = cx.x(0)
    rank = len(cx.shape(x))
    perm = cx.ints("perm", list(range(rank))[::-1])
    if sorted(perm) != list(range(rank)):
        raise cx.error(f"perm {perm} is not a permutation of {rank} axes")
    return cx.transpose(x, perm)


# --- joins and splits ---------------------------------------------------------------------------
@converter("Concat")
def concat(cx: Ctx) -> Val:
    xs = cx.present()
    if not xs:
        raise cx.error("needs at least one input")
    return cx.concat(xs, cx.axis(int(cx.attr("axis", 0)), len(cx.shape(xs[0]))))


def _split(cx: Ctx, sizes: list[int] | None) -> list[Val]:
    x = cx.x(0)
    xs = cx.shape(x)
    axis = cx.axis(int(cx.attr("axis", 0)), len(xs))
    dim, k = xs[axis], len(cx.node.output)
    if sizes is None:
        n = cx.attr("num_outputs")  # opset 18: ceil-sized chunks, the last one smaller
        if n is not None:
            chunk = -(-dim // int(n))
            sizes = [chunk] * (int(n) - 1) + [dim - chunk * (int(n) - 1)]
        elif dim % k == 0:
            sizes = [dim // k] * k
        else:
            raise cx.error(f"cannot split {dim} evenly into {k} outputs")
    if len(sizes) != k or sum(sizes) != dim or any(s < 0 for s in sizes):
        raise cx.error(f"split sizes {sizes} do not divide dim {dim} into {k} outputs")
    outs, start = [], 0
    for size in sizes:
        starts, counts = [0] * len(xs), list(xs)
        starts[axis], counts[axis] = (start if size else 0), size
        outs.append(cx.slice(x, starts, [1] * len(xs), counts))
        start += size
    return outs


@converter("Split")
def split_attr(cx: Ctx) -> list[Val]:
    return _split(cx, cx.ints("split"))


@converter("Split", since=13)
def split_input(cx: Ctx) -> list[Val]:
    sizes = cx.const(1, "split")
    return _split(cx, None if sizes is None or sizes.size == 0 else _ints(sizes))


def _axis_slice(dim: int, start: int, end: int, step: int) -> tuple[int, int]:
    """(first index, count) of ONNX Slice on one axis: negatives count from the end, then
    start/end clamp to [0, dim] ([0, dim-1] and [-1, dim-1] for a negative step)."""
    start += dim if start < 0 else 0
    end += dim if end < 0 else 0
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    count = len(range(start, end, step))
    return (start if count else 0), count


def _slice(cx: Ctx, starts: list[int], ends: list[int], axes: list[int] | None,
           steps: list[int] | None) -> Val:
    x = cx.x(0)
    xs = cx.shape(x)
    axes = list(range(len(starts))) if axes is None else [cx.axis(a, len(xs)) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps) or len(set(axes)) != len(axes):
        raise cx.error(f"starts {starts}, ends {ends}, axes {axes}, steps {steps} do not match")
    first, step, count = [0] * len(xs), [1] * len(xs), list(xs)
    for a, s, e, p in zip(axes, starts, ends, steps):
        if p == 0:
            raise cx.error("slice step 0")
        first[a], count[a] = _axis_slice(xs[a], s, e, p)
        step[a] = p
    return cx.slice(x, first, step, count)


@converter("Slice")
def slice_attr(cx: Ctx) -> Val:
    starts, ends = cx.ints("starts"), cx.ints("ends")
    if starts is None or ends is None:
        raise cx.error("starts and ends are required")
    return _slice(cx, starts, ends, cx.ints("axes"), None)


@converter("Slice", since=10)
def slice_input(cx: Ctx) -> Val:
    """Opset >= 10: starts, ends and the optional axes and steps are (constant) inputs."""
    starts, ends, axes, steps = (cx.const_ints(i, what) for i, what in
                                 enumerate(("starts", "ends", "axes", "steps"), start=1))
    if starts is None or ends is None:
        raise cx.error("starts and ends are required")
    return _slice(cx, starts, ends, axes, steps)


# --- padding ------------------------------------------------------------------------------------
def _pad(cx: Ctx, pads: list[int], value: float, axes: list[int] | None) -> Val:
    """Constant padding; negative pads crop (a SLICE) before the positive ones pad."""
    mode = cx.attr("mode", "constant")
    if mode != "constant":
        raise cx.unsupported(f"mode '{mode}' is not supported (only 'constant')")
    x = cx.x(0)
    xs = cx.shape(x)
    r = len(xs)
    axes = list(range(r)) if axes is None else [cx.axis(a, r) for a in axes]
    if len(pads) != 2 * len(axes):
        raise cx.error(f"pads {pads} must have 2 entries per padded axis ({len(axes)})")
    full = [0] * (2 * r)
    for i, a in enumerate(axes):
        full[a], full[r + a] = pads[i], pads[len(axes) + i]
    if any(p < 0 for p in full):
        count = [d + min(full[i], 0) + min(full[r + i], 0) for i, d in enumerate(xs)]
        if any(c < 0 for c in count):
            raise cx.error(f"negative pads {pads} crop more than the input {list(xs)}")
        x = cx.slice(x, [-min(full[i], 0) if count[i] else 0 for i in range(r)], [1] * r, count)
    full = [max(p, 0) for p in full]
    return cx.add(Op.PAD, [x], pads=tuple(full), value=float(value)) if any(full) else x


@converter("Pad")
def pad_attr(cx: Ctx) -> Val:
    pads = cx.ints("pads")
    if pads is None:
        raise cx.error("pads are required")
    return _pad(cx, pads, float(cx.attr("value", 0.0)), None)


@converter("Pad", since=11)
def pad_input(cx: Ctx) -> Val:
    pads, value, axes = (cx.const_ints(1, "pads"), cx.const(2, "constant_value"),
                         cx.const_ints(3, "axes"))
    if pads is None:
        raise cx.error("pads are required")
    value = 0.0 if value is None or value.size == 0 else float(value.reshape(-1)[0])
    return _pad(cx, pads, value, axes)


# --- broadcasting and gathering -------------------------------------------------------------------
@converter("Expand")
def expand(cx: Ctx) -> Val:
    """Broadcast by adding -0.0 (x + -0.0 == x for every x, signed zeros, inf and nan too) of a
    shape that is the target on the expanded axes and 1 elsewhere: exact and cheap."""
    x = cx.x(0)
    xs = cx.shape(x)
    target = cx.const(1, "the target shape")
    try:
        out = tuple(int(d) for d in np.broadcast_shapes(xs, tuple(_ints(target))))
    except ValueError:
        raise cx.error(f"cannot expand {list(xs)} to {_ints(target)}") from None
    padded = (1,) * (len(out) - len(xs)) + xs
    zeros = [o if p == 1 and o != 1 else 1 for p, o in zip(padded, out)]
    if prod(zeros) == 1:
        return cx.reshape(x, out)
    return cx.binary(Binary.ADD, x, np.full(zeros, -0.0, np.float32))


@converter("Tile")
def tile(cx: Ctx) -> Val:
    x = cx.x(0)
    reps = _ints(cx.const(1, "repeats"))
    if len(reps) != len(cx.shape(x)) or any(r < 1 for r in reps):
        raise cx.error(f"repeats {reps} must be positive, one per axis")
    for axis, r in enumerate(reps):
        x = cx.concat([x] * r, axis)
    return x


def _runs(idx: list[int]) -> list[tuple[int, int, int]]:
    """(start, step, count) pieces covering ``idx``: one if it is an arithmetic progression."""
    steps = {b - a for a, b in zip(idx, idx[1:])}
    if len(steps) == 1 and 0 not in steps:
        return [(idx[0], steps.pop(), len(idx))]
    runs: list[tuple[int, int, int]] = []
    for i in idx:
        if runs and runs[-1][0] + runs[-1][2] == i:
            runs[-1] = (runs[-1][0], 1, runs[-1][2] + 1)
        else:
            runs.append((i, 1, 1))
    return runs


MAX_SLICE_RUNS = 8  # constant indices in more runs than this are gathered, not sliced


@converter("Gather")
def gather(cx: Ctx) -> Val:
    """Constant indices on a run-time tensor: slices (and a concat), then a reshape; run-time
    indices (an embedding lookup): one GATHER."""
    x = cx.x(0)
    xs = cx.shape(x)
    axis = cx.axis(int(cx.attr("axis", 0)), len(xs))
    if not isinstance(cx.x(1), np.ndarray):
        from .ops_logic import gather_runtime

        return gather_runtime(cx, x, cx.x(1), axis)
    idx = cx.const(1, "indices")
    flat = _ints(idx)
    if any(not -xs[axis] <= i < xs[axis] for i in flat):
        raise cx.error(f"indices {flat} are out of range for a dim of {xs[axis]}")
    flat = [i % xs[axis] for i in flat]
    if len(_runs(flat)) > MAX_SLICE_RUNS:  # scattered ids: one GATHER, not a slice per run
        from .ops_logic import gather_runtime

        return gather_runtime(cx, x, np.array(flat, np.int64).reshape(idx.shape), axis)
    pieces = []
    for start, step, count in _runs(flat):
        starts, steps, counts = [0] * len(xs), [1] * len(xs), list(xs)
        starts[axis], steps[axis], counts[axis] = start, step, count
        pieces.append(cx.slice(x, starts, steps, counts))
    y = cx.concat(pieces, axis) if pieces else cx.slice(
        x, [0] * len(xs), [1] * len(xs), [0 if i == axis else d for i, d in enumerate(xs)])
    return cx.reshape(y, [*xs[:axis], *idx.shape, *xs[axis + 1:]])


# --- pass-throughs --------------------------------------------------------------------------------
@converter("Identity")
def identity(cx: Ctx) -> Val:
    return cx.x(0)


@converter("Dropout")
def dropout(cx: Ctx) -> list[Val | None]:
    """Inference: the identity, and a mask of all True (nothing dropped)."""
    training = cx.const(2, "training_mode") if cx.opset >= 12 else None
    if training is not None and bool(training):  # only a zero ratio keeps that the identity
        ratio = cx.const(1, "ratio")
        if ratio is None or float(ratio) != 0:
            raise cx.unsupported("training_mode=True is not supported (inference only)")
    if cx.used(1) and cx.opset < 10:  # a float mask, whose value runtimes disagree on
        raise cx.unsupported("the mask output before opset 10")
    mask = np.ones(cx.shape(cx.x(0)), bool) if cx.used(1) else None
    return [cx.x(0), mask]


# --- constants ------------------------------------------------------------------------------------
@converter("Constant")
def constant(cx: Ctx) -> np.ndarray:
    if len(cx.attrs) != 1:
        raise cx.error("needs exactly one value attribute")
    (name, v), = cx.attrs.items()
    if name == "value":
        return numpy_helper.to_array(v)
    if name == "sparse_value":
        return sparse_to_dense(v)
    kinds = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64, "value_string": object, "value_strings": object}
    if name not in kinds:
        raise cx.error(f"unknown attribute '{name}'")
    return np.array(v, dtype=kinds[name])


def _shape_range(cx: Ctx, shape: Sequence[int]) -> np.ndarray:
    r = len(shape)
    start, end = int(cx.attr("start", 0)), cx.attr("end")
    return np.array(shape[start:r if end is None else int(end)], np.int64)


@converter("Shape")
def shape(cx: Ctx) -> np.ndarray:
    """Always a constant: every shape is static (start/end from opset 15)."""
    return _shape_range(cx, cx.shape(cx.x(0)))


@converter("Size")
def size(cx: Ctx) -> np.ndarray:
    return np.array(prod(cx.shape(cx.x(0))), np.int64)
