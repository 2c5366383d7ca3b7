"""Affine folding: constant scales and shifts (BatchNorm, Gemm alpha/beta, biases) move into the
matmul weights or merge into one per-channel add, so a conv+BN+bias costs one matmul + one add.
"""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Graph, Node, Op, Reduce
from .fold_constants import fold_rule
from .rewrite import Rewriter, rewrite


def _binary(node: Node, fn: Binary) -> bool:
    return node.op is Op.BINARY and node.attrs["fn"] is fn


def _split(rw: Rewriter, node: Node) -> tuple[str, np.ndarray] | None:
    """(variable operand, constant operand) of a binary node, if exactly one is constant."""
    a, b = node.inputs
    ca, cb = rw.const(a), rw.const(b)
    if (ca is None) == (cb is None):
        return None
    return (b, ca) if ca is not None else (a, cb)


def canonicalize(rw: Rewriter, node: Node) -> str | None:
    """x - c -> x + (-c) and, on floats, x / c -> x * (1/c) where c is a power of two, so only
    add and mul remain to fold. Other divisions stay: x * (1/c) can differ from x / c in the
    last bit, and a rounding after it (quantization) would then move by a whole step.
    (Integer division truncates: it stays; integer add and mul wrap, so they fold as freely
    as floats.)"""
    if node.op is not Op.BINARY or rw.const(node.inputs[1]) is None:
        return None
    c = rw.const(node.inputs[1])
    if _binary(node, Binary.SUB) and rw.const(node.inputs[0]) is None:
        return rw.emit(Op.BINARY, (node.inputs[0], rw.constant(-c)), node.origin, fn=Binary.ADD)
    if (_binary(node, Binary.DIV) and rw.const(node.inputs[0]) is None
            and c.dtype.kind == "f" and _exact_reciprocal(c)):
        inv = (np.float32(1) / c).astype(c.dtype)
        return rw.emit(Op.BINARY, (node.inputs[0], rw.constant(inv)), node.origin, fn=Binary.MUL)
    return None


def _exact_reciprocal(c: np.ndarray) -> bool:
    """Every element a power of two whose reciprocal is a normal number of c's type."""
    mantissa, exponent = np.frexp(c)
    info = np.finfo(c.dtype)
    return bool(np.all((np.abs(mantissa) == 0.5) & (np.abs(1 - exponent) <= info.maxexp - 2)))


def reassociate(rw: Rewriter, node: Node) -> str | None:
    """(x + c1) + c2 -> x + (c1 + c2); (x * c1) * c2 -> x * (c1 * c2);
    (x + c1) * c2 -> x * c2 + c1 * c2 (the scale can then reach a matmul)."""
    if not (_binary(node, Binary.ADD) or _binary(node, Binary.MUL)):
        return None
    outer = _split(rw, node)
    if outer is None:
        return None
    x, c2 = outer
    inner = rw.producer.get(x)
    if inner is None or not rw.single_use(x) or inner.op is not Op.BINARY:
        return None
    parts = _split(rw, inner)
    if parts is None or inner.type.shape != node.type.shape:
        return None
    y, c1 = parts
    fn = node.attrs["fn"]
    if inner.attrs["fn"] is fn:
        merged = c1 + c2 if fn is Binary.ADD else c1 * c2
        return rw.emit(Op.BINARY, (y, rw.constant(merged)), node.origin, fn=fn)
    if fn is Binary.MUL and inner.attrs["fn"] is Binary.ADD:
        scaled = rw.emit(Op.BINARY, (y, rw.constant(c2)), node.origin, fn=Binary.MUL)
        return rw.emit(Op.BINARY, (scaled, rw.constant(c1 * c2)), node.origin, fn=Binary.ADD)
    return None


def _column_vector(c: np.ndarray, n: int, rank: int) -> np.ndarray | None:
    """c as an [n] vector if it varies only along the last of ``rank`` axes, else None."""
    # every other axis must be 1: a [C,1,1] channel scale whose C happens to equal n varies
    # along axis -3, not along the matmul's columns (fuzz seeds 3177, 9767)
    if c.ndim > rank or any(d != 1 for d in c.shape[:-1]) or (c.ndim and c.shape[-1] not in (1, n)):
        return None
    return np.broadcast_to(c.reshape(-1), (n,))


def scale_into_matmul(rw: Rewriter, node: Node) -> str | None:
    """matmul(x, W) * c -> matmul(x, W * c) for a per-output-channel (or scalar) constant c."""
    if not _binary(node, Binary.MUL) or (parts := _split(rw, node)) is None:
        return None
    x, c = parts
    mm = rw.source(x, Op.MATMUL)
    if mm is None or not rw.single_use(x) or node.type.shape != mm.type.shape:
        return None
    w = rw.const(mm.inputs[1])
    col = _column_vector(c, w.shape[-1], node.type.rank) if w is not None else None
    if col is None:
        return None
    return rw.emit(Op.MATMUL, (mm.inputs[0], rw.constant(w * col)), mm.origin)


def scale_into_weighted_sum(rw: Rewriter, node: Node) -> str | None:
    """sum(x * W) * c -> sum(x * (W * c)) for a per-channel c, when the channel (last) axis is
    not summed: a depthwise conv absorbs its BatchNorm scale like a matmul does."""
    if not _binary(node, Binary.MUL) or (parts := _split(rw, node)) is None:
        return None
    x, c = parts
    red = rw.source(x, Op.REDUCE)
    if (red is None or red.attrs["fn"] is not Reduce.SUM or not rw.single_use(x)
            or node.type.shape != red.type.shape or red.type.rank - 1 in red.attrs["axes"]):
        return None
    prod = rw.source(red.inputs[0], Op.BINARY)
    if prod is None or prod.attrs["fn"] is not Binary.MUL or not rw.single_use(prod.name):
        return None
    inner = _split(rw, prod)
    col = _column_vector(c, node.type.shape[-1], node.type.rank)
    if inner is None or col is None:
        return None
    y, w = inner
    scaled = rw.emit(Op.BINARY, (y, rw.constant((w * col).astype(w.dtype))), prod.origin,
                     fn=Binary.MUL)
    return rw.emit(Op.REDUCE, (scaled,), red.origin, **red.attrs)


def fold_affine(graph: Graph) -> Graph:
    """Fold constant scales/shifts into matmul weights and merge chained constant adds."""
    return rewrite(graph, [fold_rule, canonicalize, reassociate, scale_into_matmul,
                           scale_into_weighted_sum])
