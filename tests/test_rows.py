"""Row kernels (passes/fuse_rows.py, backends/cpu/rows.py): which groups form, and that the
kernel computes what the interpreter does for widths around the vector length, broadcast
operands, NaN/inf rows, both thread counts."""

from __future__ import annotations

import numpy as np
import pytest
from sw2c.driver import compile_graph
from sw2c.ir import Binary, Builder, Op, Reduce, TensorType, Unary, Value, run
from sw2c.passes.pipeline import CPU_PIPELINE, run_pipeline


def softmax(width: int, rows: int = 3, bias: bool = False):
    """y = exp(x + b - max) / sum(...) over the last axis; b broadcasts over rows."""
    inputs = [Value("x", TensorType((2, rows, width)))]
    if bias:
        inputs.append(Value("m", TensorType((rows, width))))
    b = Builder("g", inputs)
    x = b.add(Op.BINARY, ["x", "m"], fn=Binary.ADD) if bias else "x"
    mx = b.add(Op.REDUCE, [x], fn=Reduce.MAX, axes=(2,))
    e = b.add(Op.UNARY, [b.add(Op.BINARY, [x, mx], fn=Binary.SUB)], fn=Unary.EXP)
    s = b.add(Op.REDUCE, [e], fn=Reduce.SUM, axes=(2,))
    return b.finish([b.add(Op.BINARY, [e, s], fn=Binary.DIV)])


def layer_norm(width: int):
    b = Builder("g", [Value("x", TensorType((4, width)))])
    mean = b.add(Op.REDUCE, ["x"], fn=Reduce.MEAN, axes=(1,))
    d = b.add(Op.BINARY, ["x", mean], fn=Binary.SUB)
    var = b.add(Op.REDUCE, [b.add(Op.BINARY, [d, d], fn=Binary.MUL)], fn=Reduce.MEAN, axes=(1,))
    eps = b.const(np.array(1e-5, np.float32))
    std = b.add(Op.UNARY, [b.add(Op.BINARY, [var, eps], fn=Binary.ADD)], fn=Unary.SQRT)
    return b.finish([b.add(Op.BINARY, [d, std], fn=Binary.DIV)])


def kinds(graph) -> list[str]:
    fused = run_pipeline(graph, CPU_PIPELINE)
    return [n.attrs["kind"] for n in fused.nodes if n.op is Op.KERNEL]


@pytest.mark.parametrize("width", [1, 5, 16, 17, 33, 100])
@pytest.mark.parametrize("threads", [1, 2])
def test_softmax_and_layer_norm_rows_match_the_interpreter(width, threads):
    rng = np.random.default_rng(width)
    for graph in (softmax(width, bias=True), layer_norm(width)):
        feeds = {v.name: rng.standard_normal(v.type.shape).astype(np.float32) * 4
                 for v in graph.inputs}
        want = run(graph, feeds)[graph.outputs[0]]
        got = compile_graph(graph, "t", threads=threads).run(feeds)[graph.outputs[0]]
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_one_row_kernel_each():
    assert kinds(softmax(40, bias=True)) == ["rows"]
    assert kinds(layer_norm(40)) == ["rows"]


def test_nan_and_inf_rows_propagate_like_the_interpreter():
    graph = softmax(20)
    x = np.random.default_rng(0).standard_normal((2, 3, 20)).astype(np.float32)
    x[0, 0, 3] = np.nan
    x[0, 1, :] = -np.inf  # a fully masked row: 0/0
    x[1, 2, 19] = np.inf
    want = run(graph, {"x": x})[graph.outputs[0]]
    got = compile_graph(graph, "t").run({"x": x})[graph.outputs[0]]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-6, atol=1e-7)


def test_a_reduction_read_outside_stays_its_own_kernel():
    """LayerNorm's mean is also a graph output: the row kernel takes what only it reads."""
    g = layer_norm(24)
    mean = next(n.name for n in g.nodes if n.op is Op.REDUCE)
    g2 = g.replace(g.nodes, [*g.outputs, mean])
    assert sorted(kinds(g2)) == ["reduce", "rows"]
    x = np.random.default_rng(1).standard_normal((4, 24)).astype(np.float32)
    want = run(g2, {"x": x})
    got = compile_graph(g2, "t").run({"x": x})
    for name in g2.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6)


def test_each_layer_norm_of_a_residual_stream_is_its_own_row_kernel():
    """x -> LN -> matmul -> + x -> LN: the residual add draws the second LN's nodes into the
    first's search; each reduction still gets the row kernel that ends at its own output."""
    rng = np.random.default_rng(2)
    b = Builder("g", [Value("x", TensorType((6, 32)))])

    def ln(x: str) -> str:
        mean = b.add(Op.REDUCE, [x], fn=Reduce.MEAN, axes=(1,))
        d = b.add(Op.BINARY, [x, mean], fn=Binary.SUB)
        var = b.add(Op.REDUCE, [b.add(Op.BINARY, [d, d], fn=Binary.MUL)], fn=Reduce.MEAN,
                    axes=(1,))
        eps = b.const(np.array(1e-5, np.float32))
        std = b.add(Op.UNARY, [b.add(Op.BINARY, [var, eps], fn=Binary.ADD)], fn=Unary.SQRT)
        return b.add(Op.BINARY, [d, std], fn=Binary.DIV)

    w = b.const(rng.standard_normal((32, 32)).astype(np.float32))
    h = b.add(Op.MATMUL, [ln("x"), w])
    g = b.finish([ln(b.add(Op.BINARY, [h, "x"], fn=Binary.ADD))])
    assert kinds(g).count("rows") == 2
    x = {"x": rng.standard_normal((6, 32)).astype(np.float32)}
    np.testing.assert_allclose(compile_graph(g, "t").run(x)[g.outputs[0]],
                               run(g, x)[g.outputs[0]], rtol=2e-5, atol=2e-5)
