"""A flatten read through a transpose folds into the next layer's weights.

A CNN exported from NCHW frameworks flattens its feature map in C, H, W order; inside sw2c the
map is channels-last, so the importer leaves ``matmul(reshape(transpose(x)), W)``: a whole
transpose kernel before the classifier. Reordering the rows of the constant ``W`` at compile
time reads ``x`` in its own order instead: ``matmul(reshape(x), W[order])``.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Op
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
    # position i of the transposed rows holds x's row order[i]
    rows = np.arange(w.shape[0]).reshape(shape[1:])
    order = np.transpose(rows, [p - 1 for p in t.attrs["perm"][1:]]).reshape(-1)
    w_x = np.empty_like(w)
    w_x[order] = w
    flat_x = rw.emit(Op.RESHAPE, (x,), flat.origin, shape=flat.type.shape)
    return rw.emit(Op.MATMUL, (flat_x, rw.constant(w_x)), node.origin)


def fold_flatten_order(graph: Graph) -> Graph:
    return rewrite(graph, [permute_weight_rows])
