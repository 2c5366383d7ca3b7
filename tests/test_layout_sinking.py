"""Channels-last through U-Net / decoder layers: the layout pass sinks transposes through
matmuls by constants (bilinear Resize) and through reshapes that merge or split runs of axes
(nearest upsampling, ConvTranspose's depth-to-space), so Concat, Resize and ConvTranspose
between convs run NHWC with no transpose; and the one-column GEMM (a conv to one channel)
that backends/cpu/gemv.py vectorizes along the reduction. Each pass is checked by the
reference interpreter before and after; compiled models against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import sw2c
from onnx import TensorProto, helper
from sw2c.frontend import import_model
from sw2c.ir import Binary, Builder, Op, TensorType, Unary, Value, run, verify
from sw2c.passes.layout import choose_layout
from sw2c.passes.pipeline import CPU_PIPELINE, run_pipeline
from sw2c.tests.onnx_util import session

RNG = np.random.default_rng(0)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _up_to_layout() -> list:
    names = [p.name for p in CPU_PIPELINE]
    return list(CPU_PIPELINE[: names.index("choose-layout") + 1])


def _feeds(graph, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs}


def _layout_agrees(graph):
    """choose_layout(graph), checked against the interpreter on the graph before it."""
    verify(graph)
    feeds = _feeds(graph)
    want = run(graph, feeds)
    after = verify(choose_layout(graph))
    got = run(after, feeds)
    for name in graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
    return after


def _count(graph, op: Op) -> int:
    return sum(n.op is op for n in graph.nodes)


# ---- the rules on hand-built IR -------------------------------------------------------------


@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2), (2, 0, 1, 3), (0, 1, 3, 2)])
def test_matmul_by_a_constant_through_a_transpose(perm):
    """matmul(transpose(x), W): the contraction moves onto x's axis, the transpose after it
    cancels the inverse one the next conv would read through."""
    b = Builder("g", [Value("x", TensorType((2, 4, 5, 6)))])
    t = b.add(Op.TRANSPOSE, ["x"], perm=perm)
    k = b.types[t].shape[-1]
    y = b.add(Op.MATMUL, [t, b.const(_rand(k, 7))])
    inv = tuple(int(i) for i in np.argsort(perm))
    out = b.add(Op.UNARY, [b.add(Op.TRANSPOSE, [y], perm=inv)], fn=Unary.RELU)
    after = _layout_agrees(b.finish([out]))
    assert _count(after, Op.TRANSPOSE) == 0


def test_matmul_by_an_activation_keeps_its_transpose():
    b = Builder("g", [Value("x", TensorType((1, 4, 5, 6))), Value("w", TensorType((4, 3)))])
    t = b.add(Op.TRANSPOSE, ["x"], perm=(0, 2, 3, 1))
    after = _layout_agrees(b.finish([b.add(Op.MATMUL, [t, "w"])]))
    assert _count(after, Op.TRANSPOSE) == 1


def test_nearest_upsample_reshapes_sink_and_cancel():
    """The VAE's nearest 2x: unit axes, a broadcast multiply by ones, merges, between an
    NHWC producer and an NHWC consumer."""
    b = Builder("g", [Value("x", TensorType((1, 5, 6, 3)))])
    t = b.add(Op.TRANSPOSE, ["x"], perm=(0, 3, 1, 2))  # [1, 3, 5, 6]
    y = b.add(Op.RESHAPE, [t], shape=(1, 3, 5, 6, 1))
    y = b.add(Op.BINARY, [y, b.const(np.ones((1, 1, 1, 1, 2), np.float32))], fn=Binary.MUL)
    y = b.add(Op.RESHAPE, [y], shape=(1, 3, 5, 1, 12))
    y = b.add(Op.BINARY, [y, b.const(np.ones((1, 1, 1, 2, 1), np.float32))], fn=Binary.MUL)
    y = b.add(Op.RESHAPE, [y], shape=(1, 3, 10, 12))
    out = b.add(Op.TRANSPOSE, [y], perm=(0, 2, 3, 1))
    after = _layout_agrees(b.finish([out]))
    assert _count(after, Op.TRANSPOSE) == 0


@pytest.mark.parametrize("shape,perm,dst", [
    ((2, 3, 4, 5), (0, 3, 1, 2), (2, 60)),  # flatten NCHW of an NHWC tensor: stays
    ((2, 3, 4, 5), (0, 2, 3, 1), (2, 4, 5, 3)),  # identity reshape
    ((2, 3, 4, 5), (1, 0, 2, 3), (3, 2, 20)),  # merge a run that stays in order
    ((2, 3, 4, 6), (0, 3, 1, 2), (2, 2, 3, 1, 3, 4, 1)),  # split with unit axes
    ((1, 3, 1, 5), (3, 2, 1, 0), (5, 3)),  # only unit axes dropped
])
def test_reshape_of_a_transpose(shape, perm, dst):
    b = Builder("g", [Value("x", TensorType(shape))])
    t = b.add(Op.TRANSPOSE, ["x"], perm=perm)
    out = b.add(Op.UNARY, [b.add(Op.RESHAPE, [t], shape=dst)], fn=Unary.NEG)
    _layout_agrees(b.finish([out]))


# ---- whole layers from ONNX -----------------------------------------------------------------


def _conv(name: str, x: str, cin: int, cout: int, k: int, inits: list) -> onnx.NodeProto:
    inits += [helper.make_tensor(f"{name}.w", TensorProto.FLOAT, [cout, cin, k, k],
                                 _rand(cout, cin, k, k).ravel()),
              helper.make_tensor(f"{name}.b", TensorProto.FLOAT, [cout], _rand(cout).ravel())]
    return helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name],
                            pads=[k // 2] * 4)


def _unet_block(up: str) -> onnx.ModelProto:
    """conv -> upsample (``up``) -> concat with a full-size conv -> conv: a U-Net decoder."""
    inits: list = []
    nodes = [_conv("a", "x", 3, 4, 3, inits), _conv("s", "y", 3, 4, 3, inits)]
    if up == "convtranspose":
        inits += [helper.make_tensor("ct.w", TensorProto.FLOAT, [4, 5, 2, 2],
                                     _rand(4, 5, 2, 2).ravel()),
                  helper.make_tensor("ct.b", TensorProto.FLOAT, [5], _rand(5).ravel())]
        nodes.append(helper.make_node("ConvTranspose", ["a", "ct.w", "ct.b"], ["u"],
                                      strides=[2, 2]))
        cu = 5
    else:
        inits.append(helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2]))
        nodes.append(helper.make_node("Resize", ["a", "", "scales"], ["u"], mode=up))
        cu = 4
    nodes += [helper.make_node("Concat", ["u", "s"], ["cat"], axis=1),
              _conv("out", "cat", cu + 4, 2, 3, inits)]
    graph = helper.make_graph(
        nodes, "unet_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 7]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 12, 14])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 12, 14])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("up", ["linear", "nearest", "convtranspose"])
def test_unet_decoder_block_runs_channels_last(up):
    model = _unet_block(up)
    feeds = {"x": _rand(1, 3, 6, 7), "y": _rand(1, 3, 12, 14)}
    want = session(model).run(None, feeds)[0]
    got = sw2c.compile(model, threads=1).run(feeds)["out"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    graph = run_pipeline(import_model(model), _up_to_layout())
    # only the edges (each input to NHWC, the output back to NCHW) and ConvTranspose's
    # depth-to-space, which moves whole channel rows
    assert _count(graph, Op.TRANSPOSE) <= 3 + (up == "convtranspose")


# ---- the one-column and few-column GEMMs ---------------------------------------------------


@pytest.mark.parametrize("cin,k", [(1, 1), (16, 1), (17, 1), (5, 3), (8, 3), (14, 3), (15, 3),
                                   (24, 3)])
@pytest.mark.parametrize("cout", [1, 2, 3, 8])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_to_few_channels(cin, k, cout, threads):
    """K = cin * k * k from 1 to 216 (one column past 128: the ordinary GEMM), rows not a
    multiple of the vector width, a bias + sigmoid epilogue and a residual."""
    inits: list = []
    nodes = [_conv("c", "x", cin, cout, k, inits),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Add", ["s", "r"], ["out"])]
    graph = helper.make_graph(
        nodes, "few_channels",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 7, 5]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, cout, 7, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, cout, 7, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": _rand(1, cin, 7, 5), "r": _rand(1, cout, 7, 5)}
    want = session(model).run(None, feeds)[0]
    got = sw2c.compile(model, threads=threads).run(feeds)["out"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_few_columns_equal_columns_give_equal_results(n):
    """Every column of a row is summed in the same order: equal weight columns, bit-equal
    outputs (softmax ties stay ties)."""
    w = np.repeat(_rand(40, 1), n, axis=1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [37, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [37, n])],
        [helper.make_tensor("w", TensorProto.FLOAT, [40, n], w.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = _rand(37, 40)
    y = sw2c.compile(model, threads=1)(x)
    assert (y == y[:, :1]).all()
    np.testing.assert_allclose(y, x.astype(np.float64) @ w, rtol=1e-4, atol=1e-4)


# ---- the im2col row copies ------------------------------------------------------------------


@pytest.mark.parametrize("spatial,kernel,strides,dilations,pads", [
    ((9, 7), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((9, 7), (3, 2), (2, 1), (1, 2), (0, 1, 2, 0)),
    ((9, 7), (5, 5), (2, 2), (1, 1), (2, 2, 2, 2)),
    ((3, 4), (5, 5), (1, 1), (1, 1), (2, 2, 2, 2)),  # a kernel row wider than the map
    ((11,), (3,), (2,), (2,), (1, 2)),
    ((4, 5, 6), (3, 3, 3), (1, 2, 1), (1, 1, 1), (1, 1, 0, 1, 0, 1)),
    ((9, 7), (3, 4), (1, 2), (1, 1), (1, 2, 1, 1)),  # 16 channels x 4 taps: 64 floats a row
])
@pytest.mark.parametrize("cin", [1, 3, 4, 16])
@pytest.mark.parametrize("mid", [4, 16])
def test_conv_patches_of_inputs_and_of_intermediate_tensors(spatial, kernel, strides,
                                                            dilations, pads, cin, mid):
    """Two convs: the first reads the NCHW model input through a transpose (a masked vector
    per channel plane and kernel row for up to 4 channels, strided channel loads for more),
    the second an NHWC intermediate of ``mid`` channels (masked vectors per kernel row of up
    to 64 floats, a copy per tap for more); zero pads on every side, so that the masks cut
    runs at both ends of the rows and drop whole rows."""
    inits: list = []
    n = len(spatial)
    w1 = _rand(mid, cin, *kernel)
    inits += [helper.make_tensor("w1", TensorProto.FLOAT, w1.shape, w1.ravel()),
              helper.make_tensor("w2", TensorProto.FLOAT, [5, mid, *kernel],
                                 _rand(5, mid, *kernel).ravel())]
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations),
                 pads=list(pads))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], **attrs),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["out"], kernel_shape=list(kernel),
                              pads=[k // 2 for k in kernel] * 2)]
    graph = helper.make_graph(
        nodes, "patches", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         [2, cin, *spatial])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = onnx.shape_inference.infer_shapes(model)
    feeds = {"x": _rand(2, cin, *spatial)}
    want = session(model).run(None, feeds)[0]
    got = sw2c.compile(model, threads=1).run(feeds)["out"]
    # sums of hundreds of products of unit normals: float32 rounding scales with the output
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))
    assert n == len(kernel)
