"""Per-row divisions as one reciprocal per row: x / s -> x * (1 / s).

Softmax divides every element of a row by the row's sum, LayerNorm by the row's standard
deviation. A division costs several multiplies (vdivps is the slowest instruction of a row
kernel), so the row's divisor is inverted once and the elements multiplied, as onnxruntime's
MLAS does: within an ulp of the quotient. Only divisors whose range keeps 1 / s finite where
x / s is (a sum of exponentials is at least 1; a square root of a variance plus epsilon is 0
only where the numerator is 0 too) are rewritten. CPU only: the asic's matcher knows Softmax
by its division.
"""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Graph, Node, Op, Reduce, Unary
from .rewrite import Rewriter, rewrite


def _row_divisor(rw: Rewriter, name: str) -> bool:
    """A row's sum (softmax) or a square root (a row's standard deviation)."""
    node = rw.producer.get(name)
    if node is None:
        return False
    if node.op is Op.REDUCE:
        return node.attrs["fn"] is Reduce.SUM
    return node.op is Op.UNARY and node.attrs["fn"] is Unary.SQRT


def reciprocal_rows(rw: Rewriter, node: Node) -> str | None:
    """x [..., n] / s [..., 1] -> x * (1 / s) for a row divisor s."""
    if node.op is not Op.BINARY or node.attrs["fn"] is not Binary.DIV:
        return None
    x, s = node.inputs
    xs, ss = rw.type_of(x).shape, rw.type_of(s).shape
    if (node.type.dtype != "float32" or len(xs) != len(ss) or not xs or ss[-1] != 1
            or xs[-1] == 1 or xs[:-1] != ss[:-1] or not _row_divisor(rw, s)):
        return None
    one = rw.constant(np.ones((), np.float32), node.origin)
    inverse = rw.emit(Op.BINARY, (one, s), node.origin, fn=Binary.DIV)
    return rw.emit(Op.BINARY, (x, inverse), node.origin, fn=Binary.MUL)


def row_reciprocal(graph: Graph) -> Graph:
    """Rewrite per-row divisions (see the module docstring)."""
    return rewrite(graph, [reciprocal_rows])
