"""ONNX quantization ops on the cpu target (frontend/ops_quant.py) against onnxruntime: codes
must match exactly, dequantized floats to float rounding. Each model is compiled to native code
and run; ``verify=True`` also checks it against onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sw2c
from onnx import TensorProto, helper, numpy_helper
from sw2c.errors import ModelError, Sw2cError, UnsupportedOpError
from sw2c.tests.onnx_util import with_output_shapes

RNG = np.random.default_rng(2024)
U8, I8 = np.uint8, np.int8


def codes(dtype: type, *shape: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return np.asarray(RNG.standard_normal(shape) * scale, np.float32)


def model(op: str, feeds: Mapping[str, np.ndarray], inits: Mapping[str, np.ndarray | None],
          n_out: int = 1, opset: int = 21, **attrs) -> onnx.ModelProto:
    """One ``op`` node reading ``feeds`` (graph inputs) then ``inits`` (None: absent)."""
    names = [*feeds, *(k if v is not None else "" for k, v in inits.items())]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name=f"{op.lower()}_node", **attrs)
    return graph_model([node], feeds, {k: v for k, v in inits.items() if v is not None},
                       outs, opset)


def graph_model(nodes: Sequence[onnx.NodeProto], feeds: Mapping[str, np.ndarray],
                inits: Mapping[str, np.ndarray], outs: Sequence[str],
                opset: int = 21) -> onnx.ModelProto:
    def info(name: str, a: np.ndarray) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)

    graph = helper.make_graph(list(nodes), "quant", [info(k, v) for k, v in feeds.items()],
                              [helper.make_empty_tensor_value_info(o) for o in outs],
                              [numpy_helper.from_array(np.asarray(v), k)
                               for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def ort_run(m: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
            optimize: bool = False) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, dict(feeds))


def check(m: onnx.ModelProto, feeds: Mapping[str, np.ndarray], rtol: float = 1e-6,
          verify: bool = True) -> list[np.ndarray]:
    """Compile and run ``m``; integer outputs must equal onnxruntime's, float ones nearly."""
    want = ort_run(m, feeds)
    module = sw2c.compile(with_output_shapes(m, want), verify=verify)
    got = module.run(dict(feeds))
    for (name, _, _), w in zip(module.outputs, want):
        g = np.asarray(got[name])
        assert g.dtype == w.dtype and g.shape == w.shape, name
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(g, w, err_msg=name)
    return [np.asarray(got[name]) for name, _, _ in module.outputs]


# --- QuantizeLinear / DequantizeLinear ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [U8, I8, np.uint16, np.int16])
def test_quantize_per_tensor(dtype):
    # exact ties (x / scale = k + 0.5) round half to even; big values saturate
    x = np.concatenate([rand(64, scale=40.0), np.arange(-8, 8, 0.5, dtype=np.float32) * 0.25,
                        np.array([1e9, -1e9, 3e5, -3e5], np.float32)]).reshape(4, -1)
    zp = np.array(np.iinfo(dtype).min // 2 + np.iinfo(dtype).max // 3, dtype)
    check(model("QuantizeLinear", {"x": x}, {"s": np.float32(0.25), "zp": zp}), {"x": x})


@pytest.mark.parametrize("scale", [0.1, 0.037, 0.3, 1 / 3])
def test_quantize_rounds_the_true_quotient(scale):
    """x / scale, not x * (1 / scale): they differ next to halves, where codes then differ."""
    s = np.float32(scale)
    k = np.arange(-300, 300, dtype=np.float32)
    x = np.concatenate([(k + np.float32(0.5)) * s, k * s, np.nextafter((k + 0.5) * s, 0)])
    x = x.astype(np.float32).reshape(-1, 30)
    check(model("QuantizeLinear", {"x": x}, {"s": s, "zp": np.int16(-5)}), {"x": x})


def test_quantize_default_uint8_and_output_dtype():
    x = rand(3, 10, scale=100.0)
    check(model("QuantizeLinear", {"x": x}, {"s": np.float32(0.5)}), {"x": x})
    check(model("QuantizeLinear", {"x": x}, {"s": np.float32(0.5)},
                output_dtype=TensorProto.INT8), {"x": x})
    check(model("QuantizeLinear", {"x": x}, {"s": np.float32(0.5)}, opset=13), {"x": x})


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_per_axis(axis):
    x = rand(3, 4, 5, scale=10.0)
    n = x.shape[axis]
    s = np.linspace(0.05, 0.3, n, dtype=np.float32)
    zp = codes(I8, n) // 2
    check(model("QuantizeLinear", {"x": x}, {"s": s, "zp": zp}, axis=axis), {"x": x})


@pytest.mark.parametrize("block, axis", [(2, 1), (3, 1), (4, 0)])
def test_quantize_blocked(block, axis):
    x = rand(5, 7, scale=10.0)
    shape = list(x.shape)
    shape[axis] = -(-shape[axis] // block)
    s = np.abs(rand(*shape)) + 0.05
    zp = codes(U8, *shape) // 2 + 60
    m = model("QuantizeLinear", {"x": x}, {"s": s, "zp": zp}, axis=axis, block_size=block)
    check(m, {"x": x})
    y = ort_run(m, {"x": x})[0]
    dq = model("DequantizeLinear", {"q": y}, {"s": s, "zp": zp}, axis=axis, block_size=block)
    check(dq, {"q": y})


def test_quantize_run_time_scale_and_half_input():
    x, s = rand(2, 6, scale=5.0), np.float32([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    check(model("QuantizeLinear", {"x": x, "s": s}, {"zp": codes(I8, 6)}, axis=1),
          {"x": x, "s": s})
    xh = x.astype(np.float16)
    check(model("QuantizeLinear", {"x": xh}, {"s": np.float16(0.125), "zp": np.int8(3)}),
          {"x": xh})


@pytest.mark.parametrize("dtype", [U8, I8, np.uint16, np.int16, np.int32])
def test_dequantize(dtype):
    q = codes(dtype, 3, 8)
    zp = np.array(7, dtype)
    check(model("DequantizeLinear", {"q": q}, {"s": np.float32(0.037), "zp": zp}), {"q": q})
    check(model("DequantizeLinear", {"q": q}, {"s": np.float32(0.037)}), {"q": q})


def test_dequantize_per_axis_and_half_scale():
    q = codes(I8, 2, 3, 4)
    s = np.float32([0.5, 0.25, 0.125])
    check(model("DequantizeLinear", {"q": q}, {"s": s, "zp": codes(I8, 3)}, axis=1), {"q": q})
    check(model("DequantizeLinear", {"q": q}, {"s": np.float16(0.01), "zp": np.int8(-3)}),
          {"q": q}, rtol=1e-3)


def test_qdq_pairs_compile_and_match():
    """A float model in QDQ form (as quantization tools export it): Q/DQ on activations, DQ
    on int8 weights, float Conv / Relu / MatMul in between."""
    x = rand(1, 3, 8, 8)
    w = codes(I8, 4, 3, 3, 3)
    ws = np.float32([0.01, 0.02, 0.015, 0.012])
    wm = codes(I8, 4 * 4 * 4, 10)
    inits = {"xs": np.float32(0.02), "xz": np.uint8(128), "w": w, "ws": ws,
             "wz": np.zeros(4, I8), "ys": np.float32(0.05), "yz": np.uint8(0),
             "wm": wm, "wms": np.float32(0.003), "shape": np.int64([1, -1])}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "ys", "yz"], ["rd"]),
        helper.make_node("MaxPool", ["rd"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("DequantizeLinear", ["wm", "wms"], ["wmd"]),
        helper.make_node("MatMul", ["f", "wmd"], ["y0"]),
    ]
    m = graph_model(nodes, {"x": x}, inits, ["y0"], opset=13)
    want = ort_run(m, {"x": x})[0]
    got = sw2c.compile(with_output_shapes(m, [want]), verify=True).run({"x": x})["y0"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# --- DynamicQuantizeLinear ---------------------------------------------------------------------
@pytest.mark.parametrize("x", [
    rand(3, 4, 5, scale=3.0), np.abs(rand(10)) + 1, -np.abs(rand(2, 6)) - 0.5,
    np.zeros((2, 3), np.float32), np.float32([[0.0, 2.55, -2.55, 1.275, 0.01]]),
])
def test_dynamic_quantize(x):
    check(model("DynamicQuantizeLinear", {"x": x}, {}, n_out=3, opset=11), {"x": x})


# --- integer products --------------------------------------------------------------------------
@pytest.mark.parametrize("ta, tb, azp, bzp", [
    (U8, U8, np.uint8(131), np.uint8(7)), (U8, I8, np.uint8(0), np.int8(-3)),
    (I8, I8, None, None), (I8, U8, np.int8(5), "per-column"),
])
def test_matmul_integer(ta, tb, azp, bzp):
    a, b = codes(ta, 2, 3, 16), codes(tb, 16, 5)
    if isinstance(bzp, str):
        bzp = codes(tb, 5)
    check(model("MatMulInteger", {"a": a, "b": b}, {"az": azp, "bz": bzp}, opset=10),
          {"a": a, "b": b})


def test_matmul_integer_is_exact_beyond_float32():
    """k = 2048 products of 255 * 255 sum to ~1.3e8 > 2^24: a float32 sum would round."""
    a = np.full((2, 2048), 255, U8)
    a[1, ::3] = 254
    b = np.full((2048, 3), 255, U8)
    b[::7, 1] = 1
    (y,) = check(model("MatMulInteger", {"a": a, "b": b}, {}, opset=10), {"a": a, "b": b})
    assert y[0, 0] == 2048 * 255 * 255 > 2**24


@pytest.mark.parametrize("ta, tw", [(U8, I8), (U8, U8), (I8, I8)])
def test_qlinear_matmul(ta, tw):
    a, b = codes(ta, 2, 4, 32), codes(tw, 32, 6)
    inits = {"as": np.float32(0.02), "az": np.array(3, ta), "b": b, "bs": np.float32(0.01),
             "bz": np.array(-2 if tw == I8 else 130, tw), "ys": np.float32(0.3),
             "yz": np.array(10, ta)}
    check(model("QLinearMatMul", {"a": a}, inits, opset=10), {"a": a})


@pytest.mark.parametrize("attrs, wshape, group", [
    ({}, (4, 3, 3, 3), 1),
    ({"pads": [1, 1, 1, 1]}, (4, 3, 3, 3), 1),
    ({"pads": [0, 1, 2, 1], "strides": [2, 1], "dilations": [1, 2]}, (5, 3, 2, 3), 1),
    ({"auto_pad": "SAME_UPPER", "group": 3}, (3, 1, 3, 3), 3),
    ({"pads": [1, 1, 1, 1], "group": 2}, (4, 2, 3, 3), 2),
])
def test_conv_integer(attrs, wshape, group):
    c = 3 if group != 2 else 4
    x, w = codes(U8, 2, c, 7, 6), codes(U8, *wshape)
    check(model("ConvInteger", {"x": x}, {"w": w, "xz": np.uint8(120), "wz": np.uint8(9)},
                opset=10, **attrs), {"x": x})


def test_conv_integer_1d_no_zero_points():
    x, w = codes(U8, 1, 2, 9), codes(U8, 3, 2, 4)
    check(model("ConvInteger", {"x": x}, {"w": w}, opset=10, pads=[2, 1]), {"x": x})


@pytest.mark.parametrize("tx, attrs, wshape, per_channel, bias", [
    (U8, {"pads": [1, 1, 1, 1]}, (4, 3, 3, 3), True, True),
    (U8, {"strides": [2, 2]}, (4, 3, 3, 3), False, False),
    (I8, {"pads": [1, 1, 1, 1], "group": 3}, (3, 1, 3, 3), True, True),
    (I8, {"pads": [0, 1, 0, 1], "group": 3}, (6, 1, 1, 3), False, True),
])
def test_qlinear_conv(tx, attrs, wshape, per_channel, bias):
    x, w = codes(tx, 1, 3, 8, 7), codes(I8, *wshape)
    m = wshape[0]
    ws = np.linspace(0.004, 0.02, m, dtype=np.float32) if per_channel else np.float32(0.01)
    inits = {"xs": np.float32(0.03), "xz": np.array(5, tx), "w": w, "ws": ws,
             "wz": np.zeros(m, I8) if per_channel else np.int8(0), "ys": np.float32(0.2),
             "yz": np.array(-7 if tx == I8 else 100, tx),
             "b": codes(I8, m).astype(np.int32) * 50 if bias else None}
    check(model("QLinearConv", {"x": x}, inits, opset=10, **attrs), {"x": x})


# --- refusals ----------------------------------------------------------------------------------
def compile_error(m: onnx.ModelProto) -> Sw2cError:
    with pytest.raises(Sw2cError) as e:
        sw2c.compile(m)
    return e.value


def test_refusals_name_the_node():
    x = rand(2, 4)
    four = model("QuantizeLinear", {"x": x}, {"s": np.float32(0.5)},
                 output_dtype=TensorProto.INT4)
    four.graph.output[0].CopyFrom(helper.make_tensor_value_info("y0", TensorProto.INT4, [2, 4]))
    assert isinstance(compile_error(four), (UnsupportedOpError, ModelError))
    bad_block = model("QuantizeLinear", {"x": x}, {"s": np.ones((2, 3), np.float32)},
                      axis=1, block_size=2)
    bad_block.graph.output[0].CopyFrom(
        helper.make_tensor_value_info("y0", TensorProto.UINT8, [2, 4]))
    err = compile_error(bad_block)
    assert isinstance(err, ModelError) and "quantizelinear_node" in str(err)
