"""A tiny rewrite driver: apply local rules node by node until nothing changes.

A rule looks at one node (inputs already rewritten) and either returns None (no match) or the
name of a value that replaces the node's output, after emitting any new nodes through the
Rewriter. Graph outputs keep their names: a replaced output gets a free RESHAPE alias.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import CompileError, blame
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
        # reshaped: np.ascontiguousarray makes a 0-d value (a folded scalar index) 1-d
        value = np.ascontiguousarray(value).reshape(np.shape(value))
        return self.emit(Op.CONST, (), origin, value=value)

    def keep(self, node: Node) -> None:
        self.builder.append(node)
        self.producer[node.name] = node


def _rename(node: Node, subst: dict[str, str]) -> Node:
    if not any(i in subst for i in node.inputs):
        return node
    return Node(node.op, tuple(subst.get(i, i) for i in node.inputs), node.out, node.attrs,
                node.origin)


def _is_alias(node: Node, graph: Graph) -> bool:
    return node.op is Op.RESHAPE and node.name in graph.outputs


def _same_alias(node: Node, new: str, graph: Graph) -> bool:
    """True when replacing graph output ``node`` by ``new`` would only re-create ``node``: the
    output keeps its name through a RESHAPE alias of ``new``, which is what ``node`` already is.
    Counting that as a change would keep the driver from ever reaching its fixed point."""
    return _is_alias(node, graph) and node.inputs == (new,)


def rewrite_once(graph: Graph, rules: Sequence[Rule]) -> tuple[Graph, bool]:
    rw = Rewriter(graph)
    subst: dict[str, str] = {}
    for node in graph.nodes:
        node = _rename(node, subst)
        if _is_alias(node, graph) and rw.const(node.inputs[0]) is not None:
            new = None  # a constant output's alias: folding it would only make it again
        else:
            with blame(f"node '{node.origin or node.name}'"):
                new = next((n for n in (rule(rw, node) for rule in rules) if n is not None),
                           None)
        if new is None or _same_alias(node, new, graph):
            rw.keep(node)
        else:
            subst[node.name] = new
    outputs = []
    for name in graph.outputs:
        new = subst.get(name, name)
        if new != name:  # keep the public name with a free alias
            source = rw.producer.get(new)
            if source is not None and source.op is Op.RESHAPE:  # alias its input: one reshape
                new = source.inputs[0]
            rw.keep(Node(Op.RESHAPE, (new,), graph.values[name],
                         {"shape": graph.type_of(name).shape}, source.origin if source else ""))
        outputs.append(name)
    return rw.builder.finish(outputs), bool(subst)


def rewrite(graph: Graph, rules: Sequence[Rule], max_rounds: int = 50) -> Graph:
    """Apply ``rules`` to a fixed point, removing dead nodes after each round. Rules only
    shrink or reorder the graph, so a fixed point comes in a few rounds; not reaching one in
    ``max_rounds`` means two rules undo each other (a bug), reported rather than ignored."""
    for _ in range(max_rounds):
        graph, changed = rewrite_once(graph, rules)
        graph = eliminate_dead_code(graph)
        if not changed:
            return graph
    names = ", ".join(getattr(r, "__name__", "?") for r in rules)
    raise CompileError(f"graph '{graph.name}': the rewrite rules ({names}) did not reach a fixed "
                       f"point in {max_rounds} rounds -- a bug in sw2c; please report it with "
                       "the model")
