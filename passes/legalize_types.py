"""Element types the cpu kernels compute on: float16 is stored as float16 and computed in
float32; a matmul of any type but float32 becomes a multiply and a sum.

numpy (and so the ONNX reference) computes each float16 op in float32 and rounds the result to
float16; an op on float16 here becomes casts to float32, the op, and a cast back, which is
numpy's result bit for bit for + - * / and sqrt, and within an ulp for the functions the
interpreter rounds from float64. Movement ops, gathers and selects keep float16 bits as they
are. The register-blocked GEMM is a float32 kernel; a matmul of ints or float64 is
``sum_k a[..., m, k, 1] * b[..., 1, k, n]``, which the reduce kernel computes in the operands'
own type (ints wrap, as numpy's matmul does), with the product fused into it.
"""

from __future__ import annotations

from ..ir import Binary, Graph, Node, Op, Reduce
from .rewrite import Rewriter, rewrite

COMPUTE = frozenset({Op.UNARY, Op.BINARY, Op.MATMUL, Op.REDUCE, Op.WINDOW})
HALF, WIDE = "float16", "float32"


def widen_half(rw: Rewriter, node: Node) -> str | None:
    """A compute op on float16 operands, done in float32 and rounded back."""
    if node.op not in COMPUTE or all(rw.type_of(i).dtype != HALF for i in node.inputs):
        return None
    wide = [rw.emit(Op.CAST, [i], node.origin, to=WIDE) if rw.type_of(i).dtype == HALF else i
            for i in node.inputs]
    out = rw.emit(node.op, wide, node.origin, **node.attrs)
    return rw.emit(Op.CAST, [out], node.origin, to=HALF) if node.type.dtype == HALF else out


def cast_through_float32(rw: Rewriter, node: Node) -> str | None:
    """float16 converts to and from float32 only (one instruction each way; the other
    conversions would be library calls): any other cast goes through float32, which holds
    every float16 exactly and rounds every integer that float16 can hold exactly."""
    if node.op is not Op.CAST:
        return None
    src, dst = rw.type_of(node.inputs[0]).dtype, node.attrs["to"]
    if HALF not in (src, dst) or WIDE in (src, dst) or src == dst:
        return None
    mid = rw.emit(Op.CAST, [node.inputs[0]], node.origin, to=WIDE)
    return rw.emit(Op.CAST, [mid], node.origin, to=dst)


def matmul_as_sum(rw: Rewriter, node: Node) -> str | None:
    """A matmul the GEMM cannot take, as a fused multiply and sum over k."""
    if node.op is not Op.MATMUL or node.type.dtype in (WIDE, HALF):  # HALF: widen_half
        return None
    a, b = node.inputs
    sa, sb = rw.type_of(a).shape, rw.type_of(b).shape
    a3 = rw.emit(Op.RESHAPE, [a], node.origin, shape=(*sa, 1))  # [..., m, k, 1]
    b3 = rw.emit(Op.RESHAPE, [b], node.origin, shape=(*sb[:-2], 1, *sb[-2:]))  # [..., 1, k, n]
    prod = rw.emit(Op.BINARY, [a3, b3], node.origin, fn=Binary.MUL)  # [..., m, k, n]
    rank = rw.type_of(prod).rank
    total = rw.emit(Op.REDUCE, [prod], node.origin, fn=Reduce.SUM, axes=(rank - 2,))
    return rw.emit(Op.RESHAPE, [total], node.origin, shape=node.type.shape)


def legalize_types(graph: Graph) -> Graph:
    """Rewrite float16 compute into float32 and non-float32 matmuls into sums."""
    return rewrite(graph, [widen_half, matmul_as_sum, cast_through_float32])
