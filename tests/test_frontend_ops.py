"""The ONNX frontend, op by op: small models built with onnx.helper, imported and run on the IR
interpreter, compared with onnxruntime (tests/onnx_util.py); then the frontend's errors."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sw2c import ir
from sw2c.errors import ModelError, UnsupportedOpError
from sw2c.frontend import import_model, load_model
from sw2c.tests.onnx_util import check, make_model, node_model, random_feeds

RNG = np.random.default_rng(1234)


def rand(*shape: int, positive: bool = False) -> np.ndarray:
    x = np.asarray(RNG.standard_normal(shape), np.float32)
    return np.asarray(np.abs(x) + np.float32(0.1)) if positive else x


def ops_in(graph: ir.Graph) -> set[ir.Op]:
    return {n.op for n in graph.nodes}


def shaped(model: onnx.ModelProto, *shapes: list[int]) -> onnx.ModelProto:
    for vi, s in zip(model.graph.output, shapes):
        vi.CopyFrom(helper.make_tensor_value_info(vi.name, TensorProto.FLOAT, s))
    return model


# --- elementwise --------------------------------------------------------------------------------
@pytest.mark.parametrize("op, opset, attrs, positive", [
    ("Relu", 13, {}, False), ("Sigmoid", 13, {}, False), ("Tanh", 13, {}, False),
    ("Exp", 13, {}, False), ("Log", 13, {}, True), ("Sqrt", 13, {}, True), ("Neg", 13, {}, False),
    ("Abs", 13, {}, False), ("Reciprocal", 13, {}, True), ("HardSwish", 14, {}, False),
    ("LeakyRelu", 7, {}, False), ("LeakyRelu", 16, {"alpha": 0.3}, False),
    ("HardSigmoid", 7, {}, False), ("HardSigmoid", 13, {"alpha": 0.5, "beta": 0.1}, False),
    ("Relu", 7, {}, False), ("Identity", 13, {}, False),
])
def test_unary(op, opset, attrs, positive):
    model = node_model(op, {"x": [2, 3, 4]}, opset=opset, **attrs)
    check(model, {"x": rand(2, 3, 4, positive=positive) * 3})


@pytest.mark.parametrize("op", ["Reciprocal", "Clip", "Sqrt", "Mean"])
def test_scalar_input(op):
    """Rank-0 tensors stay rank 0 (constants like the 1 of Reciprocal included)."""
    check(node_model(op, {"x": []}, opset=11), {"x": np.array(2.5, np.float32)})


@pytest.mark.parametrize("slope_shape", [[3, 1, 1], [1], [4]])
def test_prelu(slope_shape):
    check(node_model("PRelu", {"x": [2, 3, 5, 4]}, inits={"s": rand(*slope_shape)}, opset=16))


BROADCASTS = [([2, 3, 4], [2, 3, 4]), ([2, 3, 4], [4]), ([2, 1, 4], [3, 1]), ([3], [2, 3]),
              ([2, 3], [])]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow"])
@pytest.mark.parametrize("shapes", BROADCASTS)
@pytest.mark.parametrize("const_b", [False, True])
def test_binary(op, shapes, const_b):
    a, b = rand(*shapes[0], positive=True), rand(*shapes[1], positive=op in ("Div", "Pow"))
    if const_b:
        check(node_model(op, {"a": shapes[0]}, inits={"b": b}, opset=13), {"a": a})
    else:
        check(node_model(op, {"a": shapes[0], "b": shapes[1]}, opset=13), {"a": a, "b": b})


def test_pow_integer_exponent():
    model = node_model("Pow", {"a": [2, 3]}, inits={"b": np.array([1, 2, 3], np.int64)}, opset=15)
    check(model, {"a": rand(2, 3)})


@pytest.mark.parametrize("op", ["Sum", "Max", "Min", "Mean"])
@pytest.mark.parametrize("shapes", [[[2, 3]], [[2, 3], [3]], [[2, 1, 3], [4, 1], [3]]])
def test_variadic(op, shapes):
    check(node_model(op, {f"x{i}": s for i, s in enumerate(shapes)}, opset=13))


@pytest.mark.parametrize("attrs", [{"min": -0.5, "max": 0.5}, {"min": 0.0}, {"max": 0.2}, {}])
def test_clip_attributes(attrs):
    check(node_model("Clip", {"x": [3, 4]}, opset=7, **attrs))


@pytest.mark.parametrize("lo, hi", [(-0.5, 0.5), (0.0, None), (None, 0.3), (None, None)])
@pytest.mark.parametrize("runtime", [False, True])
def test_clip_inputs(lo, hi, runtime):
    bounds = {"lo": lo, "hi": hi}
    present = {k: np.array(v, np.float32) for k, v in bounds.items() if v is not None}
    names = [k if v is not None else "" for k, v in bounds.items()]
    node = helper.make_node("Clip", ["x", *names], ["y"], name="clip")
    if runtime:
        model = make_model([node], {"x": [3, 4], **{k: [] for k in present}}, ["y"], opset=13)
        check(model, {"x": rand(3, 4), **present})
    else:
        model = make_model([node], {"x": [3, 4]}, ["y"], present, opset=13)
        check(model, {"x": rand(3, 4)})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset, axis", [(11, None), (11, 0), (11, 2), (11, -1), (13, None),
                                         (13, 1), (13, -3), (7, 1)])
def test_softmax(op, opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    check(node_model(op, {"x": [2, 3, 4, 5]}, opset=opset, **attrs), {"x": rand(2, 3, 4, 5) * 4})


REDUCES = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
           "ReduceSumSquare", "ReduceLogSumExp"]


@pytest.mark.parametrize("op", REDUCES)
@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("axes, keepdims", [([1], 1), ([-1, 0], 0), (None, 1), (None, 0)])
def test_reduce(op, opset, axes, keepdims):
    axes_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    if axes_input:
        inits = {} if axes is None else {"axes": np.array(axes, np.int64)}
        model = node_model(op, {"x": [2, 3, 4]}, inits=inits, opset=opset, keepdims=keepdims)
    else:
        attrs = {} if axes is None else {"axes": axes}
        model = node_model(op, {"x": [2, 3, 4]}, opset=opset, keepdims=keepdims, **attrs)
    check(model)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
def test_reduce_noop_with_empty_axes(op):
    check(node_model(op, {"x": [2, 3]}, opset=18, noop_with_empty_axes=1))


def test_reduce_sum_axes_input_at_13():
    check(node_model("ReduceSum", {"x": [2, 3, 4]}, inits={"a": np.array([1], np.int64)},
                     opset=13, keepdims=0))


# --- conv -------------------------------------------------------------------------------------
CONV_CASES = [  # (x shape, w shape, attrs)
    ([1, 3, 7, 7], [4, 3, 3, 3], {}),
    ([2, 3, 8, 7], [5, 3, 3, 3], {"pads": [1, 1, 1, 1]}),
    ([1, 3, 9, 9], [4, 3, 3, 2], {"strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ([1, 2, 9, 9], [3, 2, 3, 3], {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ([1, 3, 7, 8], [4, 3, 3, 3], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ([1, 3, 7, 8], [4, 3, 4, 4], {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ([1, 3, 8, 8], [4, 3, 2, 2], {"auto_pad": "SAME_UPPER"}),  # onnxruntime: no dilated SAME
    ([1, 3, 7, 7], [4, 3, 3, 3], {"auto_pad": "VALID", "strides": [2, 2]}),
    ([1, 3, 6, 6], [4, 3, 1, 1], {}),
    ([1, 4, 6, 6], [4, 1, 3, 3], {"group": 4, "pads": [1, 1, 1, 1]}),  # depthwise
    ([2, 6, 7, 7], [6, 1, 3, 3], {"group": 6, "strides": [2, 2], "dilations": [1, 2]}),
    ([1, 4, 6, 6], [8, 1, 3, 3], {"group": 4, "pads": [1, 1, 1, 1]}),  # multiplier 2
    ([1, 4, 6, 5], [6, 2, 3, 3], {"group": 2, "pads": [0, 1, 1, 0]}),  # grouped
    ([2, 6, 7, 7], [9, 2, 2, 3], {"group": 3, "strides": [2, 1], "dilations": [2, 1]}),
    ([2, 3, 11], [4, 3, 3], {"pads": [1, 2], "strides": [2]}),  # 1-D
    ([1, 4, 10], [4, 1, 5], {"group": 4, "auto_pad": "SAME_UPPER"}),
    ([1, 2, 5, 6, 4], [3, 2, 3, 3, 2], {"pads": [1, 1, 0, 1, 1, 1]}),  # 3-D
    ([1, 4, 5, 5, 5], [4, 2, 2, 2, 2], {"group": 2, "strides": [2, 1, 2]}),
]


@pytest.mark.parametrize("xs, ws, attrs", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv(xs, ws, attrs, bias):
    inits = {"w": rand(*ws)}
    if bias:
        inits["b"] = rand(ws[0])
    graph = check(node_model("Conv", {"x": xs}, inits=inits, opset=11, **attrs))
    assert ir.Op.WINDOW in ops_in(graph) and ir.Op.TRANSPOSE in ops_in(graph)


@pytest.mark.parametrize("xs, ws, attrs", [CONV_CASES[1], CONV_CASES[9], CONV_CASES[12]])
def test_conv_runtime_weights(xs, ws, attrs):
    """Weights fed at run time (as in ONNX's node tests) become IR transposes/reshapes."""
    check(node_model("Conv", {"x": xs, "w": ws, "b": [ws[0]]}, opset=7, **attrs))


def test_conv_lowering_shape():
    graph = import_model(onnx_conv_model())
    kinds = [n.op for n in graph.nodes if n.op is not ir.Op.CONST]
    assert kinds == [ir.Op.TRANSPOSE, ir.Op.WINDOW, ir.Op.RESHAPE, ir.Op.MATMUL, ir.Op.BINARY,
                     ir.Op.TRANSPOSE]


def onnx_conv_model() -> onnx.ModelProto:
    model = node_model("Conv", {"x": [1, 3, 6, 6]}, inits={"w": rand(4, 3, 3, 3), "b": rand(4)},
                       pads=[1, 1, 1, 1])
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y0", TensorProto.FLOAT,
                                                                 [1, 4, 6, 6]))
    return model


# --- pooling ----------------------------------------------------------------------------------
POOL_CASES = [  # (x shape, attrs)
    ([1, 3, 7, 7], {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ([1, 3, 8, 8], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ([2, 2, 9, 8], {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [1, 0, 1, 1]}),
    ([1, 2, 10, 10], {"kernel_shape": [2, 2], "strides": [3, 3], "pads": [0, 0, 1, 1]}),
    ([1, 2, 6, 7], {"kernel_shape": [4, 3], "strides": [1, 2], "pads": [2, 1, 1, 1]}),
    ([1, 2, 11], {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ([1, 2, 5, 6, 7], {"kernel_shape": [2, 3, 2], "strides": [2, 2, 3],
                       "pads": [0, 1, 1, 1, 0, 1]}),
]


@pytest.mark.parametrize("xs, attrs", POOL_CASES)
@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_max_pool(xs, attrs, ceil_mode):
    check(node_model("MaxPool", {"x": xs}, opset=12, ceil_mode=ceil_mode, **attrs))


@pytest.mark.parametrize("xs, attrs", POOL_CASES)
@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool(xs, attrs, ceil_mode, count_include_pad):
    check(node_model("AveragePool", {"x": xs}, opset=11, ceil_mode=ceil_mode,
                     count_include_pad=count_include_pad, **attrs))


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("strides", [[1, 1], [2, 2], [3, 2]])
def test_pool_auto_pad(op, auto_pad, strides):
    check(node_model(op, {"x": [1, 2, 7, 8]}, opset=11, kernel_shape=[3, 2], strides=strides,
                     auto_pad=auto_pad))


@pytest.mark.parametrize("op, opset", [("MaxPool", 12), ("AveragePool", 19)])
@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_pool_dilations(op, opset, ceil_mode, count_include_pad):
    attrs = {"count_include_pad": count_include_pad} if op == "AveragePool" else {}
    check(node_model(op, {"x": [1, 2, 9, 10]}, opset=opset, kernel_shape=[2, 3], strides=[2, 2],
                     dilations=[2, 2], pads=[1, 1, 1, 0], ceil_mode=ceil_mode, **attrs))


def test_max_pool_old_opset():
    check(node_model("MaxPool", {"x": [1, 2, 6, 6]}, opset=8, kernel_shape=[2, 2], strides=[2, 2]))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("xs", [[2, 3, 5], [1, 3, 4, 5], [1, 2, 3, 4, 2]])
def test_global_pool(op, xs):
    check(node_model(op, {"x": xs}))


# --- normalization ----------------------------------------------------------------------------
def bn_params(c: int) -> dict[str, np.ndarray]:
    return {"scale": rand(c), "bias": rand(c), "mean": rand(c),
            "var": rand(c, positive=True)}


@pytest.mark.parametrize("opset", [7, 9, 15])
@pytest.mark.parametrize("xs", [[2, 3, 4, 5], [4, 3], [1, 3, 6]])
def test_batch_norm(opset, xs):
    check(node_model("BatchNormalization", {"x": xs}, inits=bn_params(xs[1]), opset=opset,
                     epsilon=1e-3))


def test_batch_norm_runtime_params():
    params = bn_params(3)
    model = node_model("BatchNormalization", {"x": [2, 3, 4, 4], **{k: [3] for k in params}},
                       opset=14)
    check(model, {"x": rand(2, 3, 4, 4), **params})


def test_batch_norm_folds_to_two_ops():
    model = node_model("BatchNormalization", {"x": [1, 3, 2, 2]}, inits=bn_params(3))
    graph = check(model)
    assert [n.op for n in graph.nodes if n.op is not ir.Op.CONST] == [ir.Op.BINARY] * 2


@pytest.mark.parametrize("size, attrs", [(5, {}), (3, {"alpha": 0.01, "beta": 0.5, "bias": 2.0}),
                                         (1, {"beta": 1.0}), (7, {"alpha": 0.1})])
def test_lrn(size, attrs):
    check(node_model("LRN", {"x": [2, 7, 4, 3]}, size=size, **attrs), {"x": rand(2, 7, 4, 3) * 3})


# --- matrix products ----------------------------------------------------------------------------
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("c_shape", [None, [5], [1, 5], [3, 1], [3, 5], []])
@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 2.0)])
def test_gemm(trans_a, trans_b, c_shape, alpha, beta):
    a_shape = [4, 3] if trans_a else [3, 4]
    b = rand(5, 4) if trans_b else rand(4, 5)
    inits = {"b": b} if c_shape is None else {"b": b, "c": rand(*c_shape)}
    check(node_model("Gemm", {"a": a_shape}, inits=inits, opset=11, transA=trans_a,
                     transB=trans_b, alpha=alpha, beta=beta))


def test_gemm_runtime_b():
    check(node_model("Gemm", {"a": [3, 4], "b": [5, 4], "c": [5]}, opset=9, transB=1,
                     alpha=2.0))


@pytest.mark.parametrize("sa, sb", [([3, 4], [4, 5]), ([4], [4, 5]), ([3, 4], [4]), ([4], [4]),
                                    ([2, 3, 4], [4, 5]), ([2, 1, 3, 4], [5, 4, 6]),
                                    ([5], [2, 5, 3]), ([2, 3, 4], [4])])
@pytest.mark.parametrize("const_b", [False, True])
def test_matmul(sa, sb, const_b):
    if const_b:
        check(node_model("MatMul", {"a": sa}, inits={"b": rand(*sb)}, opset=13))
    else:
        check(node_model("MatMul", {"a": sa, "b": sb}, opset=9))


# --- layout -------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis):
    check(node_model("Flatten", {"x": [2, 3, 4, 5]}, opset=13, axis=axis))


@pytest.mark.parametrize("shape, allowzero, opset", [([6, -1], 0, 13), ([0, -1, 2], 0, 13),
                                                     ([-1], 0, 7), ([0, 0, 4], 0, 14),
                                                     ([4, 6], 1, 14), ([1, 24, 1], 0, 7)])
def test_reshape(shape, allowzero, opset):
    attrs = {"allowzero": allowzero} if opset >= 14 else {}
    check(node_model("Reshape", {"x": [2, 3, 4]}, inits={"s": np.array(shape, np.int64)},
                     opset=opset, **attrs))


@pytest.mark.parametrize("perm", [None, [0, 2, 1, 3], [3, 0, 1, 2]])
def test_transpose(perm):
    attrs = {} if perm is None else {"perm": perm}
    check(node_model("Transpose", {"x": [2, 3, 4, 5]}, **attrs))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    shapes[1][axis] = 2
    inits = {"c": rand(*shapes[2])}
    check(node_model("Concat", {"a": shapes[0], "b": shapes[1]}, inits=inits, axis=axis))


@pytest.mark.parametrize("opset, split, axis, n_out, attrs", [
    (11, None, 1, 2, {}), (11, [1, 3, 2], 1, 3, {}), (11, None, -1, 5, {}),
    (13, [4, 2], 1, 2, {}), (13, None, 0, 2, {}),
    (18, None, 1, 4, {"num_outputs": 4}), (18, [1, 5], 1, 2, {}),
])
def test_split(opset, split, axis, n_out, attrs):
    if split is not None and opset >= 13:
        model = node_model("Split", {"x": [2, 6, 5]}, n_out, opset=opset, axis=axis,
                           inits={"split": np.array(split, np.int64)}, **attrs)
    else:
        attrs = {**attrs, **({"split": split} if split is not None else {})}
        model = node_model("Split", {"x": [2, 6, 5]}, n_out, opset=opset, axis=axis, **attrs)
    check(model)


SLICES = [  # starts, ends, axes, steps
    ([1], [3], [1], None),
    ([0, 1], [2, -1], None, None),
    ([-3, 10], [-1, 1000], [2, 1], None),
    ([5], [-100], [1], [-1]),
    ([-1, 4], [-7, 0], [2, 1], [-2, -3]),
    ([100], [-100], [1], [-1]),
    ([-100], [2], [2], [2]),
    ([0, 0, 0], [2, 9, 7], [0, 1, 2], [1, 4, 3]),
    ([3], [1], [1], None),  # empty
]


@pytest.mark.parametrize("starts, ends, axes, steps", SLICES)
def test_slice(starts, ends, axes, steps):
    inits = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64)}
    names = ["x", "starts", "ends", ""]
    if axes is not None:
        inits["axes"] = np.array(axes, np.int64)
        names[3] = "axes"
    if steps is not None:
        inits["steps"] = np.array(steps, np.int64)
        names.append("steps")
    node = helper.make_node("Slice", names, ["y"], name="slice")
    check(make_model([node], {"x": [3, 9, 7]}, ["y"], inits, opset=13))


@pytest.mark.parametrize("starts, ends, axes", [([1], [3], [1]), ([0, -3], [2, 100], None),
                                                ([-2], [-1], [-1])])
def test_slice_attributes(starts, ends, axes):
    attrs = {"starts": starts, "ends": ends, **({"axes": axes} if axes else {})}
    check(node_model("Slice", {"x": [3, 9, 7]}, opset=9, **attrs))


@pytest.mark.parametrize("pads, value", [([0, 1, 2, 0, 2, 1], 0.0), ([1, 0, 0, 1, 0, 3], 1.5),
                                         ([0, -1, 1, 0, 2, -2], 0.0), ([0, 0, 0, 0, 0, 0], 0.0)])
@pytest.mark.parametrize("opset", [9, 13])
def test_pad(pads, value, opset):
    if opset < 11:
        model = node_model("Pad", {"x": [2, 4, 5]}, opset=opset, pads=pads, value=value)
    else:
        inits = {"p": np.array(pads, np.int64), "v": np.array(value, np.float32)}
        model = node_model("Pad", {"x": [2, 4, 5]}, inits=inits, opset=opset)
    check(model)


def test_pad_axes_input():
    inits = {"p": np.array([1, -1, 2, 3], np.int64), "v": np.array(2.0, np.float32),
             "a": np.array([2, -2], np.int64)}
    check(node_model("Pad", {"x": [2, 4, 5]}, inits=inits, opset=18))


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [None, [1], [-1, 1]])
def test_squeeze(opset, axes):
    if axes is None or opset < 13:
        model = node_model("Squeeze", {"x": [2, 1, 3, 1]}, opset=opset,
                           **({} if axes is None else {"axes": axes}))
    else:
        model = node_model("Squeeze", {"x": [2, 1, 3, 1]}, opset=opset,
                           inits={"a": np.array(axes, np.int64)})
    check(model)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[0], [1, 3], [-1], [0, -1]])
def test_unsqueeze(opset, axes):
    if opset < 13:
        model = node_model("Unsqueeze", {"x": [2, 3]}, opset=opset, axes=axes)
    else:
        model = node_model("Unsqueeze", {"x": [2, 3]}, opset=opset,
                           inits={"a": np.array(axes, np.int64)})
    check(model)


@pytest.mark.parametrize("opset, inputs", [(7, []), (10, []), (13, []), (13, ["r"]),
                                           (13, ["r", "t"])])
def test_dropout(opset, inputs):
    inits = {"r": np.array(0.3, np.float32), "t": np.array(False)}
    inits = {k: v for k, v in inits.items() if k in inputs}
    attrs = {"ratio": 0.4} if opset < 12 else {}
    check(node_model("Dropout", {"x": [2, 3]}, inits=inits, opset=opset, **attrs))


@pytest.mark.parametrize("shape", [[2, 3, 4], [3, 4], [4], [1, 3, 1], [3, 2, 1, 1]])
def test_expand(shape):
    x = rand(3, 1)
    x[0, 0], x[1, 0], x[2, 0] = np.inf, np.nan, -0.0
    graph = check(node_model("Expand", {"x": [3, 1]}, inits={"s": np.array(shape, np.int64)}),
                  {"x": x})
    assert ir.Op.BINARY in ops_in(graph) or ir.Op.RESHAPE in ops_in(graph)


@pytest.mark.parametrize("reps", [[1, 1], [2, 3], [3, 1]])
def test_tile(reps):
    check(node_model("Tile", {"x": [2, 3]}, inits={"r": np.array(reps, np.int64)}))


@pytest.mark.parametrize("indices, axis", [(np.array(1), 0), (np.array([2, 0, 1]), 1),
                                           (np.array([[0, 1], [-1, 2]]), 2),
                                           (np.array([0, 2, 4]), 2), (np.array(-1), -1)])
def test_gather_constant_indices(indices, axis):
    check(node_model("Gather", {"x": [3, 4, 5]}, inits={"i": indices.astype(np.int64)},
                     axis=axis))


@pytest.mark.parametrize("op", ["Cast", "CastLike"])
def test_cast_to_float(op):
    if op == "Cast":
        check(node_model("Cast", {"x": [2, 3]}, to=TensorProto.FLOAT))
    else:
        check(node_model("CastLike", {"x": [2, 3]}, inits={"like": np.zeros(1, np.float32)}))


def test_reduce_over_empty_axis():
    """An empty reduction is the op's identity: a constant output, whatever the input."""
    model = node_model("ReduceMax", {"x": [2, 0, 3]}, inits={"a": np.array([1], np.int64)},
                       opset=18)
    check(model, {"x": np.zeros((2, 0, 3), np.float32)})


# --- constants and folding ----------------------------------------------------------------------
@pytest.mark.parametrize("attr, value", [
    ("value", numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))),
    ("value_float", 2.5), ("value_floats", [1.0, 2.0, 3.0]),
    ("sparse_value", helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "v"),
        numpy_helper.from_array(np.array([1, 5], np.int64), "i"), [2, 3])),
])
def test_constant(attr, value):
    nodes = [helper.make_node("Constant", [], ["c"], **{attr: value}),
             helper.make_node("Add", ["x", "c"], ["y"])]
    check(make_model(nodes, {"x": [2, 3]}, ["y"], opset=13))


def test_constant_ints():
    nodes = [helper.make_node("Constant", [], ["s"], value_ints=[3, 2]),
             helper.make_node("Reshape", ["x", "s"], ["r"]),
             helper.make_node("Constant", [], ["c"], value_int=6),
             helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["r", "cf"], ["y"])]
    check(make_model(nodes, {"x": [2, 3]}, ["y"], opset=13))


def test_shape_arithmetic_folds():
    """The PyTorch flatten idiom: Shape -> Gather -> Unsqueeze -> Concat -> Reshape, plus
    ConstantOfShape / Range / Equal / Where / Cast on shape tensors."""
    i64 = {"zero": np.array(0, np.int64), "neg": np.array([-1], np.int64),
           "one": np.array(1, np.int64)}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zax"], ["n1"]),
        helper.make_node("Concat", ["n1", "neg"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Shape", ["flat"], ["fs"], start=-1),
        helper.make_node("ConstantOfShape", ["fs"], ["ones"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("Range", ["zero", "n", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Equal", ["n", "one"], ["eq"]),
        helper.make_node("Where", ["eq", "ones", "ones"], ["w"]),
        helper.make_node("ReduceSum", ["rf"], ["rs"], keepdims=1),
        helper.make_node("Mul", ["flat", "w"], ["m"]),
        helper.make_node("Add", ["m", "rs"], ["y"]),
    ]
    model = make_model(nodes, {"x": [2, 3, 4]}, ["y"], {**i64, "zax": np.array([0], np.int64)},
                       opset=15)
    graph = check(model)
    assert {n.op for n in graph.nodes} <= {ir.Op.CONST, ir.Op.RESHAPE, ir.Op.BINARY}


def test_output_naming():
    """Outputs keep their ONNX names, also when one is an input, a constant or a duplicate."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["r2"]),
             helper.make_node("Identity", ["x"], ["xi"]),
             helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0])]
    graph = check(make_model(nodes, {"x": [2]}, ["r", "r2", "xi", "c"]))
    assert {n.name for n in graph.nodes} >= {"r", "r2", "xi", "c"}


def test_small_cnn():
    """conv-bn-relu-pool-conv(depthwise)-gap-flatten-gemm-softmax, end to end."""
    c = 4
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w2"], ["c2"], group=c, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r6"]),
        helper.make_node("GlobalAveragePool", ["r6"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"]),
    ]
    inits = {"w1": rand(c, 3, 3, 3), "b1": rand(c), "s": rand(c), "b": rand(c), "m": rand(c),
             "v": rand(c, positive=True), "w2": rand(c, 1, 3, 3),
             "lo": np.array(0, np.float32), "hi": np.array(6, np.float32), "fc": rand(5, c),
             "fcb": rand(5)}
    check(make_model(nodes, {"x": [2, 3, 8, 8]}, ["logits", "prob"], inits, opset=13))


def test_initializer_listed_as_input_is_a_constant():
    """IR version < 4 lists every initializer among the graph inputs too."""
    model = node_model("Add", {"x": [2, 3], "b": [3]}, opset=9)
    model.graph.initializer.append(numpy_helper.from_array(rand(3), "b"))
    graph = check(model, {"x": rand(2, 3)})
    assert [v.name for v in graph.inputs] == ["x"]


def test_local_functions_are_inlined():
    body = [helper.make_node("Neg", ["a"], ["n"]), helper.make_node("Relu", ["n"], ["b"])]
    fn = helper.make_function("local", "NegRelu", ["a"], ["b"], body,
                              [helper.make_opsetid("", 17)])
    model = make_model([helper.make_node("NegRelu", ["x"], ["y"], domain="local")],
                       {"x": [2, 3]}, ["y"])
    model.functions.append(fn)
    model.opset_import.append(helper.make_opsetid("local", 1))
    check(model)


# --- dynamic shapes -----------------------------------------------------------------------------
def dynamic_model() -> onnx.ModelProto:
    return shaped(node_model("Relu", {"x": ["batch", 3, None]}), ["batch", 3, None])


def test_dynamic_dims_warn_and_default_to_one():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = import_model(dynamic_model())
    assert [str(w.message) for w in caught] == [  # one line per input, with the shape to pass
        "input 'x' has dynamic dimensions 0 ('batch'), 2: compiling for shape (1, 3, 1), with 1 "
        "there; fix it with input_shapes={'x': (1, 3, 1)}"]
    assert caught[0].filename == __file__  # points at the caller of import_model
    assert graph.inputs[0].type.shape == (1, 3, 1)


def test_dynamic_dims_from_input_shapes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = check(dynamic_model(), input_shapes={"x": (4, 3, 5)})
    assert graph.inputs[0].type.shape == (4, 3, 5)


@pytest.mark.parametrize("shapes, match", [
    ({"nope": (1, 3, 1)}, "'nope', which is not an input"),
    ({"x": (1, 3)}, "rank 2"),
    ({"x": (1, 4, 1)}, "fixes it at 3"),
])
def test_bad_input_shapes(shapes, match):
    with pytest.raises(ModelError, match=match):
        import_model(dynamic_model(), shapes)


# --- errors ---------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match="nope.onnx"):
        load_model(path)
    with pytest.raises(ModelError, match="nope.onnx"):
        import_model(str(path))


@pytest.mark.parametrize("data", [b"\x00\x01garbage\xff" * 10, b"", b"hello world"])
def test_garbage_file(tmp_path, data):
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelError, match="bad.onnx"):
        load_model(path)


def test_invalid_model_file(tmp_path):
    model = node_model("Relu", {"x": [2]})  # its output has no shape: the checker refuses it
    path = tmp_path / "invalid.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match="invalid.onnx.*not a valid ONNX model"):
        load_model(path)


def test_load_and_import_file(tmp_path):
    path = tmp_path / "conv.onnx"
    onnx.save(onnx_conv_model(), path)
    assert isinstance(load_model(path), onnx.ModelProto)
    assert import_model(path).outputs == ("y0",)


def test_unsupported_domain():
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fc7", domain="com.microsoft")
    model = shaped(make_model([node], {"x": [2]}, ["y"]), [2])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError, match="com.microsoft::FusedConv at node 'fc7'") as e:
        import_model(model)
    assert (e.value.op_type, e.value.domain, e.value.node) == ("FusedConv", "com.microsoft", "fc7")


@pytest.mark.parametrize("op, attrs, detail", [
    ("Unique", {}, "only when all its inputs are constants"),
    ("TfIdfVectorizer", {}, "only when all its inputs are constants"),
    ("Pad", {"mode": "reflect"}, "mode 'reflect'"),
])
def test_unsupported_op(op, attrs, detail):
    inits = {"p": np.array([1, 1], np.int64)} if op == "Pad" else {}
    model = shaped(node_model(op, {"x": [3]}, inits=inits, opset=13, **attrs), [5 if inits else 3])
    with pytest.raises(UnsupportedOpError, match=f"ai.onnx::{op} at node '{op.lower()}_node'.*"
                                                 f"{detail}"):
        import_model(model)


def test_max_pool_indices_imported():  # values: tests/test_recent_ops.py
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", kernel_shape=[2, 2])
    model = make_model([node], {"x": [1, 1, 4, 4]}, ["y"], opset=12)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                 [1, 1, 3, 3]))
    model.graph.output.append(helper.make_tensor_value_info("i", TensorProto.INT64, [1, 1, 3, 3]))
    assert import_model(model).outputs == ("y", "i")


@pytest.mark.parametrize("op, inputs, outputs, inits", [
    ("Dropout", ["x", "r", "t"], ["y"], {"r": np.array(0.5, np.float32), "t": np.array(True)}),
])  # Dropout's mask and BatchNormalization's training mode: tests/test_unary_ops.py
def test_training_features_unsupported(op, inputs, outputs, inits):
    attrs = {"training_mode": 1} if op == "BatchNormalization" else {}
    node = helper.make_node(op, inputs, outputs, name="n", **attrs)
    model = make_model([node], {"x": [1, 2, 3]}, outputs[:1] + outputs[1:], inits, opset=15)
    for vi in model.graph.output:
        kind = TensorProto.BOOL if vi.name == "mask" else TensorProto.FLOAT
        dims = [1, 2, 3] if vi.name in ("y", "mask") else [2]
        vi.CopyFrom(helper.make_tensor_value_info(vi.name, kind, dims))
    with pytest.raises(UnsupportedOpError, match=f"{op} at node 'n'"):
        import_model(model)


def test_conv_bad_group():
    model = shaped(node_model("Conv", {"x": [1, 4, 5, 5]}, inits={"w": rand(3, 2, 3, 3)},
                              group=3), [1, 3, 3, 3])
    with pytest.raises(ModelError, match=r"node 'conv_node' \(Conv\).*group 3"):
        import_model(model)


def test_shape_error_names_node():
    model = shaped(node_model("Add", {"a": [2, 3], "b": [4]}), [2, 3])
    with pytest.raises(ModelError, match=r"node 'add_node' \(Add\).*broadcast"):
        import_model(model)


def test_declared_output_shape_mismatch():
    model = shaped(node_model("Relu", {"x": [2, 3]}), [3, 2])
    with pytest.raises(ModelError, match="output 'y0'.*\\[3, 2\\].*\\[2, 3\\]"):
        import_model(model)


def test_input_of_an_unsupported_dtype():
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(ModelError, match="input 'x' has dtype bfloat16; sw2c compiles float32, "
                                         "float64, float16, int64, .*, bool inputs"):
        import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def test_old_opset():
    model = shaped(node_model("Relu", {"x": [2]}, opset=6), [2])
    with pytest.raises(ModelError, match="opset 6"):
        import_model(model)


def test_undefined_input_names_node():
    node = helper.make_node("Relu", ["ghost"], ["y"], name="r")
    model = shaped(make_model([node], {"x": [2]}, ["y"]), [2])
    with pytest.raises(ModelError):  # the checker or the importer, both naming the tensor
        import_model(model)


def test_malformed_attributes_are_model_errors():
    model = shaped(node_model("Transpose", {"x": [2, 3]}, perm=[0, 0]), [2, 2])
    with pytest.raises(ModelError, match="perm"):
        import_model(model)
    model = shaped(node_model("Reshape", {"x": [2, 3]}, inits={"s": np.array([4, -1],
                                                                             np.int64)}), [4, 1])
    with pytest.raises(ModelError, match="cannot reshape"):
        import_model(model)


def test_random_feeds_helper_shapes():
    feeds = random_feeds(node_model("Relu", {"x": [2, 3]}))
    assert feeds["x"].shape == (2, 3)


def test_blocked_transpose_of_a_large_constant_is_exact():
    """A transposed weight (Gemm transB) above a million elements is copied to C order
    block by block; the copy is the same array, ragged edge blocks included."""
    from sw2c.frontend.importer import TRANSPOSE_BLOCK, c_ordered

    base = np.random.default_rng(0).standard_normal((TRANSPOSE_BLOCK * 2 + 3, 1500))
    copied = c_ordered(base.astype(np.float32).T)
    assert copied.flags.c_contiguous
    np.testing.assert_array_equal(copied, base.astype(np.float32).T)
