"""The IR containers: immutable SSA values, nodes and graphs, and a builder for new graphs."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .ops import Op
from .shapes import infer
from .types import TensorType


@dataclass(frozen=True)
class Value:
    name: str
    type: TensorType


@dataclass(frozen=True, eq=False)
class Node:
    """One op producing one value. ``origin`` names the ONNX node it came from (for errors)."""

    op: Op
    inputs: tuple[str, ...]
    out: Value
    attrs: Mapping[str, Any] = field(default_factory=dict)
    origin: str = ""

    @property
    def name(self) -> str:
        return self.out.name

    @property
    def type(self) -> TensorType:
        return self.out.type


@dataclass(frozen=True, eq=False)
class Graph:
    """A program: typed inputs, nodes in execution order, and the names of its outputs."""

    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]

    @cached_property
    def values(self) -> dict[str, Value]:
        vals = {v.name: v for v in self.inputs}
        vals.update((n.name, n.out) for n in self.nodes)
        return vals

    @cached_property
    def producer(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def users(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {name: [] for name in self.values}
        for n in self.nodes:
            for i in dict.fromkeys(n.inputs):
                users[i].append(n)
        return users

    def type_of(self, name: str) -> TensorType:
        return self.values[name].type

    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if a CONST node produces it, else None."""
        n = self.producer.get(name)
        return n.attrs["value"] if n is not None and n.op is Op.CONST else None

    def replace(self, nodes: Iterable[Node], outputs: Sequence[str] | None = None) -> Graph:
        return Graph(self.name, self.inputs, tuple(nodes),
                     tuple(outputs) if outputs is not None else self.outputs)


class Builder:
    """Appends type-inferred nodes with fresh names; ``finish`` returns the Graph."""

    def __init__(self, name: str, inputs: Sequence[Value] = (), taken: Iterable[str] = ()) -> None:
        self.name = name
        self.inputs = list(inputs)
        self.nodes: list[Node] = []
        self.types: dict[str, TensorType] = {v.name: v.type for v in inputs}
        self._taken = set(self.types) | set(taken)
        self._counter = itertools.count()

    def fresh(self, hint: str) -> str:
        name = hint
        while name in self._taken:
            name = f"{hint}.{next(self._counter)}"
        self._taken.add(name)
        return name

    def add(self, op: Op, inputs: Sequence[str], origin: str = "", name: str | None = None,
            **attrs: Any) -> str:
        out_type = infer(op, [self.types[i] for i in inputs], attrs)
        out = Value(self.fresh(name or origin or op.value), out_type)
        self.append(Node(op, tuple(inputs), out, attrs, origin))
        return out.name

    def append(self, node: Node) -> None:
        self._taken.add(node.name)
        self.types[node.name] = node.type
        self.nodes.append(node)

    def const(self, value: np.ndarray, hint: str = "const", origin: str = "") -> str:
        value = np.ascontiguousarray(value).reshape(np.shape(value))  # 0-d stays 0-d
        return self.add(Op.CONST, (), origin=origin, name=hint, value=value)

    def finish(self, outputs: Sequence[str]) -> Graph:
        return Graph(self.name, tuple(self.inputs), tuple(self.nodes), tuple(outputs))
