"""A tiny rewrite driver: apply local rules node by node until nothing changes.

A rule looks at one node (inputs already rewritten) and either returns None (no match) or the
name of a value that replaces the node's output, after emitting any new nodes through the
Rewriter. Graph outputs keep their names: a replaced output gets a free RESHAPE alias.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..ir import Builder, Graph, Node, Op, TensorType
from .dead_code import eliminate_dead_code

Rule = Callable[["Rewriter", Node], "str | None"]


class Rewriter:
    """What a rule may use: the types/constants of values defined so far, and ``emit``."""

    def __init__(self, graph: Graph) -> None:
        self.builder = Builder(graph.name, graph.inputs, taken=graph.values)
        self.producer: dict[str, Node] = {}
        self.users = {k: len(v) for k, v in graph.users.items()}
        self.outputs = set(graph.outputs)

    def type_of(self, name: str) -> TensorType:
        return self.builder.types[name]

    def const(self, name: str) -> np.ndarray | None:
        node = self.producer.get(name)
        return node.attrs["value"] if node is not None and node.op is Op.CONST else None

    def source(self, name: str, op: Op) -> Node | None:
        """The node producing ``name`` if it is an ``op``, else None."""
        node = self.producer.get(name)
        return node if node is not None and node.op is op else None

    def single_use(self, name: str) -> bool:
        """True when only one node reads ``name`` and it is not a graph output."""
        return self.users.get(name, 0) == 1 and name not in self.outputs

    def emit(self, op: Op, inputs: Sequence[str], origin: str = "", **attrs: Any) -> str:
        name = self.builder.add(op, inputs, origin=origin, **attrs)
        self.producer[name] = self.builder.nodes[-1]
        return name

    def constant(self, value: np.ndarray, origin: str = "") -> str:
        return self.emit(Op.CONST, (), origin, value=np.ascontiguousarray(value))

    def keep(self, node: Node) -> None:
        self.builder.append(node)
        self.producer[node.name] = node


def _rename(node: Node, subst: dict[str, str]) -> Node:
    if not any(i in subst for i in node.inputs):
        return node
    return Node(node.op, tuple(subst.get(i, i) for i in node.inputs), node.out, node.attrs,
                node.origin)


def rewrite_once(graph: Graph, rules: Sequence[Rule]) -> tuple[Graph, bool]:
    rw = Rewriter(graph)
    subst: dict[str, str] = {}
    for node in graph.nodes:
        node = _rename(node, subst)
        for rule in rules:
            new = rule(rw, node)
            if new is not None:
                subst[node.name] = new
                break
        else:
            rw.keep(node)
    outputs = []
    for name in graph.outputs:
        new = subst.get(name, name)
        if new != name:  # keep the public name with a free alias
            source = rw.producer.get(new)
            rw.keep(Node(Op.RESHAPE, (new,), graph.values[name],
                         {"shape": graph.type_of(name).shape}, source.origin if source else ""))
        outputs.append(name)
    return rw.builder.finish(outputs), bool(subst)


def rewrite(graph: Graph, rules: Sequence[Rule], max_rounds: int = 50) -> Graph:
    """Apply ``rules`` to a fixed point (bounded), removing dead nodes after each round."""
    for _ in range(max_rounds):
        graph, changed = rewrite_once(graph, rules)
        graph = eliminate_dead_code(graph)
        if not changed:
            break
    return graph
