"""Operation counts of a graph: multiply-accumulates and floating-point operations."""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Graph, Op


def count_macs(graph: Graph) -> int:
    """MACs of every matmul, and of every sum over products (depthwise convs)."""
    macs = 0
    for node in graph.nodes:
        if node.op is Op.KERNEL:
            macs += count_macs(node.attrs["body"])
        elif node.op is Op.MATMUL:
            k = graph.type_of(node.inputs[0]).shape[-1]
            macs += node.type.size * k
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
