"""Grouped pointwise convs as one GEMM per group, written side by side.

The frontend lowers a grouped conv to one batched matmul over the groups, between two
transposes ([M, G, K] -> [G, M, K] and back): two copies of the activations, and the batch norm
and activation after it run as a kernel of their own because the transpose stands between them
and the GEMM. For a pointwise conv (ShuffleNet's, ResNeXt's 1x1s) this pass writes it instead
as G matmuls, each reading its group's channels as a slice of the input (the GEMM reads it in
place with the wider row stride) and writing its columns of a concat (written in place by the
GEMMs), then distributes the per-channel affine ops and activations that follow over the
concat's parts, so they become each GEMM's epilogue (and fold-affine folds the scales into the
weights). CPU only: the asic's matcher knows the batched form.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Op
from .layout import merge_movement
from .rewrite import Rewriter, rewrite


def _swap_first_two(rw: Rewriter, name: str) -> Node | None:
    t = rw.source(name, Op.TRANSPOSE)
    if t is None or tuple(t.attrs["perm"]) != (1, 0, 2) or not rw.single_use(name):
        return None
    return t


def split_grouped_matmul(rw: Rewriter, node: Node) -> str | None:
    """transpose(matmul(transpose(x [M, G, K]), W [G, K, N])) [M, G, N] -> the G matmuls of
    slices of x, concatenated on the last axis and reshaped to [M, G, N]."""
    if node.op is not Op.TRANSPOSE or tuple(node.attrs["perm"]) != (1, 0, 2):
        return None
    mm = rw.source(node.inputs[0], Op.MATMUL)
    if mm is None or not rw.single_use(mm.name) or mm.type.dtype != "float32":
        return None
    t_in = _swap_first_two(rw, mm.inputs[0])
    w = rw.const(mm.inputs[1])
    if t_in is None or w is None or w.ndim != 3:
        return None
    m, groups, k = rw.type_of(t_in.inputs[0]).shape
    flat = rw.emit(Op.RESHAPE, (t_in.inputs[0],), node.origin, shape=(m, groups * k))
    parts = []
    for g in range(groups):
        a = rw.emit(Op.SLICE, (flat,), node.origin, starts=(0, g * k), steps=(1, 1),
                    counts=(m, k))
        parts.append(rw.emit(Op.MATMUL, (a, rw.constant(w[g], mm.origin)), mm.origin))
    cat = rw.emit(Op.CONCAT, parts, node.origin, axis=1)
    return rw.emit(Op.RESHAPE, (cat,), node.origin, shape=node.type.shape)


def _concat_parts(rw: Rewriter, name: str) -> tuple[Node, list[str]] | None:
    """The concat (on its last axis) that ``name`` is, or a reshape of keeping the last axis,
    when each part is a single-use GEMM result (or an epilogue op on one)."""
    if not rw.single_use(name):
        return None
    r = rw.source(name, Op.RESHAPE)
    inner = r.inputs[0] if r is not None else name
    if r is not None and not rw.single_use(inner):
        return None
    cat = rw.source(inner, Op.CONCAT)
    if cat is None or cat.attrs["axis"] != cat.type.rank - 1:
        return None
    if r is not None and rw.type_of(name).shape[-1:] != cat.type.shape[-1:]:
        return None
    for p in cat.inputs:
        producer = rw.producer.get(p)
        if producer is None or producer.op not in (Op.MATMUL, Op.UNARY, Op.BINARY) or (
                not rw.single_use(p)):
            return None
    return cat, list(cat.inputs)


def distribute_over_concat(rw: Rewriter, node: Node) -> str | None:
    """op(concat(parts)) -> concat(op(part) ...) for a unary op, or a binary op with a constant
    that varies along the concat's axis only (bias, batch-norm scale and shift): each part keeps
    its GEMM's epilogue."""
    if node.op not in (Op.UNARY, Op.BINARY) or node.type.dtype != "float32":
        return None
    found = next(((i, f) for i, x in enumerate(node.inputs)
                  if (f := _concat_parts(rw, x)) is not None), None)
    if found is None:
        return None
    at, (cat, parts) = found
    if node.type.shape != rw.type_of(node.inputs[at]).shape:  # the constant broadcasts it
        return None
    width = cat.type.shape[-1]
    other = None
    if node.op is Op.BINARY:
        other = rw.const(node.inputs[1 - at])
        if other is None or other.ndim > node.type.rank or any(d != 1 for d in other.shape[:-1]):
            return None
        if other.ndim and other.shape[-1] not in (1, width):
            return None
        other = other.reshape(-1)
    outs, offset = [], 0
    for p in parts:
        w = rw.type_of(p).shape[-1]
        if other is None:
            outs.append(rw.emit(Op.UNARY, (p,), node.origin, **node.attrs))
        else:
            piece = other if other.size == 1 else other[offset:offset + w]
            c = rw.constant(np.ascontiguousarray(piece), node.origin)
            ins = (p, c) if at == 0 else (c, p)
            outs.append(rw.emit(Op.BINARY, ins, node.origin, **node.attrs))
        offset += w
    new = rw.emit(Op.CONCAT, outs, node.origin, axis=cat.attrs["axis"])
    return rw.emit(Op.RESHAPE, (new,), node.origin, shape=node.type.shape)


def split_groups(graph: Graph) -> Graph:
    """Rewrite grouped pointwise convs (see the module docstring)."""
    return rewrite(graph, [merge_movement, split_grouped_matmul, distribute_over_concat])
