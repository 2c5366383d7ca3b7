"""Constant folding: evaluate, at compile time, every node whose inputs are all constants, and
every node whose value does not depend on its run-time inputs because they are empty."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Op
from ..ir.interp import evaluate
from .rewrite import Rewriter, rewrite


def fold_rule(rw: Rewriter, node: Node) -> str | None:
    """Replace a node of constant inputs by its value (the reference interpreter computes it)."""
    if node.op in (Op.CONST, Op.KERNEL) or not node.inputs:
        return None
    values = [rw.const(i) for i in node.inputs]
    if any(v is None for v in values):
        return None
    return rw.constant(evaluate(node, values), node.origin)


def fold_empty(rw: Rewriter, node: Node) -> str | None:
    """Zero-size tensors carry no values: an empty result is a constant, so is a node whose
    run-time inputs are all empty (a matmul over K = 0 is zeros, a sum over nothing 0), and
    a concat drops its empty inputs. No kernel is then ever generated for zero elements."""
    if node.op in (Op.CONST, Op.KERNEL) or not node.inputs:
        return None
    t = node.type
    if t.size == 0:
        return rw.constant(np.zeros(t.shape, t.dtype), node.origin)
    empty = [rw.type_of(i).size == 0 for i in node.inputs]
    if not any(empty):
        return None
    if node.op is Op.CONCAT:
        kept = [i for i, e in zip(node.inputs, empty) if not e]
        return kept[0] if len(kept) == 1 else rw.emit(Op.CONCAT, kept, node.origin, **node.attrs)
    values = [rw.const(i) for i in node.inputs]
    if any(v is None and not e for v, e in zip(values, empty)):
        return None
    zeros = [np.zeros(rw.type_of(i).shape, rw.type_of(i).dtype) if v is None else v
             for i, v in zip(node.inputs, values)]
    return rw.constant(evaluate(node, zeros), node.origin)


def fold_constants(graph: Graph) -> Graph:
    """Fold every constant subexpression and every node that empty tensors make constant."""
    return rewrite(graph, [fold_rule, fold_empty])
