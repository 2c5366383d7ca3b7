"""Operation counts of a graph: multiply-accumulates and floating-point operations."""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Graph, Op


def count_macs(graph: Graph) -> int:
    """MACs of every matmul, and of every sum over products (depthwise convs). A matmul by a
    constant left operand of its own graph (a "lincomb" kernel's body, fuse.py) costs its
    nonzero coefficients only: that kernel skips the zeros."""
    macs = 0
    for node in graph.nodes:
        if node.op is Op.KERNEL:
            macs += count_macs(node.attrs["body"])
        elif node.op is Op.MATMUL:
            a = graph.producer.get(node.inputs[0])
            if a is not None and a.op is Op.CONST and np.ndim(a.attrs["value"]) == 2:
                m = graph.type_of(node.inputs[0]).shape[0]
                macs += node.type.size // m * int(np.count_nonzero(a.attrs["value"]))
            else:
                macs += node.type.size * graph.type_of(node.inputs[0]).shape[-1]
        elif node.op is Op.REDUCE:
            src = graph.producer.get(node.inputs[0])
            if src is not None and src.op is Op.BINARY and src.attrs["fn"] is Binary.MUL:
                macs += int(np.prod(graph.type_of(node.inputs[0]).shape))
    return macs


def count_flops(graph: Graph) -> int:
    """2 per MAC plus one per element of every other elementwise op or reduction."""
    flops = 2 * count_macs(graph)
    for node in graph.nodes:
        if node.op is Op.KERNEL:
            flops += count_flops(node.attrs["body"]) - 2 * count_macs(node.attrs["body"])
        elif node.op in (Op.UNARY, Op.BINARY):
            flops += node.type.size
        elif node.op is Op.REDUCE:
            flops += graph.type_of(node.inputs[0]).size
    return flops
