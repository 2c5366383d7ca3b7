"""A small constant matrix times a run-time one (Winograd's transforms) as a "lincomb" kernel:
the coefficients unrolled, X read in place or through the layout ops that make it, against
the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from sw2c.backends.cpu.lincomb import factor
from sw2c.driver import compile_graph
from sw2c.ir import Binary, Builder, Op, TensorType, Unary, Value, run
from sw2c.passes.pipeline import run_pipeline
from sw2c.passes.winograd import transforms


def _coefficients(m: int, k: int, seed: int) -> np.ndarray:
    """Mostly 0 and +-1 with a few others, one row and one column all zero."""
    rng = np.random.default_rng(seed)
    c = rng.choice([0, 0, 1, -1, 0.5, -2.25], (m, k)).astype(np.float32)
    c[m // 2] = 0
    c[:, k // 2] = 0
    return c


# (what X is made from: the input's shape and the ops between, K's shape)
CASES = {
    "in place, a short vector": ((7, 37), [], (5, 7)),
    "through a transpose of its last axis": ((37, 7), [(Op.TRANSPOSE, {"perm": (1, 0)})], (5, 7)),
    "runs of 4 across rows": ((3, 8), [(Op.RESHAPE, {"shape": (2, 12)})], (3, 2)),
    "runs of 10": ((4, 3, 10), [(Op.RESHAPE, {"shape": (4, 30)})], (6, 4)),
}


def _graph(case: str, seed: int = 0):
    shape, ops, (m, k) = CASES[case]
    rng = np.random.default_rng(seed)
    b = Builder("lincomb", [Value("x", TensorType(shape))])
    x = "x"
    for op, attrs in ops:
        x = b.add(op, [x], **attrs)
    n = b.finish([x]).type_of(x).shape[-1]
    y = b.add(Op.MATMUL, [b.const(_coefficients(m, k, seed), "K"), x])
    col = b.const(rng.normal(0, 0.5, (n,)).astype(np.float32), "col")
    row = b.const(rng.normal(1, 0.5, (m, 1)).astype(np.float32), "row")
    y = b.add(Op.UNARY, [b.add(Op.BINARY, [y, col], fn=Binary.ADD)], fn=Unary.TANH)
    return b.finish([b.add(Op.BINARY, [y, row], fn=Binary.MUL)])


@pytest.mark.parametrize("case", list(CASES))
def test_lincomb_matches_the_interpreter(monkeypatch, case):
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)
    graph = _graph(case)
    kernels = [n for n in run_pipeline(graph).nodes if n.op is Op.KERNEL]
    assert [k.attrs["kind"] for k in kernels] == ["lincomb"]  # X's layout ops and the epilogue
    x = np.random.default_rng(1).standard_normal(graph.inputs[0].type.shape).astype(np.float32)
    want = run(graph, {"x": x})[graph.outputs[0]]
    for threads in (1, 2, 3):
        got = compile_graph(graph, "lincomb", threads=threads).run({"x": x})[graph.outputs[0]]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{threads} threads")


def test_winograd_transform_is_exact_where_its_products_are():
    """F(4,3)'s input transform on integers: every product and sum is exact in float32, so
    the kernel's result is the float64 product, not merely close to it."""
    bt, _, _ = transforms(4)
    k = np.kron(bt, bt).astype(np.float32)
    b = Builder("bt", [Value("x", TensorType((36, 100)))])
    graph = b.finish([b.add(Op.MATMUL, [b.const(k, "K"), "x"])])
    x = np.random.default_rng(2).integers(-50, 50, (36, 100)).astype(np.float32)
    got = compile_graph(graph, "bt").run({"x": x})[graph.outputs[0]]
    np.testing.assert_array_equal(got, k.astype(np.float64) @ x.astype(np.float64))


def test_x_is_read_through_its_layout_ops_but_one_reshape():
    """Winograd's tiles of a reshaped tensor: the window and its transpose are read inside
    the kernel, the reshape before them stays outside (an alias), so X's runs stay vectors."""
    b = Builder("tiles", [Value("x", TensorType((36, 32)))])
    x = b.add(Op.RESHAPE, ["x"], shape=(1, 6, 6, 32))
    x = b.add(Op.WINDOW, [x], kernel=(3, 3), strides=(3, 3), dilations=(1, 1),
              pads=(0, 0, 0, 0), pad=0.0)  # [1, 2, 2, 3, 3, 32]
    x = b.add(Op.TRANSPOSE, [x], perm=(3, 4, 0, 1, 2, 5))
    x = b.add(Op.RESHAPE, [x], shape=(9, 128))
    graph = b.finish([b.add(Op.MATMUL, [b.const(_coefficients(4, 9, 3), "K"), x])])
    (kernel,) = [n for n in run_pipeline(graph).nodes if n.op is Op.KERNEL]
    ops = [n.op for n in kernel.attrs["body"].nodes]
    assert kernel.attrs["kind"] == "lincomb" and ops.count(Op.RESHAPE) == 1
    assert Op.WINDOW in ops and Op.TRANSPOSE in ops
    feed = np.random.default_rng(4).standard_normal((36, 32)).astype(np.float32)
    np.testing.assert_allclose(compile_graph(graph, "tiles").run({"x": feed})[graph.outputs[0]],
                               run(graph, {"x": feed})[graph.outputs[0]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m", [2, 4])
def test_kronecker_products_run_in_two_cheaper_stages(m):
    """Winograd's kron(B^T, B^T) and kron(A^T, A^T) factor exactly into stages of fewer terms
    where that pays (F(4,3)); a K that is no Kronecker product stays one stage."""
    bt, _, at = transforms(m)
    for k in (np.kron(bt, bt).astype(np.float32), np.kron(at, at).astype(np.float32)):
        stages = factor(k)
        product = stages[0].astype(np.float64)
        for s in stages[1:]:
            product = s.astype(np.float64) @ product
        np.testing.assert_array_equal(product, k)
        terms = sum(np.count_nonzero(s) for s in stages)
        assert terms <= np.count_nonzero(k) and (len(stages) == 2) == (terms < np.count_nonzero(k))
        if m == 4:
            assert len(stages) == 2
    assert len(factor(_coefficients(5, 7, 0))) == 1
