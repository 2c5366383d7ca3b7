"""Fusion: group nodes into KERNEL nodes, each one generated function.

- a MATMUL by a small constant left operand K (Winograd's transforms) is a "lincomb" kernel:
  K's coefficients in the body, X read through the layout ops that only it reads, and the
  epilogue chain;
- any other MATMUL anchors a kernel with its im2col prologue ([transpose ->] window -> reshape), a
  transpose of its right-hand side's last two axes (read by the run-time packing), and an
  epilogue chain of elementwise ops (bias, scale, activation, residual add);
- a REDUCE over the last axis anchors a row kernel with the elementwise ops on its rows
  (softmax, LayerNorm; see fuse_rows.py);
- another REDUCE anchors a kernel with an elementwise/window prologue tree and an elementwise
  epilogue (pooling, depthwise conv);
- remaining elementwise ops fuse into trees of equal shape, absorbing transposes, slices, pads
  and windows that only they read;
- every other layout op becomes a kernel with the chain of transposes, slices, pads and windows that
  only it reads (q = transpose(slice(qkv))); RESHAPEs stay outside as free aliases.
"""

from __future__ import annotations

import numpy as np

from ..ir import Builder, Graph, Node, Op, Value, keeps_last_axis
from ..ir.ops import ELEMENTWISE
from .dead_code import eliminate_dead_code
from .fuse_rows import is_row_reduce, row_group

# ops that read their input at remapped coordinates (a gather: at run-time indices)
MOVEMENT = frozenset({Op.TRANSPOSE, Op.SLICE, Op.PAD, Op.WINDOW, Op.GATHER})
REMAP = frozenset({Op.TRANSPOSE, Op.SLICE, Op.PAD})  # one input, read at remapped coordinates


class _Groups:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.outputs = set(graph.outputs)
        self.group_of: dict[str, int] = {}
        self.groups: list[list[Node]] = []
        self.kinds: dict[int, str] = {}  # a kernel kind its ops alone do not tell

    def single(self, name: str) -> bool:
        return len(self.graph.users[name]) == 1 and name not in self.outputs

    def free(self, name: str, op: frozenset[Op] | Op) -> Node | None:
        """The ungrouped producer of ``name`` if its op is in ``op`` and only one node reads it."""
        node = self.graph.producer.get(name)
        ops = op if isinstance(op, frozenset) else frozenset({op})
        if node is None or node.op not in ops or node.name in self.group_of:
            return None
        return node if self.single(name) else None

    def add(self, members: list[Node], kind: str | None = None) -> None:
        for n in members:
            self.group_of[n.name] = len(self.groups)
        if kind is not None:
            self.kinds[len(self.groups)] = kind
        self.groups.append(members)

    def epilogue(self, start: Node, fits) -> list[Node]:
        """The chain of single-use elementwise nodes after ``start`` that ``fits`` accepts."""
        chain, cur = [], start
        while self.single(cur.name):
            user = self.graph.users[cur.name][0]
            if user.op not in ELEMENTWISE or user.name in self.group_of or not fits(user, cur):
                break
            chain.append(user)
            cur = user
        return chain

    def prologue(self, root: Node, shape: tuple[int, ...]) -> list[Node]:
        """Producers of ``root``'s inputs (recursively) that only the tree reads: elementwise
        ops of ``shape`` and movement ops (transpose, slice, pad, window) of that shape; past
        a reshape, transpose, slice or pad that keeps the last axis, the producers of its
        input's shape too (Winograd's output tiles put in place and cropped, then the conv's
        bias and activation: one kernel, vectors along the channels throughout)."""
        found, stack = [], [(i, shape) for i in root.inputs]
        while stack:
            name, want = stack.pop()
            p = self.free(name, ELEMENTWISE | MOVEMENT | {Op.RESHAPE})
            if p is None or p.type.shape != want or p in found:
                continue
            inner = _last_axis_source(self.graph, p)
            if p.op is Op.RESHAPE and (
                    inner is None or self.free(p.inputs[0], ELEMENTWISE | MOVEMENT) is None):
                continue  # a free alias: the kernel reads its input as it is
            found.append(p)
            stack.extend((i, inner or want) for i in p.inputs)
        return found


def _last_axis_source(graph: Graph, node: Node) -> tuple[int, ...] | None:
    """The shape of a reshape's, transpose's, slice's or pad's input where the op keeps its
    last axis (ir.keeps_last_axis), else None."""
    if node.op not in REMAP | {Op.RESHAPE}:
        return None
    src = graph.type_of(node.inputs[0]).shape
    return src if keeps_last_axis(node.op, node.attrs, src, node.type.shape) else None


def _matmul_epilogue_fits(g: _Groups, mm: Node):
    out = mm.type.shape
    flat_b = g.graph.type_of(mm.inputs[1]).rank == 2

    def fits(user: Node, cur: Node) -> bool:
        if user.type.shape != out or user.op not in (Op.UNARY, Op.BINARY) or (
                user.type.dtype != mm.type.dtype):  # the GEMM epilogue computes floats
            return False
        for other in user.inputs:
            if other == cur.name:
                continue
            shape = g.graph.type_of(other).shape
            if len(shape) < len(out):
                shape = (1,) * (len(out) - len(shape)) + shape
            if g.graph.type_of(other).size == 1:
                continue
            lead = shape[:-1]
            if not flat_b or shape[-1] not in (1, out[-1]):
                return False
            if any(d != 1 for d in lead) and lead != out[:-1]:
                return False
        return True

    return fits


def _same_shape(user: Node, cur: Node) -> bool:
    return user.type.shape == cur.type.shape


def _reduce_epilogue_fits(red: Node):
    """Elementwise users of the reduction's shape whose elements are as wide as its own: the
    reduce kernel accumulates in the output buffer and the epilogue overwrites it in place,
    element by element in order, so a wider element (an int64 index) would clobber
    accumulators not yet read, and a narrower one (a bool mask: max-pool >= t) leaves a buffer
    too small for the accumulators (heap corruption; fuzz seed 53474)."""
    width = np.dtype(red.type.dtype).itemsize

    def fits(user: Node, cur: Node) -> bool:
        return _same_shape(user, cur) and np.dtype(user.type.dtype).itemsize == width

    return fits


def _swaps_last_two(t: Node) -> bool:
    """A transpose that swaps the last two axes only (B^T of a matmul operand)."""
    r = len(t.attrs["perm"])
    return r >= 2 and tuple(t.attrs["perm"]) == (*range(r - 2), r - 1, r - 2)


def _columns_of(s: Node, mm: Node, graph: Graph) -> bool:
    """A slice of a matmul's left operand that the GEMM reads in place: a run of the last
    axis of a float32 matrix (every other axis whole), against a 2-D right-hand side."""
    src = graph.type_of(s.inputs[0]).shape
    return (graph.type_of(mm.inputs[1]).rank == 2 and s.type.dtype == "float32"
            and all(st == 1 for st in s.attrs["steps"])
            and s.type.shape[:-1] == src[:-1] and len(src) >= 2)


# nonzero coefficients of a constant left operand that a "lincomb" kernel unrolls
MAX_LINCOMB_TERMS = 1024


def _lincomb(mm: Node, graph: Graph) -> bool:
    """A float32 product K @ X of a small constant matrix K and a run-time matrix X
    (Winograd's transforms): a kernel of its own that unrolls K's nonzero coefficients as
    immediates (backends/cpu/lincomb.py), K a constant of its body."""
    k = graph.const(mm.inputs[0])
    return (k is not None and k.ndim == 2 and mm.type.dtype == "float32"
            and graph.type_of(mm.inputs[1]).rank == 2 and graph.const(mm.inputs[1]) is None
            and 0 < np.count_nonzero(k) <= MAX_LINCOMB_TERMS)


def _group(graph: Graph) -> _Groups:
    g = _Groups(graph)
    for node in graph.nodes:
        if node.op is Op.MATMUL and _lincomb(node, graph):
            # X read through the layout ops that only it reads (Winograd's tiles: a window,
            # its transpose, a reshape): the tiles are never written out
            # (a reshape only as the last of them: elsewhere it would hide where X's columns
            # come from, and the kernel would read them an element at a time)
            prologue: list[Node] = []
            ops, name = REMAP | {Op.WINDOW, Op.RESHAPE}, node.inputs[1]
            while (p := g.free(name, ops)) is not None:
                prologue.insert(0, p)
                ops, name = REMAP | {Op.WINDOW}, p.inputs[0]
            g.add(prologue + [node] + g.epilogue(node, _matmul_epilogue_fits(g, node)),
                  "lincomb")
        elif node.op is Op.MATMUL:
            members = []
            r = g.free(node.inputs[0], Op.RESHAPE)
            w = g.free(r.inputs[0], Op.WINDOW) if r is not None else None
            if w is not None:
                members = [w, r]
                t = g.free(w.inputs[0], Op.TRANSPOSE)  # im2col reads through a layout change
                if t is not None:
                    members.insert(0, t)
            sliced = g.free(node.inputs[0], Op.SLICE) if w is None else None
            if sliced is not None and _columns_of(sliced, node, graph):
                members = [sliced]  # the GEMM reads A in place, with the wider row stride
            bt = g.free(node.inputs[1], Op.TRANSPOSE)
            if bt is not None and _swaps_last_two(bt) and node.type.dtype == "float32":
                members.append(bt)  # the run-time packing of B reads through it (x @ K^T)
            g.add(members + [node] + g.epilogue(node, _matmul_epilogue_fits(g, node)))
    for node in graph.nodes:  # softmax, LayerNorm: one kernel per row (fuse_rows.py)
        if is_row_reduce(node, graph) and node.name not in g.group_of:
            members = row_group(graph, node, set(g.group_of))
            if members is not None:
                g.add(members, "rows")
    for node in graph.nodes:
        if node.op is Op.REDUCE and node.name not in g.group_of:
            pro = g.prologue(node, g.graph.type_of(node.inputs[0]).shape)
            g.add(pro + [node] + g.epilogue(node, _reduce_epilogue_fits(node)))
    for node in reversed(graph.nodes):
        if node.op in ELEMENTWISE and node.name not in g.group_of:
            g.add(g.prologue(node, node.type.shape) + [node])
    for node in reversed(graph.nodes):  # a chain of movement ops reads through in one kernel
        if node.op in MOVEMENT and node.name not in g.group_of:
            chain = [node]
            # a window too (Winograd's tiles, then their transpose): one copy, not two
            while (p := g.free(chain[0].inputs[0], REMAP | {Op.WINDOW})) is not None:
                chain.insert(0, p)
            g.add(chain)
    for node in graph.nodes:
        if node.op is Op.CONCAT and node.name not in g.group_of:
            g.add([node])
    return g


def _kernel(graph: Graph, members: list[Node], order: dict[str, int],
            kind: str | None = None) -> Node:
    """The KERNEL node of a group; ``order``: each node's position in ``graph``."""
    members = sorted(members, key=lambda n: order[n.name])
    root = members[-1]  # every other member feeds it, so it comes last
    inside = {n.name for n in members}
    reads = [i for n in members for i in n.inputs if i not in inside]
    # scalar constants become immediates, where only elementwise ops read them; so does a
    # lincomb's coefficient matrix, which only its matmul reads
    scalars = [i for i in dict.fromkeys(reads) if (c := graph.const(i)) is not None and (
        c.size == 1 and all(n.op in ELEMENTWISE for n in members if i in n.inputs)
        or kind == "lincomb" and all(n.op is Op.MATMUL and n.inputs[0] == i
                                     for n in members if i in n.inputs))]
    inputs = [i for i in dict.fromkeys(reads) if i not in scalars]
    body = Builder(root.name, [Value(i, graph.type_of(i)) for i in inputs])
    for s in scalars:
        body.append(graph.producer[s])
    for n in members:
        body.append(n)
    kinds = {n.op for n in members}
    kind = kind or ("matmul" if Op.MATMUL in kinds else "reduce" if Op.REDUCE in kinds
            else "concat" if Op.CONCAT in kinds else "elementwise")
    return Node(Op.KERNEL, tuple(inputs), root.out, {"body": body.finish([root.name]),
                                                      "kind": kind}, root.origin)


def fuse(graph: Graph) -> Graph:
    """Group the graph into kernels (see the module docstring)."""
    g = _group(graph)
    order = {n.name: j for j, n in enumerate(graph.nodes)}
    roots = {max(m, key=lambda n: order[n.name]).name: i for i, m in enumerate(g.groups)}
    nodes = []
    for node in graph.nodes:
        if node.name in roots:
            i = roots[node.name]
            nodes.append(_kernel(graph, g.groups[i], order, g.kinds.get(i)))
        elif node.name not in g.group_of:
            nodes.append(node)
    return eliminate_dead_code(graph.replace(nodes))
