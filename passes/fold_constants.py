"""Constant folding: evaluate, at compile time, every node whose inputs are all constants."""

from __future__ import annotations

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


def fold_constants(graph: Graph) -> Graph:
    """Fold every constant subexpression."""
    return rewrite(graph, [fold_rule])
