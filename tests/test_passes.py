"""Every pass, run on hand-built graphs: the reference interpreter agrees before and after."""

from __future__ import annotations

import numpy as np
import pytest
from sw2c.ir import Op, run, verify
from sw2c.passes.pipeline import CPU_PIPELINE, run_pipeline, through
from sw2c.tests.ir_models import residual_cnn


def _feeds(graph, seed=1):
    rng = np.random.default_rng(seed)
    return {v.name: rng.normal(size=v.type.shape).astype(np.float32) for v in graph.inputs}


@pytest.mark.parametrize("upto", range(1, len(CPU_PIPELINE) + 1))
def test_pipeline_prefix_preserves_semantics(upto):
    graph = residual_cnn()
    feeds = _feeds(graph)
    expect = run(graph, feeds)
    after = run_pipeline(graph, CPU_PIPELINE[:upto])
    got = run(after, feeds)
    for name in graph.outputs:
        np.testing.assert_allclose(got[name], expect[name], rtol=1e-5, atol=1e-5)


def test_layout_cancels_inner_transposes():
    graph = run_pipeline(residual_cnn(), through("choose-layout"))
    transposes = [n for n in graph.nodes if n.op is Op.TRANSPOSE]
    assert len(transposes) == 1  # only the input's NCHW -> NHWC remains


def test_affine_folds_bias_and_batchnorm_into_one_add():
    graph = run_pipeline(residual_cnn(), through("fold-affine"))
    for mm in (n for n in graph.nodes if n.op is Op.MATMUL):
        user = graph.users[mm.name]
        assert len(user) == 1 and user[0].op is Op.BINARY


def test_fusion_makes_few_kernels():
    graph = run_pipeline(residual_cnn())
    kinds = [n.attrs["kind"] for n in graph.nodes if n.op is Op.KERNEL]
    assert kinds.count("matmul") == 3
    assert all(n.op in (Op.KERNEL, Op.CONST, Op.RESHAPE) for n in graph.nodes)
    assert len(kinds) <= 7, kinds
    verify(graph)


ZOO_SMALL = ["mlp", "lenet", "mobilenet_v2", "squeezenet"]


@pytest.mark.parametrize("name", ZOO_SMALL)
def test_every_pass_preserves_zoo_models(name):
    """Each pass, run on an imported real architecture, keeps the interpreter's answer."""
    from sw2c.benchmarks.zoo import get
    from sw2c.frontend import import_model

    graph = import_model(get(name))
    feeds = _feeds(graph)
    expect = run(graph, feeds)
    for p in CPU_PIPELINE:
        graph = verify(p.run(graph))
        got = run(graph, feeds)
        for out in expect:
            np.testing.assert_allclose(got[out], expect[out], rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} after {p.name}")


def test_channel_scale_that_is_not_per_column_stays_out_of_the_weights():
    """Fuzz seeds 3177/9767: a [5,1,1] scale on a [1,5,1,5] matmul output varies along axis 1,
    not along the columns, although its size equals the column count."""
    from sw2c.ir import Binary, Builder, TensorType, Value

    rng = np.random.default_rng(0)
    b = Builder("g", [Value("x", TensorType((1, 5, 1, 7)))])
    y = b.add(Op.MATMUL, ["x", b.const(rng.standard_normal((7, 5)).astype(np.float32))])
    scale = b.const(rng.uniform(0.5, 2, (5, 1, 1)).astype(np.float32))
    graph = b.finish([b.add(Op.BINARY, [y, scale], fn=Binary.MUL)])
    feeds = _feeds(graph)
    after = run_pipeline(graph)
    np.testing.assert_allclose(run(after, feeds)[graph.outputs[0]],
                               run(graph, feeds)[graph.outputs[0]], rtol=1e-5)


def test_flatten_through_a_transpose_folds_into_the_weights():
    from sw2c.frontend import import_model
    from sw2c.tests.asic_models import DIGITS

    graph = import_model(str(DIGITS), {"input": (2, 1, 8, 8)})
    before = run_pipeline(graph, through("choose-layout"))
    after = run_pipeline(graph, through("flatten-order"))
    count = lambda g: sum(n.op is Op.TRANSPOSE for n in g.nodes)  # noqa: E731
    assert count(after) == count(before) - 1
    feeds = _feeds(graph)
    np.testing.assert_allclose(run(after, feeds)["logits"], run(before, feeds)["logits"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c,folds", [(4.0, True), (0.125, True), (3.0, False), (0.1, False)])
def test_division_by_a_constant_becomes_a_multiply_only_when_exact(c, folds):
    """x * (1/c) equals x / c bit for bit only for powers of two; the pass keeps the rest."""
    from sw2c.ir import Binary, Builder, TensorType, Value
    from sw2c.passes.fold_affine import fold_affine

    b = Builder("g", [Value("x", TensorType((1000,)))])
    y = b.add(Op.BINARY, ["x", b.const(np.array(c, np.float32))], fn=Binary.DIV)
    g = b.finish([y])
    after = fold_affine(g)
    fns = {n.attrs["fn"] for n in after.nodes if n.op is Op.BINARY}
    assert fns == ({Binary.MUL} if folds else {Binary.DIV})
    x = {"x": np.random.default_rng(0).standard_normal(1000).astype(np.float32)}
    np.testing.assert_array_equal(run(after, x)[y], run(g, x)[y])


def test_qkv_split_into_heads_is_one_kernel_per_head_tensor():
    """q = transpose(reshape(slice(qkv))): the slice moves after the head split
    (sink_slice_reshape) and the transpose kernel reads through it, so each of q, k, v costs
    one copy, not two; the interpreter agrees before and after."""
    from sw2c.ir import Builder, TensorType, Value
    from sw2c.passes.layout import choose_layout

    b = Builder("g", [Value("qkv", TensorType((16, 96)))])
    outs = []
    for i in range(3):
        s = b.add(Op.SLICE, ["qkv"], starts=(0, 32 * i), steps=(1, 1), counts=(16, 32))
        r = b.add(Op.RESHAPE, [s], shape=(1, 16, 2, 16))
        outs.append(b.add(Op.TRANSPOSE, [r], perm=(0, 2, 1, 3)))
    g = b.finish(outs)
    laid = choose_layout(g)
    assert all(laid.producer[laid.producer[o].inputs[0]].op is Op.SLICE
               for o in laid.outputs if laid.producer[o].op is Op.TRANSPOSE)
    x = {"qkv": np.random.default_rng(0).standard_normal((16, 96)).astype(np.float32)}
    for name in g.outputs:
        np.testing.assert_array_equal(run(laid, x)[name], run(g, x)[name])
    fused = run_pipeline(g, CPU_PIPELINE)
    assert sum(n.op is Op.KERNEL for n in fused.nodes) == 3
    for name in g.outputs:
        np.testing.assert_array_equal(run(fused, x)[name], run(g, x)[name])


@pytest.mark.parametrize("threads", [1, 2])
def test_elementwise_kernel_reads_through_layout_ops_that_keep_the_last_axis(threads):
    """Winograd's output shape: a transpose, a reshape and a crop that keep the last axis,
    then a per-channel add and a relu, are one vector kernel (24 lanes: a full vector and a
    masked one); a reshape that changes the last axis stays a free alias outside it."""
    from sw2c.driver import compile_graph
    from sw2c.ir import Binary, Builder, TensorType, Unary, Value

    rng = np.random.default_rng(3)
    b = Builder("g", [Value("x", TensorType((2, 4, 3, 24))), Value("z", TensorType((6, 48)))])
    t = b.add(Op.TRANSPOSE, ["x"], perm=(0, 2, 1, 3))  # [2, 3, 4, 24]
    r = b.add(Op.RESHAPE, [t], shape=(2, 12, 24))
    s = b.add(Op.SLICE, [r], starts=(0, 1, 0), steps=(1, 1, 1), counts=(2, 10, 24))
    y = b.add(Op.BINARY, [s, b.const(rng.standard_normal(24).astype(np.float32))],
              fn=Binary.ADD)
    y = b.add(Op.UNARY, [y], fn=Unary.RELU)
    z = b.add(Op.UNARY, [b.add(Op.RESHAPE, ["z"], shape=(12, 24))], fn=Unary.RELU)
    graph = b.finish([y, z])
    fused = run_pipeline(graph)
    kernels = [n for n in fused.nodes if n.op is Op.KERNEL]
    bodies = [{m.op for m in k.attrs["body"].nodes} for k in kernels]
    assert {Op.TRANSPOSE, Op.RESHAPE, Op.SLICE, Op.BINARY, Op.UNARY} in bodies, bodies
    assert {Op.UNARY} in bodies, bodies  # z's reshape: read as it is
    feeds = _feeds(graph)
    got = compile_graph(graph, "through", threads=threads).run(feeds)
    for name, want in run(graph, feeds).items():
        np.testing.assert_array_equal(got[name], want)
