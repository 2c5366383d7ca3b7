"""A readable text form of the IR, one line per node, for dumps and ``sw2c inspect``."""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np

from .graph import Graph, Node
from .ops import Op


def _attr(value: Any) -> str:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_attr(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _const(value: np.ndarray) -> str:
    if value.size <= 4:
        return np.array2string(value.ravel(), separator=",", precision=4)
    return f"<{value.size} values>"


def format_node(node: Node, indent: str = "") -> str:
    head = f"{indent}%{node.name}: {node.type} = {node.op.value}"
    if node.op is Op.CONST:
        return f"{head} {_const(node.attrs['value'])}"
    args = ", ".join(f"%{i}" for i in node.inputs)
    if node.op is Op.KERNEL:
        body = node.attrs["body"]
        inner = format_graph(body, indent + "    ", header=False)
        return f"{head}.{node.attrs['kind']}({args}) {{\n{inner}\n{indent}}}"
    attrs = ", ".join(f"{k}={_attr(v)}" for k, v in node.attrs.items() if k != "fn")
    fn = f".{node.attrs['fn'].value}" if "fn" in node.attrs else ""
    return f"{head}{fn}({args})" + (f" {{{attrs}}}" if attrs else "")


def format_graph(graph: Graph, indent: str = "", header: bool = True) -> str:
    lines = []
    if header:
        ins = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
        lines.append(f"{indent}graph {graph.name}({ins}) {{")
    lines += [format_node(n, indent + ("  " if header else "")) for n in graph.nodes]
    outs = ", ".join(f"%{o}" for o in graph.outputs)
    lines.append(f"{indent}{'  ' if header else ''}return {outs}")
    if header:
        lines.append(f"{indent}}}")
    return "\n".join(lines)
