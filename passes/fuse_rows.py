"""Row kernels: a reduction over the last axis together with the elementwise ops around it
that work on the same rows (softmax, LayerNorm, RMSNorm, log-softmax), as one kernel.

Such a group computes, for each row, its reductions one after another and then the output,
so the row stays in cache and no intermediate (the max, exp(x - max), x - mean) is written
out. The group is found by growing from the reduction through producers and users whose shape
is the row shape or the reduced shape, then pruned until exactly one member (the output, of
the row shape) is read from outside it.
"""

from __future__ import annotations

from ..ir import Graph, Node, Op
from ..ir.ops import ELEMENTWISE, Reduce

ROW_REDUCE = frozenset({Reduce.SUM, Reduce.MAX, Reduce.MEAN})


def is_row_reduce(node: Node, graph: Graph) -> bool:
    """A float32 sum/max/mean over the last axis only, keeping it as size 1."""
    if node.op is not Op.REDUCE or node.type.dtype != "float32":
        return False
    rank = graph.type_of(node.inputs[0]).rank
    return node.attrs["fn"] in ROW_REDUCE and tuple(node.attrs["axes"]) == (rank - 1,)


def row_group(graph: Graph, red: Node, taken: set[str]) -> list[Node] | None:
    """The members of the row kernel around ``red`` (in graph order), or None when there is
    no elementwise output of the row shape to make one."""
    rows = graph.type_of(red.inputs[0]).shape
    shapes = {rows, red.type.shape}

    def fits(n: Node | None) -> bool:
        return (n is not None and n.name not in taken and n.type.shape in shapes and
                (n.op in ELEMENTWISE or (is_row_reduce(n, graph) and
                                         graph.type_of(n.inputs[0]).shape == rows)))

    members = {red.name: red}
    stack = [red]
    while stack:  # grow through producers and users on the same rows
        n = stack.pop()
        near = [graph.producer.get(i) for i in n.inputs] + graph.users[n.name]
        for m in near:
            if fits(m) and m.name not in members:
                members[m.name] = m
                stack.append(m)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    while True:  # prune until one member is read from outside: the kernel's output
        exits = [n for n in members.values() if n.name in graph.outputs or
                 any(u.name not in members for u in graph.users[n.name])]
        # the output is the last exit that depends on red (a residual stream may have drawn
        # in later rows' groups, which their own reductions will claim)
        mine = _descendants(red, members, graph)
        exits_of_red = [n for n in exits if n.name in mine]
        if not exits_of_red:
            return None
        root = max(exits_of_red, key=lambda n: order[n.name])
        keep = _ancestors(root, members)
        keep = {k: v for k, v in keep.items() if v is root or v not in exits}
        if keep.keys() == members.keys():
            break
        members = keep
    if root.type.shape != rows or not any(n.op is Op.REDUCE for n in members.values()):
        return None
    return sorted(members.values(), key=lambda n: order[n.name])


def _descendants(red: Node, members: dict[str, Node], graph: Graph) -> set[str]:
    """``red`` and the members that depend on it through members."""
    found, stack = {red.name}, [red]
    while stack:
        for u in graph.users[stack.pop().name]:
            if u.name in members and u.name not in found:
                found.add(u.name)
                stack.append(u)
    return found


def _ancestors(root: Node, members: dict[str, Node]) -> dict[str, Node]:
    """``root`` and the members it depends on through members."""
    found, stack = {root.name: root}, [root]
    while stack:
        for i in stack.pop().inputs:
            if i in members and i not in found:
                found[i] = members[i]
                stack.append(members[i])
    return found
