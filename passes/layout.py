"""Layout choice: convs and pools run channels-last (NHWC) while ONNX speaks NCHW.

The frontend wraps each conv/pool in a transpose pair; this pass sinks transposes (and reshapes)
down through elementwise ops, reductions, concats, pads and slices until they meet their
inverse and cancel, so only the transposes at the model's edges remain. A transpose that moves
only size-1 axes is a free reshape.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Op
from .fold_constants import fold_rule
from .rewrite import Rewriter, rewrite


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def merge_movement(rw: Rewriter, node: Node) -> str | None:
    """transpose(transpose(x)) -> one transpose; reshape(reshape(x)) -> one; identities vanish."""
    x = node.inputs[0] if node.inputs else ""
    if node.op is Op.TRANSPOSE:
        perm = tuple(node.attrs["perm"])
        inner = rw.source(x, Op.TRANSPOSE)
        if inner is not None:
            perm = tuple(inner.attrs["perm"][p] for p in perm)
            x = inner.inputs[0]
        if perm == tuple(range(len(perm))):
            return x
        kept = [p for p in perm if rw.type_of(x).shape[p] != 1]
        if kept == sorted(kept):  # only unit axes move: same memory order
            return rw.emit(Op.RESHAPE, (x,), node.origin, shape=node.type.shape)
        return rw.emit(Op.TRANSPOSE, (x,), node.origin, perm=perm) if inner else None
    if node.op is Op.RESHAPE:
        inner = rw.source(x, Op.RESHAPE)
        if inner is not None:
            x = inner.inputs[0]
        if rw.type_of(x).shape == node.type.shape:
            return x
        return rw.emit(Op.RESHAPE, (x,), node.origin, shape=node.type.shape) if inner else None
    return None


def _const_operand(rw: Rewriter, name: str, rank: int, perm: tuple[int, ...]) -> str | None:
    """A constant broadcasting into a transposed value, re-laid for the untransposed one."""
    value = rw.const(name)
    if value is None or value.ndim > rank:
        return None
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    return rw.constant(np.transpose(full, _inverse(perm)))


def _unit_relayout(rw: Rewriter, node: Node, name: str, perm: tuple[int, ...]) -> str | None:
    """A value broadcasting into a transposed value, re-laid for the untransposed one by a free
    reshape when the transpose would move only its unit axes (a per-channel [N, C, 1, 1]
    statistic or gate against an NHWC tensor)."""
    shape, rank = rw.type_of(name).shape, len(perm)
    if len(shape) > rank:
        return None
    full = (1,) * (rank - len(shape)) + tuple(shape)
    inv = _inverse(perm)
    kept = [i for i in inv if full[i] != 1]
    if kept != sorted(kept):
        return None
    return rw.emit(Op.RESHAPE, (name,), node.origin, shape=tuple(full[i] for i in inv))


def sink_transpose(rw: Rewriter, node: Node) -> str | None:
    """op(transpose(x), ...) -> transpose(op'(x, ...)) for layout-agnostic ops."""
    if node.op not in (Op.UNARY, Op.BINARY, Op.REDUCE, Op.CONCAT, Op.PAD, Op.SLICE):
        return None
    moved = [rw.source(i, Op.TRANSPOSE) for i in node.inputs]
    first = next((t for t in moved if t is not None), None)
    if first is None:
        return None
    perm = tuple(first.attrs["perm"])
    rank = len(perm)
    if node.type.rank != rank:
        return None
    ins = []
    for name, t in zip(node.inputs, moved):
        if t is not None and tuple(t.attrs["perm"]) == perm:
            ins.append(t.inputs[0])
        elif node.op is Op.BINARY and (c := _const_operand(rw, name, rank, perm)) is not None:
            ins.append(c)
        elif node.op is Op.BINARY and (r := _unit_relayout(rw, node, name, perm)) is not None:
            ins.append(r)
        else:
            return None
    attrs = dict(node.attrs)
    if node.op is Op.REDUCE:
        attrs["axes"] = tuple(sorted(perm[a] for a in node.attrs["axes"]))
    elif node.op is Op.CONCAT:
        attrs["axis"] = perm[node.attrs["axis"]]
    elif node.op is Op.PAD:
        inv = _inverse(perm)
        p = node.attrs["pads"]
        attrs["pads"] = tuple(p[i] for i in inv) + tuple(p[rank + i] for i in inv)
    elif node.op is Op.SLICE:
        inv = _inverse(perm)
        for key in ("starts", "steps", "counts"):
            attrs[key] = tuple(node.attrs[key][i] for i in inv)
    inner = rw.emit(node.op, ins, node.origin, **attrs)
    return rw.emit(Op.TRANSPOSE, (inner,), node.origin, perm=perm)


def sink_transpose_matmul(rw: Rewriter, node: Node) -> str | None:
    """matmul(transpose(x), W) with a constant 2-D ``W`` -> transpose(x contracted with W along
    the axis the transpose moved last), so a per-axis constant map (a bilinear Resize) applied
    to an NHWC tensor through an NCHW view needs no transpose: the contraction of a middle
    axis is ``W^T @ x`` with the axes after it flattened into columns."""
    if node.op is not Op.MATMUL or node.type.dtype != "float32":
        return None
    t = rw.source(node.inputs[0], Op.TRANSPOSE)
    w = rw.const(node.inputs[1])
    if t is None or w is None or w.ndim != 2:
        return None
    perm = tuple(t.attrs["perm"])
    x = t.inputs[0]
    xs = rw.type_of(x).shape
    axis, n = perm[-1], w.shape[1]
    if axis == len(xs) - 1:
        inner = rw.emit(Op.MATMUL, (x, node.inputs[1]), node.origin)
    else:
        rows, cols = int(np.prod(xs[:axis])), int(np.prod(xs[axis + 1:]))
        flat = rw.emit(Op.RESHAPE, (x,), node.origin,
                       shape=(rows, xs[axis], cols) if rows > 1 else (xs[axis], cols))
        left = rw.constant(np.ascontiguousarray(w.T), node.origin)
        mm = rw.emit(Op.MATMUL, (left, flat), node.origin)
        shape = (*xs[:axis], n, *xs[axis + 1:])
        inner = rw.emit(Op.RESHAPE, (mm,), node.origin, shape=shape)
    return rw.emit(Op.TRANSPOSE, (inner,), node.origin, perm=perm)


def _reshape_groups(src: tuple[int, ...], dst: tuple[int, ...]
                    ) -> list[tuple[list[int], list[int]]] | None:
    """The non-unit axes of ``src`` and ``dst`` split into runs of equal product: the axes a
    row-major reshape merges or splits together (None for a zero-size tensor)."""
    sa = [i for i, d in enumerate(src) if d != 1]
    da = [j for j, d in enumerate(dst) if d != 1]
    if 0 in src:
        return None
    groups, i, j = [], 0, 0
    while i < len(sa) and j < len(da):
        gs, gd = [sa[i]], [da[j]]
        ps, pd = src[sa[i]], dst[da[j]]
        i, j = i + 1, j + 1
        while ps != pd:
            if ps < pd:
                gs.append(sa[i])
                ps, i = ps * src[sa[i]], i + 1
            else:
                gd.append(da[j])
                pd, j = pd * dst[da[j]], j + 1
        groups.append((gs, gd))
    return groups


def sink_transpose_reshape(rw: Rewriter, node: Node) -> str | None:
    """reshape(transpose(x)) -> transpose(reshape(x)) when every run of axes the reshape merges
    or splits is a run of consecutive axes of ``x`` in order, so the transposes of NCHW ops
    built from reshapes (a nearest upsample: unit axes, a broadcast, a merge) keep sinking.
    Each unit axis of the result follows the axis before it, where a broadcast widens it."""
    if node.op is not Op.RESHAPE:
        return None
    t = rw.source(node.inputs[0], Op.TRANSPOSE)
    if t is None:
        return None
    perm = tuple(t.attrs["perm"])
    src, dst = rw.type_of(node.inputs[0]).shape, node.type.shape
    groups = _reshape_groups(src, dst)
    if not groups:
        return None
    x = t.inputs[0]
    inner = _inner_order(perm, groups, rw.type_of(x).shape)
    if inner is None or inner == perm:  # nothing would be left to sink
        return None
    if inner != tuple(range(len(perm))):  # a channel shuffle: the one real move, innermost
        x = rw.emit(Op.TRANSPOSE, (x,), node.origin, perm=inner)
        perm = tuple(_inverse(inner)[p] for p in perm)
    follows: dict[int, list[int]] = {-1: []}  # non-unit dst axis -> the unit axes after it
    last = -1
    for j, d in enumerate(dst):
        if d != 1:
            last = j
            follows[j] = []
        else:
            follows[last].append(j)
    order = list(follows[-1])  # dst axes in the new reshape's order
    for _, gd in sorted(groups, key=lambda g: perm[g[0][0]]):
        for j in gd:
            order += [j, *follows[j]]
    shaped = rw.emit(Op.RESHAPE, (x,), node.origin, shape=tuple(dst[j] for j in order))
    return rw.emit(Op.TRANSPOSE, (shaped,), node.origin, perm=_inverse(tuple(order)))


def _inner_order(perm: tuple[int, ...], groups: list[tuple[list[int], list[int]]],
                 shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The transpose of x that makes each run of axes the reshape merges or splits a run of
    consecutive axes of x in order (identity when they already are); None when a run is not
    made of consecutive axes, or the reorder would move more than x's innermost axes (the
    channels of a channel shuffle; anything else stays one transpose where it is)."""
    order = list(range(len(perm)))
    for gs, _ in groups:
        axes = [perm[i] for i in gs]
        run = sorted(axes)
        if run != list(range(run[0], run[0] + len(run))):
            return None
        for position, axis in zip(run, axes):
            order[position] = axis
    moved = [i for i, a in enumerate(order) if a != i]
    if moved and any(shape[i] != 1 for i in range(moved[0], len(shape)) if i not in moved):
        return None
    return tuple(order)


def sink_slice_reshape(rw: Rewriter, node: Node) -> str | None:
    """reshape(slice(x)) -> slice(reshape(x)) when each sliced axis is split by the reshape
    into whole rows of its inner axes: q, k, v sliced from one projection and split into
    heads then become slices a transpose kernel reads through, with no copy of their own."""
    if node.op is not Op.RESHAPE:
        return None
    sl = rw.source(node.inputs[0], Op.SLICE)
    if sl is None or any(st != 1 for st in sl.attrs["steps"]):
        return None
    x = sl.inputs[0]
    xs, src, dst = rw.type_of(x).shape, rw.type_of(node.inputs[0]).shape, node.type.shape
    groups = _reshape_groups(src, dst)
    sliced = [a for a, (d, n) in enumerate(zip(xs, src)) if d != n]
    if not groups or not sliced:
        return None
    new_dst, starts = list(dst), [0] * len(dst)
    for a in sliced:
        group = next((gd for gs, gd in groups if gs == [a]), None)
        if group is None:
            return None
        inner = int(np.prod([dst[j] for j in group[1:]], dtype=np.int64))
        start = sl.attrs["starts"][a]
        if start % inner or xs[a] % inner:
            return None
        new_dst[group[0]], starts[group[0]] = xs[a] // inner, start // inner
    flat = rw.emit(Op.RESHAPE, (x,), node.origin, shape=tuple(new_dst))
    return rw.emit(Op.SLICE, (flat,), node.origin, starts=tuple(starts),
                   steps=(1,) * len(dst), counts=tuple(dst))


def _keeps_last_axis(rw: Rewriter, reshape: Node) -> bool:
    src = rw.type_of(reshape.inputs[0]).shape
    dst = reshape.type.shape
    return bool(src) and bool(dst) and src[-1] == dst[-1]


def sink_reshape(rw: Rewriter, node: Node) -> str | None:
    """unary(reshape(x)) -> reshape(unary(x)); likewise a binary op with a per-channel or
    scalar constant when the reshape keeps the last axis, so epilogues reach their kernel."""
    if node.op not in (Op.UNARY, Op.BINARY):
        return None
    shaped = [rw.source(i, Op.RESHAPE) for i in node.inputs]
    first = next((r for r in shaped if r is not None), None)
    if first is None or rw.type_of(first.inputs[0]).size != node.type.size:
        return None
    src_shape = rw.type_of(first.inputs[0]).shape
    ins = []
    for name, r in zip(node.inputs, shaped):
        if r is not None and rw.type_of(r.inputs[0]).shape == src_shape:
            ins.append(r.inputs[0])
            continue
        value = rw.const(name)
        if value is None or not _keeps_last_axis(rw, first):
            return None
        if value.size == 1:
            ins.append(rw.constant(value.reshape(())))
        elif value.size == src_shape[-1] and value.shape[-1] == src_shape[-1]:
            ins.append(rw.constant(value.reshape(src_shape[-1])))
        else:
            return None
    inner = rw.emit(node.op, ins, node.origin, **node.attrs)
    return rw.emit(Op.RESHAPE, (inner,), node.origin, shape=node.type.shape)


def trivial_window(rw: Rewriter, node: Node) -> str | None:
    """A 1x1, stride-1, unpadded window (a pointwise conv's patches) is the input reshaped."""
    if node.op is not Op.WINDOW:
        return None
    at = node.attrs
    if any(k != 1 for k in at["kernel"]) or any(s != 1 for s in at["strides"]) or any(at["pads"]):
        return None
    return rw.emit(Op.RESHAPE, node.inputs, node.origin, shape=node.type.shape)


def choose_layout(graph: Graph, through_matmuls: bool = True) -> Graph:
    """Cancel the conv/pool transposes across the graph (see the module docstring). With
    ``through_matmuls`` False transposes do not sink through matmuls or reshapes: the asic's
    matcher knows convs and matmuls by the shapes the frontend gives them, with the constant
    on the right."""
    deep = ([sink_transpose_matmul, sink_transpose_reshape, sink_slice_reshape]
            if through_matmuls else [])
    return rewrite(graph, [fold_rule, trivial_window, merge_movement, sink_transpose, *deep,
                          sink_reshape])
