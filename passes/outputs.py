"""Give every graph output a buffer of its own.

Outputs are written straight into the caller's arrays. An output that is only an alias (a
reshape) of a graph input, a constant, or a value another output already owns gets a copy
kernel instead, so no two outputs share memory and nothing writes into an input.
"""

from __future__ import annotations

from ..ir import Builder, Graph, Node, Op, Value


def storage_root(graph: Graph, name: str) -> str:
    """The value whose buffer ``name`` lives in: follow RESHAPE aliases back to their source."""
    node = graph.producer.get(name)
    while node is not None and node.op is Op.RESHAPE:
        name = node.inputs[0]
        node = graph.producer.get(name)
    return name


def _copy_kernel(graph: Graph, out: Value, source: str) -> Node:
    src = Value(source, graph.type_of(source))
    body = Builder(out.name, [src])
    body.add(Op.RESHAPE, [source], name=out.name, shape=out.type.shape)
    return Node(Op.KERNEL, (source,), out, {"body": body.finish([out.name]), "kind": "elementwise"},
                "copy")


def materialize_outputs(graph: Graph) -> Graph:
    """Insert copy kernels so each output's storage is a kernel output owned by it alone."""
    inputs = {v.name for v in graph.inputs}
    # a kernel's own output keeps its buffer; outputs that only alias it get the copies
    claimed = {name for name in graph.outputs
               if (n := graph.producer.get(name)) is not None and n.op is Op.KERNEL}
    copies: dict[str, str] = {}  # output name -> the value it copies
    renamed: dict[str, Node] = {}
    for name in graph.outputs:
        root = storage_root(graph, name)
        node = graph.producer.get(root)
        if name in claimed:
            continue
        if root not in inputs and node is not None and node.op is Op.KERNEL and root not in claimed:
            claimed.add(root)
            continue
        if name in inputs:
            continue  # an input listed as an output is returned by the runtime itself
        prod = graph.producer[name]
        if prod.op is Op.CONST:  # keep the value under a new name, copy it into the output
            const = Node(Op.CONST, (), Value(f"{name}.value", prod.type), prod.attrs, prod.origin)
            renamed[name] = const
            copies[name] = const.name
        else:
            copies[name] = prod.inputs[0] if prod.op is Op.RESHAPE else root
    if not copies:
        return graph
    nodes = []
    for node in graph.nodes:
        if node.name in renamed:
            nodes.append(renamed[node.name])
        if node.name in copies:
            nodes.append(_copy_kernel(graph.replace(nodes), node.out, copies[node.name]))
        elif node.name not in renamed:
            nodes.append(node)
    return graph.replace(nodes)
