"""Opset 24-28 ops composed in frontend/ops_stateful.py (CausalConvWithState, LinearAttention,
SwiGLU, TensorScatter), float16/float64 Attention, integer Clip and MaxPool: compiled to
native code with every input fed at run time and compared with the ONNX reference
implementation (which defines the newer ops; onnxruntime lacks them); plus the refusals."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sw2c
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from sw2c.errors import UnsupportedOpError
from sw2c.tests.onnx_util import with_output_shapes

RNG = np.random.default_rng(2727)


def rand(*shape: int, dtype=np.float32) -> np.ndarray:
    return np.asarray(RNG.standard_normal(shape), dtype)


def one_node(op: str, feeds: Mapping[str, np.ndarray | None], n_out: int, opset: int,
             **attrs) -> onnx.ModelProto:
    """One ``op`` node reading ``feeds`` in order (None: an absent optional input)."""
    names = [n if v is not None else "" for n, v in feeds.items()]
    outs = [f"y{i}" for i in range(n_out)]
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype),
                                            v.shape) for n, v in feeds.items() if v is not None]
    first = helper.np_dtype_to_tensor_dtype(next(iter(feeds.values())).dtype)
    graph = helper.make_graph([helper.make_node(op, names, outs, **attrs)], "t", inputs,
                              [helper.make_tensor_value_info(o, first, ["n"]) for o in outs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray | None],
          rtol: float = 1e-4, atol: float = 1e-5, use_ort: bool = False) -> None:
    """sw2c (all inputs fed at run time) against the reference implementation (or
    onnxruntime, where the reference cannot run the case)."""
    feeds = {k: v for k, v in feeds.items() if v is not None}
    if use_ort:
        want = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, feeds)
    else:
        want = ReferenceEvaluator(model).run(None, feeds)
    model = with_output_shapes(model, want)
    got = sw2c.compile(model, verify=False).run(feeds)
    for out, w in zip(model.graph.output, want):
        g = got[out.name]
        assert g.dtype == w.dtype and g.shape == w.shape, out.name
        if w.dtype.kind in "iub":
            np.testing.assert_array_equal(g, w, err_msg=out.name)
        else:
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol,
                                       atol=atol, err_msg=out.name)


# --- Clip and MaxPool on integers ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64, np.uint64])
@pytest.mark.parametrize("bounds", ["both", "min", "max", "none", "runtime"])
def test_clip_int(dtype, bounds):
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max, (3, 7), dtype=dtype, endpoint=True)
    x[0, :2] = (info.min, info.max)
    lo, hi = np.array(info.min // 3, dtype), np.array(info.max // 3, dtype)
    inits = {"both": [lo, hi], "min": [lo], "max": [None, hi], "none": []}.get(bounds)
    if inits is None:  # run-time bounds
        feeds = {"x": x, "lo": lo, "hi": hi}
        check(one_node("Clip", feeds, 1, 13), feeds)
        return
    names = ["x"] + [f"b{i}" if b is not None else "" for i, b in enumerate(inits)]
    graph = helper.make_graph(
        [helper.make_node("Clip", names, ["y0"])], "t",
        [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)],
        [helper.make_tensor_value_info("y0", onnx.TensorProto.FLOAT, ["n"])],
        [numpy_helper.from_array(b, f"b{i}") for i, b in enumerate(inits) if b is not None])
    check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), {"x": x})


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1)])
def test_maxpool_small_ints(dtype, pads):
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max, (2, 3, 6, 5), dtype=dtype, endpoint=True)
    feeds = {"x": x}
    model = one_node("MaxPool", feeds, 1, 12, kernel_shape=[3, 2], pads=list(pads))
    check(model, feeds, use_ort=True)


# --- Attention in float16 / float64 --------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("attrs", [{}, {"is_causal": 1}, {"softcap": 2.0},
                                   {"softmax_precision": 1}, {"qk_matmul_output_mode": 3}])
def test_attention_float_types(dtype, attrs):
    q, k, v = rand(2, 4, 5, 8, dtype=dtype), rand(2, 2, 7, 8, dtype=dtype), rand(2, 2, 7, 6,
                                                                                  dtype=dtype)
    mask = rand(5, 7, dtype=dtype)
    feeds = {"Q": q, "K": k, "V": v, "M": mask}
    n_out = 4 if "qk_matmul_output_mode" in attrs else 1
    tol = 4e-3 if dtype == np.float16 else 1e-6
    names = ["Q", "K", "V", "M"] + ([""] * 2 if n_out == 4 else [])
    graph = helper.make_graph(
        [helper.make_node("Attention", names, [f"y{i}" for i in range(n_out)], **attrs)], "t",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in feeds.items()],
        [helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, ["n"])
         for i in range(n_out)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    if dtype == np.float64 and "softmax_precision" in attrs:  # float32: coarser, refused
        with pytest.raises(UnsupportedOpError, match="coarser"):
            sw2c.compile(model, verify=False)
        return
    check(model, feeds, rtol=tol, atol=tol)


# --- CausalConvWithState -------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("bias, past", [(False, False), (True, True)])
@pytest.mark.parametrize("activation", ["none", "silu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_causal_conv_with_state(k, bias, past, activation, dtype):
    feeds = {"x": rand(2, 3, 6, dtype=dtype), "w": rand(3, 1, k, dtype=dtype),
             "b": rand(3, dtype=dtype) if bias else None,
             "p": rand(2, 3, k - 1, dtype=dtype) if past and k > 1 else None}
    check(one_node("CausalConvWithState", feeds, 2, 27, activation=activation), feeds)


# --- LinearAttention -----------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("hq, hkv, per_dim", [(2, 2, False), (4, 2, True), (3, 1, False)])
@pytest.mark.parametrize("past", [False, True])
def test_linear_attention(rule, hq, hkv, per_dim, past):
    b, t, dk, dv = 2, 5, 4, 3
    feeds = {"q": rand(b, t, hq * dk), "k": rand(b, t, hkv * dk) * 0.5,
             "v": rand(b, t, hkv * dv), "s": rand(b, hkv, dk, dv) if past else None,
             "g": None, "beta": None}
    if rule in ("gated", "gated_delta"):
        feeds["g"] = -np.abs(rand(b, t, hkv * dk if per_dim else hkv))
    if rule in ("delta", "gated_delta"):
        feeds["beta"] = 1 / (1 + np.exp(-rand(b, t, hkv)))
    check(one_node("LinearAttention", feeds, 2, 27, q_num_heads=hq, kv_num_heads=hkv,
                   update_rule=rule), feeds)


def test_linear_attention_long_sequence_refused():
    feeds = {"q": rand(1, 300, 4), "k": rand(1, 300, 4), "v": rand(1, 300, 4)}
    model = one_node("LinearAttention", feeds, 2, 27, q_num_heads=1, kv_num_heads=1,
                     update_rule="linear")
    with pytest.raises(UnsupportedOpError, match="unrolls"):
        sw2c.compile(with_output_shapes(model, ReferenceEvaluator(model).run(None, feeds)))


# --- SwiGLU and TensorScatter --------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_swiglu(alpha):
    feeds = {"a": rand(3, 8), "b": rand(3, 8)}
    check(one_node("SwiGLU", feeds, 1, 28, alpha=alpha), feeds)


@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("shape, upd, axis", [((2, 3, 6, 4), 2, -2), ((3, 5, 2), 3, 1),
                                              ((2, 6), 1, 1)])
def test_tensor_scatter(mode, shape, upd, axis):
    size = shape[axis]
    ushape = list(shape)
    ushape[axis] = upd
    top = size + 3 if mode == "circular" else size - upd + 1  # circular indices wrap
    w = RNG.integers(0, top, shape[0]).astype(np.int64)
    feeds = {"past": rand(*shape), "upd": rand(*ushape), "w": w}
    check(one_node("TensorScatter", feeds, 1, 24, mode=mode, axis=axis), feeds)


# --- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("op, feeds, opset", [
    ("Unique", {"x": rand(6)}, 11),
    ("NonMaxSuppression", {"b": rand(1, 4, 4), "s": rand(1, 1, 4)}, 11),
])
def test_data_dependent_shapes_refused(op, feeds, opset):
    model = one_node(op, feeds, 1, opset)
    with pytest.raises(UnsupportedOpError, match="output shape depends on the values"):
        sw2c.compile(model)


def test_bitcast_runtime_refused():
    feeds = {"x": rand(4)}
    model = one_node("BitCast", feeds, 1, 26, to=onnx.TensorProto.INT32)
    with pytest.raises(UnsupportedOpError, match="reinterpreting the bits"):
        sw2c.compile(model)


# --- Det ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3, 3), (2, 2, 4, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_det(shape, dtype):
    feeds = {"x": rand(*shape, dtype=dtype)}
    check(one_node("Det", feeds, 1, 11), feeds)


def test_det_refusals():
    with pytest.raises(UnsupportedOpError, match="5x5"):
        sw2c.compile(one_node("Det", {"x": rand(5, 5)}, 1, 11))


# --- RoiAlign -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("grid, scale", [(1, 1.0), (2, 0.5), (3, 0.25)])
def test_roi_align(mode, ctm, grid, scale):
    n, c, h, w = 2, 3, 9, 11
    r = 6
    corner = RNG.uniform(-3, 12 / scale, (r, 2)).astype(np.float32)
    size = RNG.uniform(0.2, 8 / scale, (r, 2)).astype(np.float32)
    rois = np.concatenate([corner, corner + size], axis=1)
    rois[0] = (-6, -6, -2, -2)  # wholly outside: zeros
    feeds = {"x": rand(n, c, h, w), "rois": rois,
             "b": RNG.integers(0, n, r).astype(np.int64)}
    model = one_node("RoiAlign", feeds, 1, 16, mode=mode, coordinate_transformation_mode=ctm,
                     output_height=3, output_width=4, sampling_ratio=grid, spatial_scale=scale)
    check(model, feeds)
    if mode == "avg":  # onnxruntime's max mode is the reference's too, but check one oracle
        check(model, feeds, use_ort=True)


def test_roi_align_adaptive_grid_refused():
    feeds = {"x": rand(1, 1, 4, 4), "rois": rand(1, 4), "b": np.zeros(1, np.int64)}
    with pytest.raises(UnsupportedOpError, match="adaptive"):
        sw2c.compile(one_node("RoiAlign", feeds, 1, 16, sampling_ratio=0))


# --- DeformConv -----------------------------------------------------------------------------------
@pytest.mark.parametrize("groups, strides, pads, dilations", [
    (1, [1, 1], [0, 0, 0, 0], [1, 1]), (2, [2, 1], [1, 2, 0, 1], [1, 2]),
    (1, [1, 2], [2, 2, 2, 2], [2, 1])])
@pytest.mark.parametrize("extras", [False, True])
def test_deform_conv(groups, strides, pads, dilations, extras):
    n, c, h, w, m, k = 2, 4, 7, 6, 3, (3, 2)
    oh = (h + pads[0] + pads[2] - (k[0] - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - (k[1] - 1) * dilations[1] - 1) // strides[1] + 1
    feeds = {"x": rand(n, c, h, w), "w": rand(m, c, *k),
             "off": rand(n, groups * k[0] * k[1] * 2, oh, ow) * 2,
             "b": rand(m) if extras else None,
             "mask": rand(n, groups * k[0] * k[1], oh, ow) if extras else None}
    model = one_node("DeformConv", feeds, 1, 19, kernel_shape=list(k), offset_group=groups,
                     strides=strides, pads=pads, dilations=dilations)
    check(model, feeds)


# --- MaxPool's Indices output ---------------------------------------------------------------------
@pytest.mark.parametrize("shape, attrs", [
    ((2, 3, 7, 6), {"kernel_shape": [3, 2]}),
    ((1, 2, 7, 6), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 2, 8, 7), {"kernel_shape": [2, 2], "storage_order": 1, "strides": [2, 1]}),
    ((1, 2, 9, 9), {"kernel_shape": [2, 3], "dilations": [2, 2], "ceil_mode": 1,
                    "strides": [2, 2]}),
    ((2, 2, 10), {"kernel_shape": [3], "pads": [1, 2], "strides": [2]}),
    ((1, 2, 4, 5, 6), {"kernel_shape": [2, 2, 3]}),
])
def test_maxpool_indices(shape, attrs):
    x = rand(*shape)
    x[0, 0].flat[:4] = x[0, 0].flat[0]  # ties: the first one wins
    feeds = {"x": x}
    model = one_node("MaxPool", feeds, 2, 12, **attrs)
    model.graph.output[1].type.tensor_type.elem_type = onnx.TensorProto.INT64
    check(model, feeds, use_ort=True)
