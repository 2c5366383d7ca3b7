"""Winograd 3x3 convs (passes/winograd.py): the rewrite keeps the interpreter's result, compiled
models match onnxruntime, and convs the pass must not touch stay direct."""

from __future__ import annotations

import numpy as np
import pytest
import sw2c
from onnx import TensorProto, helper, numpy_helper
from sw2c.frontend import import_model
from sw2c.ir import Op, run
from sw2c.passes import winograd as wino
from sw2c.passes.pipeline import run_pipeline, through
from sw2c.runtime.verify import RTOL

# (N, C, M, H, W, pads, bias, relu): odd sizes, asymmetric pads, channels not a multiple of 16
SHAPES = [
    (1, 32, 32, 14, 14, (1, 1, 1, 1), True, True),
    (1, 17, 20, 9, 11, (1, 1, 1, 1), False, False),
    (2, 19, 24, 7, 8, (0, 0, 0, 0), True, False),
    (1, 16, 33, 5, 5, (2, 1, 0, 2), False, True),
    (1, 40, 24, 13, 6, (1, 0, 1, 0), True, True),
]


def conv_model(n, c, m, h, w, pads, bias, relu, seed=0):
    """Conv 3x3 (He-normal weights) [+ bias] [+ Relu] on [n, c, h, w]."""
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((m, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)}
    if bias:
        inits["b"] = rng.standard_normal(m).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", *inits], ["c" if relu else "y"], pads=list(pads))]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    g = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [
            n, m, h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture
def any_channels(monkeypatch):
    """Let the pass take the small test convs (its channel threshold is a speed choice)."""
    monkeypatch.setattr(wino, "MIN_CHANNELS", 1)


def _matmuls(graph):
    return sum(n.op is Op.MATMUL for n in graph.nodes)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["2", "4", "auto"])
def test_rewrite_keeps_interpreter_result(shape, mode, any_channels):
    model = conv_model(*shape)
    before = run_pipeline(import_model(model), through("dead-code"))
    after = wino.winograd(before, mode)
    assert _matmuls(after) == 3 * _matmuls(before)  # input, batched, output transform
    x = np.random.default_rng(1).standard_normal(shape[:2] + shape[3:5]).astype(np.float32)
    want, got = run(before, {"x": x})["y"], run(after, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["2", "4"])
def test_compiled_matches_onnxruntime(shape, mode, any_channels):
    module = sw2c.compile(conv_model(*shape), verify=True, winograd=mode)  # raises past tolerance
    kinds = [n.attrs["kind"] for n in module.graph.nodes if n.op is Op.KERNEL]
    # ran as Winograd: the input transform, the batched GEMM, the output transform; the
    # tiles' window (read through the model's layout change) and their transpose are read by
    # the input transform itself, never written out (passes/fuse.py)
    assert kinds[:3] == ["lincomb", "matmul", "lincomb"], kinds
    if shape[-1]:  # a relu: the tiles are put in place, cropped and activated by one kernel
        kernels = [n for n in module.graph.nodes if n.op is Op.KERNEL]
        assert {Op.TRANSPOSE, Op.RESHAPE, Op.UNARY} <= {
            n.op for n in kernels[3].attrs["body"].nodes}, kinds


def test_weight_transform_matches_definition():
    rng = np.random.default_rng(2)
    g = rng.standard_normal((3, 3, 5, 7))
    for m in (2, 4):
        _, gm, _ = wino.transforms(m)
        u = wino.weight_transform(g.reshape(45, 7), 5, m).reshape(m + 2, m + 2, 5, 7)
        want = np.einsum("ai,ijcm,bj->abcm", gm, g, gm)
        np.testing.assert_allclose(u, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("attrs, size", [({"strides": [2, 2]}, 6), ({"dilations": [2, 2]}, 10),
                                         ({"group": 2}, 12)])
def test_other_convs_stay_direct(attrs, size, any_channels):
    model = conv_model(1, 32, 32, 12, 12, (1, 1, 1, 1), False, False)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = size
    model.graph.node[0].attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    if "group" in attrs:
        model.graph.initializer[0].CopyFrom(numpy_helper.from_array(
            np.ones((32, 16, 3, 3), np.float32), "w"))
    before = run_pipeline(import_model(model), through("dead-code"))
    assert wino.winograd(before, "4").nodes == before.nodes


def test_small_channels_stay_direct():
    before = run_pipeline(import_model(conv_model(1, 8, 8, 12, 12, (1,) * 4, False, False)),
                          through("dead-code"))
    assert wino.winograd(before, "auto").nodes == before.nodes


def test_a_map_of_few_tiles_stays_direct_unless_asked(any_channels):
    """auto: a 4x4 output is 4 tiles of F(2,3), too few rows to pay for streaming U (see
    MIN_TILES); 6x6 (9 tiles) and a forced "2" are rewritten."""
    def graph(size):
        model = conv_model(1, 32, 32, size + 2, size + 2, (0,) * 4, False, False)
        return run_pipeline(import_model(model), through("dead-code"))

    few = graph(4)
    assert wino.winograd(few, "auto").nodes == few.nodes
    assert _matmuls(wino.winograd(few, "2")) == 3
    assert _matmuls(wino.winograd(graph(6), "auto")) == 3


def test_bad_mode_is_a_compile_error():
    with pytest.raises(sw2c.Sw2cError, match="winograd='3'"):
        wino.winograd(import_model(conv_model(*SHAPES[0])), "3")
    with pytest.raises(sw2c.Sw2cError, match="winograd='fast'"):
        sw2c.compile(conv_model(*SHAPES[0]), winograd="fast")


def test_off_keeps_direct_convs(any_channels):
    module = sw2c.compile(conv_model(*SHAPES[0]), verify=False, winograd="off")
    kinds = [n.attrs["kind"] for n in module.graph.nodes if n.op is Op.KERNEL]
    assert kinds.count("matmul") == 1


def test_f4_error_within_verify_tolerance():
    """F(4,3) on a VGG-like layer (512 channels, He-normal weights) stays well inside the
    tolerance verify uses."""
    model = conv_model(1, 512, 64, 14, 14, (1,) * 4, True, False)
    graph = run_pipeline(import_model(model), through("dead-code"))
    x = np.random.default_rng(3).standard_normal((1, 512, 14, 14)).astype(np.float32)
    want = run(graph, {"x": x.astype(np.float32)})["y"]
    got = run(wino.winograd(graph, "4"), {"x": x})["y"]
    assert np.abs(got - want).max() < 0.1 * RTOL * np.abs(want).max()
