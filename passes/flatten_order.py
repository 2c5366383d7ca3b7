"""A flatten read through a transpose folds into the next layer's weights.

A CNN exported from NCHW frameworks flattens its feature map in C, H, W order; inside sw2c the
map is channels-last, so the importer leaves ``matmul(reshape(transpose(x)), W)``: a whole
transpose kernel before the classifier. Reordering the rows of the constant ``W`` at compile
time reads ``x`` in its own order instead: ``matmul(reshape(x), W[order])``.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Op
from ..ir.buffers import empty
from .rewrite import Rewriter, rewrite


def permute_weight_rows(rw: Rewriter, node: Node) -> str | None:
    """matmul(reshape(transpose(x, perm), [B, K]), W) -> matmul(reshape(x, [B, K]), W') with
    perm keeping the batch axis first and W' the rows of W in x's memory order."""
    if node.op is not Op.MATMUL:
        return None
    flat_name, w_name = node.inputs
    w = rw.const(w_name)
    flat = rw.source(flat_name, Op.RESHAPE)
    t = rw.source(flat.inputs[0], Op.TRANSPOSE) if flat is not None else None
    if w is None or w.ndim != 2 or t is None or t.attrs["perm"][0] != 0 \
            or not (rw.single_use(flat_name) and rw.single_use(flat.inputs[0])):
        return None
    x = t.inputs[0]
    shape = rw.type_of(x).shape
    if flat.type.shape != (shape[0], w.shape[0]):
        return None
    # W's rows are indexed by the transposed axes: undo the transpose on them, keeping each
    # row whole (a copy of rows, where a scatter by row index took 1 s on VGG-19's fc6)
    perm = [p - 1 for p in t.attrs["perm"][1:]]
    w_t = w.reshape(*(shape[1 + p] for p in perm), w.shape[1])
    rows = w_t.transpose(*np.argsort(perm), len(perm))
    w_x = empty(w.shape, w.dtype)  # pages in place (ir/buffers.py)
    np.copyto(w_x.reshape(rows.shape), rows)
    flat_x = rw.emit(Op.RESHAPE, (x,), flat.origin, shape=flat.type.shape)
    return rw.emit(Op.MATMUL, (flat_x, rw.constant(w_x)), node.origin)


def fold_flatten_order(graph: Graph) -> Graph:
    return rewrite(graph, [permute_weight_rows])
