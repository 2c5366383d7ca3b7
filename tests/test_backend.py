"""The CPU backend against the reference interpreter, op by op and fused: every IR op kind, every
broadcast pattern, every matmul epilogue, outputs that alias inputs and constants."""

from __future__ import annotations

import numpy as np
import pytest
from sw2c.driver import compile_graph
from sw2c.ir import Binary, Builder, Graph, Op, Reduce, TensorType, Unary, Value, run
from sw2c.ir.ops import UNARY_PARAMS
from sw2c.ir.shapes import binary_takes
from sw2c.tests.ir_models import residual_cnn

PARAMS = {"alpha": 0.2, "beta": 0.4, "lo": -0.5, "hi": 0.7, "lambd": 0.5, "bias": 0.2}


@pytest.fixture(autouse=True)
def split_every_kernel(monkeypatch):
    """These graphs are tiny: make the 2-thread runs split every kernel anyway."""
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)


def check(graph: Graph, seed: int = 0, positive: bool = False, rtol: float = 1e-5) -> None:
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        feeds[v.name] = random_tensor(rng, v.type, positive)
    expect = run(graph, feeds)
    for threads in (1, 2):
        got = compile_graph(graph, "t", threads=threads).run(feeds)
        for name in graph.outputs:
            np.testing.assert_allclose(got[name], expect[name], rtol=rtol, atol=rtol,
                                       err_msg=f"{name} with {threads} thread(s)")


def random_tensor(rng: np.random.Generator, t: TensorType, positive: bool = False) -> np.ndarray:
    if t.dtype == "bool":
        return rng.integers(0, 2, t.shape).astype(bool)
    if t.dtype != "float32":  # small ints, zeros included (x / 0 is defined as 0)
        return rng.integers(1 if positive else -50, 50, t.shape).astype(t.dtype)
    x = rng.standard_normal(t.shape).astype(np.float32)
    return np.abs(x) + 0.1 if positive else x


def builder(*shapes: tuple[int, ...], dtype: str = "float32") -> Builder:
    return Builder("g", [Value(f"x{i}", TensorType(s, dtype)) for i, s in enumerate(shapes)])


FLOAT_BINARY = [f for f in Binary if binary_takes(f, "float32")]
INT_BINARY = [f for f in Binary if binary_takes(f, "int64")]
TYPED_BINARY = ([(f, "int64") for f in INT_BINARY] + [(f, "int32") for f in INT_BINARY]
                + [(f, "bool") for f in Binary if binary_takes(f, "bool")])


@pytest.mark.parametrize("fn,dtype", [(Unary.NOT, "bool")] + [
    (f, d) for f in (Unary.RELU, Unary.NEG, Unary.ABS) for d in ("int64", "int32")])
def test_typed_unary(fn, dtype):
    b = builder((3, 37), dtype=dtype)
    check(b.finish([b.add(Op.UNARY, ["x0"], fn=fn)]))


@pytest.mark.parametrize("fn,dtype", TYPED_BINARY)
@pytest.mark.parametrize("shapes", [((2, 3, 20), (20,)), ((2, 1, 4), (3, 1))])
def test_typed_binary(fn, dtype, shapes):
    b = builder(*shapes, dtype=dtype)
    check(b.finish([b.add(Op.BINARY, ["x0", "x1"], fn=fn)]))


@pytest.mark.parametrize("src", ["float32", "int64", "int32", "bool"])
@pytest.mark.parametrize("dst", ["float32", "int64", "int32", "bool"])
def test_cast(src, dst):
    b = builder((4, 33), dtype=src)
    check(b.finish([b.add(Op.CAST, ["x0"], to=dst)]))


def test_cast_saturates_and_maps_nan_to_zero():
    b = builder((1, 6))
    graph = b.finish([b.add(Op.CAST, ["x0"], to="int32"), b.add(Op.CAST, ["x0"], to="bool")])
    x = np.array([[np.nan, np.inf, -np.inf, 3e9, -2.5, 0.0]], np.float32)
    got = compile_graph(graph, "t").run({"x0": x})
    want = run(graph, {"x0": x})
    for name in graph.outputs:
        np.testing.assert_array_equal(got[name], want[name])
    assert list(want[graph.outputs[0]][0]) == [0, 2**31 - 1, -2**31, 2**31 - 1, -2, 0]


def test_where_and_comparisons_feed_float_math():
    b = Builder("g", [Value("c", TensorType((3, 1), "bool")), Value("x", TensorType((3, 40))),
                      Value("y", TensorType((40,)))])
    w = b.add(Op.WHERE, ["c", "x", "y"])
    gt = b.add(Op.BINARY, [w, "y"], fn=Binary.GT)
    check(b.finish([b.add(Op.BINARY, [w, w], fn=Binary.MUL), gt]))


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_gather_clamps_run_time_indices(axis, dtype):
    b = Builder("g", [Value("d", TensorType((7, 9))), Value("i", TensorType((2, 5), dtype))])
    y = b.add(Op.GATHER, ["d", "i"], axis=axis)
    graph = b.finish([b.add(Op.UNARY, [y], fn=Unary.RELU)])
    rng = np.random.default_rng(0)
    feeds = {"d": rng.standard_normal((7, 9)).astype(np.float32),
             "i": np.array([[0, -1, 3, 100, -100], [6, 2, -7, 8, 1]], dtype)}
    want = run(graph, feeds)
    for threads in (1, 2):
        got = compile_graph(graph, "t", threads=threads).run(feeds)
        np.testing.assert_array_equal(got[graph.outputs[0]], want[graph.outputs[0]])


@pytest.mark.parametrize("fn", [f for f in Unary if f is not Unary.NOT])
def test_unary(fn):
    b = builder((3, 37))
    params = {p: PARAMS[p] for p in UNARY_PARAMS.get(fn, ())}
    y = b.add(Op.UNARY, ["x0"], fn=fn, **params)
    check(b.finish([y]), positive=fn in (Unary.LOG, Unary.SQRT))


@pytest.mark.parametrize("fn", FLOAT_BINARY)
@pytest.mark.parametrize("shapes", [((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((5,), (5,)),
                                    ((1, 3, 1), (2, 1, 6))])
def test_binary_broadcast(fn, shapes):
    b = builder(*shapes)
    y = b.add(Op.BINARY, ["x0", "x1"], fn=fn)
    check(b.finish([y]), positive=fn is Binary.POW, rtol=1e-5)


@pytest.mark.parametrize("perm", [(1, 0, 2), (2, 0, 1), (0, 2, 1)])
def test_transpose(perm):
    b = builder((3, 4, 5))
    check(b.finish([b.add(Op.TRANSPOSE, ["x0"], perm=perm)]))


def test_slice_with_negative_steps():
    b = builder((6, 7))
    y = b.add(Op.SLICE, ["x0"], starts=(5, 1), steps=(-2, 3), counts=(3, 2))
    check(b.finish([y]))


def test_pad_then_relu():
    b = builder((2, 3))
    y = b.add(Op.PAD, ["x0"], pads=(1, 0, 2, 3), value=-1.5)
    check(b.finish([b.add(Op.UNARY, [y], fn=Unary.RELU)]))


@pytest.mark.parametrize("fn", list(Reduce))
@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 2), (0, 1, 2)])
def test_reduce(fn, axes):
    b = builder((3, 4, 5))
    check(b.finish([b.add(Op.REDUCE, ["x0"], fn=fn, axes=axes)]), rtol=1e-5)


@pytest.mark.parametrize("kernel,strides,dilations,pads", [
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1)), ((2, 2), (2, 2), (1, 1), (0, 0, 1, 1)),
    ((3, 2), (2, 1), (2, 1), (2, 0, 1, 3)), ((1, 1), (1, 1), (1, 1), (0, 0, 0, 0))])
@pytest.mark.parametrize("fn", [Reduce.MAX, Reduce.MEAN])
def test_pooling(kernel, strides, dilations, pads, fn):
    b = builder((2, 7, 6, 5))
    w = b.add(Op.WINDOW, ["x0"], kernel=kernel, strides=strides, dilations=dilations,
              pads=pads, pad=float("-inf") if fn is Reduce.MAX else 0.0)
    check(b.finish([b.add(Op.REDUCE, [w], fn=fn, axes=(3, 4))]))


def test_depthwise_with_epilogue():
    rng = np.random.default_rng(3)
    b = builder((1, 9, 9, 8))
    w = b.add(Op.WINDOW, ["x0"], kernel=(3, 3), strides=(2, 2), dilations=(1, 1),
              pads=(1, 1, 1, 1), pad=0.0)
    k = b.const(rng.standard_normal((3, 3, 8)).astype(np.float32))
    y = b.add(Op.REDUCE, [b.add(Op.BINARY, [w, k], fn=Binary.MUL)], fn=Reduce.SUM, axes=(3, 4))
    y = b.add(Op.BINARY, [y, b.const(rng.standard_normal(8).astype(np.float32))], fn=Binary.ADD)
    check(b.finish([b.add(Op.UNARY, [y], fn=Unary.CLIP, lo=0.0, hi=6.0)]))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_concat(axis):
    b = builder((2, 3, 4), (2, 3, 4))
    y = b.add(Op.UNARY, ["x1"], fn=Unary.EXP)
    check(b.finish([b.add(Op.CONCAT, ["x0", y, "x0"], axis=axis)]))


@pytest.mark.parametrize("m,k,n", [(1, 64, 128), (5, 7, 3), (33, 20, 40), (64, 64, 64)])
def test_matmul_const_rhs_with_epilogue(m, k, n):
    rng = np.random.default_rng(m)
    b = builder((m, k), (m, n), (m, 1))
    y = b.add(Op.MATMUL, ["x0", b.const(rng.standard_normal((k, n)).astype(np.float32))])
    y = b.add(Op.BINARY, [y, b.const(rng.standard_normal(n).astype(np.float32))], fn=Binary.ADD)
    y = b.add(Op.BINARY, [y, "x1"], fn=Binary.ADD)  # residual
    y = b.add(Op.BINARY, [y, "x2"], fn=Binary.MUL)  # per-row
    y = b.add(Op.BINARY, [y, b.const(np.float32(0.5))], fn=Binary.SUB)  # scalar
    check(b.finish([b.add(Op.UNARY, [y], fn=Unary.SIGMOID)]), rtol=1e-4)


@pytest.mark.parametrize("a,bshape", [((3, 5, 7), (3, 7, 4)), ((2, 1, 5, 7), (3, 7, 6)),
                                      ((4, 6, 8), (8, 5)), ((2, 3, 5, 7), (2, 3, 7, 4))])
@pytest.mark.parametrize("const_rhs", [True, False])
def test_batched_matmul(a, bshape, const_rhs):
    rng = np.random.default_rng(1)
    b = builder(a, bshape)
    rhs = b.const(rng.standard_normal(bshape).astype(np.float32)) if const_rhs else "x1"
    check(b.finish([b.add(Op.MATMUL, ["x0", rhs])]), rtol=1e-4)


def test_outputs_that_alias_inputs_constants_and_each_other():
    b = builder((2, 3))
    r = b.add(Op.RESHAPE, ["x0"], shape=(3, 2))
    c = b.const(np.arange(4, dtype=np.float32).reshape(2, 2))
    y = b.add(Op.UNARY, ["x0"], fn=Unary.RELU)
    y2 = b.add(Op.RESHAPE, [y], shape=(6,))
    check(b.finish([r, c, y, y2]))


def test_output_aliasing_a_later_output():
    """Fuzz seed 2: the first output reshapes the second; the second keeps its buffer."""
    b = builder((1, 1, 1, 1))
    y = b.add(Op.UNARY, ["x0"], fn=Unary.EXP)
    check(b.finish([b.add(Op.RESHAPE, [y], shape=(1, 1)), y]))


def test_in_place_chain_and_residual_network():
    check(residual_cnn(), rtol=1e-4)
    b = builder((4, 5))
    y = b.add(Op.UNARY, ["x0"], fn=Unary.EXP)
    z = b.add(Op.REDUCE, [y], fn=Reduce.SUM, axes=(1,))
    check(b.finish([b.add(Op.BINARY, [y, z], fn=Binary.DIV)]))


def test_concat_written_in_place_by_matmul_producers():
    """A fire module: two convs concatenated on channels (NHWC): the copy leaves the plan."""
    rng = np.random.default_rng(5)
    b = builder((1, 4, 5, 3))
    parts = []
    for width in (4, 6):
        w = b.const(rng.standard_normal((3, width)).astype(np.float32))
        parts.append(b.add(Op.UNARY, [b.add(Op.MATMUL, ["x0", w])], fn=Unary.RELU))
    cat = b.add(Op.CONCAT, parts, axis=3)
    graph = b.finish([b.add(Op.UNARY, [cat], fn=Unary.TANH)])
    check(graph)
    assert compile_graph(graph, "t").report["kernels"] == 3  # two matmuls and the tanh


def test_concat_of_contiguous_chunks_written_in_place():
    b = builder((2, 5), (3, 5))
    parts = [b.add(Op.UNARY, [x], fn=Unary.EXP) for x in ("x0", "x1")]
    graph = b.finish([b.add(Op.UNARY, [b.add(Op.CONCAT, parts, axis=0)], fn=Unary.TANH)])
    check(graph)
    assert compile_graph(graph, "t").report["kernels"] == 3


def test_small_kernels_run_solo_between_split_ones(monkeypatch):
    """With a threshold between the convs' work and the pools', the convs are cut into chunks
    the team shares while thread 0 runs the pools alone (the workers wait on its progress
    word); the answer is the same."""
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 20000)
    graph = residual_cnn(c=16, hw=24)
    module = compile_graph(graph, "mixed", threads=2)
    assert module.report["threads"] == 2
    check(graph, rtol=1e-4)


def test_a_model_too_small_to_split_runs_on_one_thread(monkeypatch):
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 1 << 40)
    assert compile_graph(residual_cnn(), "small", threads=2).report["threads"] == 1


def test_no_in_place_write_under_a_reversing_slice():
    """Fuzz seed 104485: abs, then a reversed slice, then a multiply: writing the output over
    the input would overwrite elements the slice still has to read."""
    b = builder((1, 1, 1, 40))
    t = b.add(Op.CONCAT, ["x0", "x0", "x0"], axis=3)
    t = b.add(Op.UNARY, [b.add(Op.UNARY, [t], fn=Unary.EXP)], fn=Unary.ABS)
    t = b.add(Op.SLICE, [t], starts=(0, 0, 0, 119), steps=(1, 1, 1, -1), counts=(1, 1, 1, 120))
    c = b.const(np.linspace(-1, 1, 120, dtype=np.float32).reshape(1, 120))
    t = b.add(Op.BINARY, [t, c], fn=Binary.MUL)  # not an output: it may reuse its input
    wide = b.const(np.zeros((2, 1, 1, 1), np.float32))  # an expand, in a kernel of its own
    check(b.finish([b.add(Op.BINARY, [t, wide], fn=Binary.ADD)]))
