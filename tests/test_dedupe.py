"""Kernels that are the same code on other tensors share one LLVM function
(backends/cpu/dedupe.py); kernels that differ in anything that changes the code do not."""

from __future__ import annotations

import numpy as np
from sw2c.backends.cpu.codegen import generate
from sw2c.driver import compile_graph
from sw2c.ir import Binary, Builder, Graph, Op, TensorType, Unary, Value
from sw2c.ir.interp import run as run_graph


def kernel_functions(graph: Graph) -> int:
    from sw2c.passes.pipeline import run_pipeline

    module = generate(run_pipeline(graph), "m", 1).module
    return len([f for f in module.functions if not f.is_declaration and f.name.count(".") == 1])


def check(graph: Graph, feeds: dict[str, np.ndarray]) -> None:
    got = compile_graph(graph, "t", threads=1).run(feeds)
    want = run_graph(graph, feeds)
    for name in graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def rows_graph(scales: list[float], alphas: list[float]) -> Graph:
    """Per row i of p [n, 8]: h = leaky_relu(h + p[i] * scales[i], alphas[i]), each step its
    own kernel (h is also an output, so no step fuses into the next)."""
    n = len(scales)
    b = Builder("g", [Value("x", TensorType((1, 8))), Value("p", TensorType((n, 8)))])
    h, outs = "x", []
    for i, (s, a) in enumerate(zip(scales, alphas)):
        row = b.add(Op.SLICE, ["p"], starts=(i, 0), steps=(1, 1), counts=(1, 8))
        scaled = b.add(Op.BINARY, [row, b.const(np.array(s, np.float32))], fn=Binary.MUL)
        h = b.add(Op.UNARY, [b.add(Op.BINARY, [h, scaled], fn=Binary.ADD)],
                  fn=Unary.LEAKY_RELU, alpha=a)
        outs.append(h)
    return b.finish(outs)


def feeds(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((1, 8)).astype(np.float32),
            "p": rng.standard_normal((n, 8)).astype(np.float32)}


def test_same_code_on_other_rows_is_one_function():
    graph = rows_graph([2.0] * 6, [0.1] * 6)
    assert kernel_functions(graph) == 1
    check(graph, feeds(6))


def test_different_scalars_or_params_are_different_functions():
    graph = rows_graph([2.0, 3.0, 2.0, 2.0], [0.1, 0.1, 0.2, 0.1])
    assert kernel_functions(graph) == 3
    check(graph, feeds(4))
