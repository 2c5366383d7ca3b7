"""The IR verifier: SSA form, definition before use, and every node's type re-inferred."""

from __future__ import annotations

from .graph import Graph
from .ops import UNARY_PARAMS, Op
from .shapes import ShapeError, infer


class VerifyError(AssertionError):
    """The IR is malformed: a bug in a pass or the frontend, never a user's fault."""


def verify(graph: Graph) -> Graph:
    """Check ``graph`` and return it unchanged; raise VerifyError naming the bad node."""
    defined = {v.name: v.type for v in graph.inputs}
    if len(defined) != len(graph.inputs):
        raise VerifyError(f"{graph.name}: duplicate input names")
    for node in graph.nodes:
        where = f"{graph.name}: node {node.name} ({node.op.value})"
        if node.name in defined:
            raise VerifyError(f"{where} redefines a value")
        missing = [i for i in node.inputs if i not in defined]
        if missing:
            raise VerifyError(f"{where} uses undefined {missing}")
        if node.op is Op.UNARY:
            absent = [p for p in UNARY_PARAMS.get(node.attrs["fn"], ()) if p not in node.attrs]
            if absent:
                raise VerifyError(f"{where} lacks parameters {absent}")
        if node.op is Op.KERNEL:
            body = verify(node.attrs["body"])
            if [v.type for v in body.inputs] != [defined[i] for i in node.inputs]:
                raise VerifyError(f"{where}: body inputs do not match the kernel's inputs")
        try:
            expect = infer(node.op, [defined[i] for i in node.inputs], node.attrs)
        except (ShapeError, KeyError) as e:
            raise VerifyError(f"{where}: {e}") from e
        if expect != node.type:
            raise VerifyError(f"{where} declares {node.type}, infers {expect}")
        defined[node.name] = node.type
    for name in graph.outputs:
        if name not in defined:
            raise VerifyError(f"{graph.name}: output {name} is never defined")
    return graph
