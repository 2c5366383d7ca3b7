"""One LLVM function for kernels that differ only in the tensors they touch.

A kernel's function reads every tensor through its pointer arguments, so two kernels whose
bodies are the same ops on the same shapes (with the same scalar immediates, packed operands,
chunking, output row stride and aliasing) compile to the same code. An unrolled recurrent op
repeats one step's kernels for every time step, and a transformer one layer's for every layer:
emitting each once cuts LLVM's time (most of the compile) by that factor.
"""

from __future__ import annotations

from collections.abc import Hashable
from enum import Enum
from typing import Any

import numpy as np

from ...ir import Graph, Node, Op


def _attr(value: Any) -> Hashable:
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_attr(v) for v in value)
    if isinstance(value, (Enum, str, int, float, bool, type(None))):
        return value
    raise TypeError(f"no fingerprint for {type(value).__name__}")


def fingerprint(node: Node, packed: set[str], chunks: int, ldc: int | None,
                noalias: bool) -> Hashable | None:
    """A key equal for kernels whose generated functions would be identical (values are
    numbered in body order, so names do not count); None if some attribute cannot be keyed."""
    body: Graph = node.attrs["body"]
    number = {v.name: i for i, v in enumerate(body.inputs)}
    parts: list[Hashable] = [tuple((v.type.shape, v.type.dtype) for v in body.inputs)]
    try:
        for n in body.nodes:
            attrs = tuple(sorted((k, _attr(v)) for k, v in n.attrs.items()))
            parts.append((n.op, tuple(number[i] for i in n.inputs), n.type.shape, n.type.dtype,
                          attrs))
            number[n.name] = len(number)
    except TypeError:
        return None
    inputs = frozenset(number[p] for p in packed)
    return (node.attrs["kind"], tuple(parts), tuple(number[o] for o in body.outputs), inputs,
            node.type.shape, node.type.dtype, chunks, ldc, noalias)


def shift_slices(node: Node) -> tuple[Node, list[int]]:
    """``node`` with the common first-axis start of the slices that read an input moved into
    that input's pointer, and the element offset per input. An elementwise kernel of one
    unrolled time step reads its rows of the sequence this way, so every step's kernel becomes
    the same function. Only float32 inputs that nothing but slices read are shifted (the
    pointers the kernel gets are float pointers)."""
    body: Graph = node.attrs["body"]
    offsets = [0] * len(body.inputs)
    if node.attrs["kind"] == "matmul":
        return _shift_columns(node, offsets)
    if node.attrs["kind"] != "elementwise":
        return node, offsets
    changed: dict[str, Node] = {}
    for pos, v in enumerate(body.inputs):
        users = body.users[v.name]
        if (v.type.dtype != "float32" or v.type.rank == 0 or not users
                or any(u.op is not Op.SLICE for u in users)):
            continue
        first = min(int(u.attrs["starts"][0]) for u in users)
        if first == 0:
            continue
        offsets[pos] = first * int(np.prod(v.type.shape[1:], dtype=np.int64))
        for u in users:
            starts = (int(u.attrs["starts"][0]) - first, *u.attrs["starts"][1:])
            changed[u.name] = Node(u.op, u.inputs, u.out, {**u.attrs, "starts": starts},
                                   u.origin)
    if not changed:
        return node, offsets
    shifted = body.replace(changed.get(n.name, n) for n in body.nodes)
    return Node(node.op, node.inputs, node.out, {**node.attrs, "body": shifted},
                node.origin), offsets


def _shift_columns(node: Node, offsets: list[int]) -> tuple[Node, list[int]]:
    """A matmul kernel whose A is a column slice (one group of a grouped conv) with the
    slice's first column moved into the pointer: every group's GEMM is the same function."""
    body: Graph = node.attrs["body"]
    sl = next((n for n in body.nodes if n.op is Op.SLICE), None)
    if sl is None or int(sl.attrs["starts"][-1]) == 0:
        return node, offsets
    offsets[[v.name for v in body.inputs].index(sl.inputs[0])] = int(sl.attrs["starts"][-1])
    moved = Node(sl.op, sl.inputs, sl.out, {**sl.attrs, "starts": (0,) * len(sl.attrs["starts"])},
                 sl.origin)
    shifted = body.replace(moved if n.name == sl.name else n for n in body.nodes)
    return Node(node.op, node.inputs, node.out, {**node.attrs, "body": shifted},
                node.origin), offsets
