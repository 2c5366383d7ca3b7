"""LpPool, LpNormalization, MeanVarianceNormalization, Compress, ReverseSequence, CenterCropPad,
Col2Im, MaxUnpool, GridSample, AffineGrid, DFT, STFT, Dropout's mask and BatchNormalization in
training mode: each compiled by sw2c and compared with onnxruntime (or, where onnxruntime has no
kernel for it, ONNX's reference implementation)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import sw2c
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from sw2c.tests.onnx_util import session

RNG = np.random.default_rng(0)


def _rand(*shape: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def _model(op: str, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray | None],
           n_out: int, opset: int, **attrs) -> onnx.ModelProto:
    """One ``op`` node reading ``feeds`` (graph inputs) then ``consts`` (initializers; None is
    an absent optional input), outputs y0.. without declared types."""
    names = [*feeds, *(k if v is not None else "" for k, v in consts.items())]
    while names and not names[-1]:  # trailing absent inputs are left out
        names.pop()
    outs = [f"y{i}" for i in range(n_out)]
    graph = helper.make_graph(
        [helper.make_node(op, names, outs, name="n", **attrs)], "t",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in feeds.items()],
        [helper.make_value_info(o, onnx.TypeProto()) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in consts.items() if v is not None])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _expected(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
              reference: bool = False) -> list[np.ndarray]:
    """onnxruntime's outputs, or ONNX's reference implementation's with ``reference`` or
    where onnxruntime has no kernel for the node."""
    if not reference:
        try:
            return session(model).run(None, feeds)
        except Exception:  # noqa: BLE001 (no onnxruntime kernel)
            pass
    with np.errstate(divide="ignore"):  # its AffineGrid divides by 0 on a size-1 axis
        return ReferenceEvaluator(model).run(None, feeds)


def run_case(op: str, feeds: dict[str, np.ndarray], consts: dict | None = None,
             n_out: int = 1, opset: int = 18, rtol: float = 1e-4, atol: float = 1e-5,
             reference: bool = False, **attrs) -> None:
    model = _model(op, feeds, consts or {}, n_out, opset, **attrs)
    want = _expected(model, feeds, reference)
    for vi, w in zip(model.graph.output, want):  # declare the outputs as the oracle gives them
        vi.CopyFrom(helper.make_tensor_value_info(
            vi.name, helper.np_dtype_to_tensor_dtype(np.asarray(w).dtype), np.shape(w)))
    got = sw2c.compile(model, verify=False).run(feeds)
    for vi, w in zip(model.graph.output, want):
        np.testing.assert_allclose(got[vi.name], w, rtol=rtol, atol=atol, err_msg=vi.name)
        assert got[vi.name].dtype == np.asarray(w).dtype


# --- pooling and normalization ------------------------------------------------------------------
LP_POOL = [
    (11, {"kernel_shape": [3, 3], "p": 2}),
    (11, {"kernel_shape": [3, 3], "p": 1, "strides": [2, 2], "pads": [1, 0, 1, 2]}),
    (11, {"kernel_shape": [2, 3], "p": 3, "auto_pad": "SAME_UPPER"}),
    (11, {"kernel_shape": [3, 2], "auto_pad": "SAME_LOWER", "strides": [2, 1]}),
    (18, {"kernel_shape": [2, 2], "dilations": [2, 2], "p": 2}),
    (18, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "p": 2}),
    (22, {"kernel_shape": [2, 2], "strides": [2, 2], "p": 4}),
]


@pytest.mark.parametrize("opset, attrs", LP_POOL, ids=[str(a) for _, a in LP_POOL])
def test_lp_pool(opset, attrs):
    run_case("LpPool", {"x": _rand(2, 3, 7, 8)}, opset=opset, **attrs)


def test_lp_pool_1d_and_3d():
    run_case("LpPool", {"x": _rand(1, 2, 9)}, kernel_shape=[3], p=2, strides=[2])
    run_case("LpPool", {"x": _rand(1, 2, 4, 5, 6)}, kernel_shape=[2, 2, 3], p=1)


@pytest.mark.parametrize("p, axis", [(1, 0), (2, 1), (2, -1), (1, -1)])
def test_lp_normalization(p, axis):
    x = _rand(3, 4, 5)
    x[1, :, 2] = 0  # a zero norm gives 0, not NaN
    x[:, 1, :] = 0
    x[0, 0, :] = 0
    run_case("LpNormalization", {"x": x}, p=p, axis=axis, opset=13)


@pytest.mark.parametrize("opset, attrs", [(9, {}), (13, {"axes": [1]}), (13, {"axes": [2, 3]}),
                                          (13, {"axes": [0, 1, 2, 3]})])
def test_mean_variance_normalization(opset, attrs):
    run_case("MeanVarianceNormalization", {"x": _rand(2, 3, 4, 5) + 3}, opset=opset, **attrs)


# --- selections by constant indices -------------------------------------------------------------
@pytest.mark.parametrize("axis, cond", [(0, [1, 0, 1]), (1, [0, 1, 1, 0]), (-1, [1, 0, 1]),
                                        (None, [0, 1, 0, 0, 1, 1, 0, 1]), (1, [0, 1])])
def test_compress(axis, cond):
    attrs = {} if axis is None else {"axis": axis}
    run_case("Compress", {"x": _rand(3, 4, 5)}, {"c": np.array(cond, bool)}, opset=11, **attrs)


@pytest.mark.parametrize("time_axis, batch_axis", [(0, 1), (1, 0)])
def test_reverse_sequence(time_axis, batch_axis):
    x = _rand(4, 3, 2) if time_axis == 0 else _rand(3, 4, 2)
    run_case("ReverseSequence", {"x": x}, {"lens": np.array([4, 1, 2], np.int64)}, opset=10,
             time_axis=time_axis, batch_axis=batch_axis)


@pytest.mark.parametrize("shape, axes", [([3, 5, 4], None), ([6, 2, 9], None),
                                         ([2, 7], [1, -1]), ([5], [0])])
def test_center_crop_pad(shape, axes):
    attrs = {} if axes is None else {"axes": axes}
    run_case("CenterCropPad", {"x": _rand(4, 5, 6)}, {"s": np.array(shape, np.int64)},
             **attrs)


# --- Col2Im and MaxUnpool -------------------------------------------------------------------------
@pytest.mark.parametrize("image, block, attrs", [
    ([5, 5], [2, 2], {}),
    ([6, 7], [3, 2], {"strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [1, 2]}),
    ([4, 5, 3], [2, 2, 2], {"strides": [1, 2, 1]}),
])
def test_col2im(image, block, attrs):
    n = len(image)
    strides, dil = attrs.get("strides", [1] * n), attrs.get("dilations", [1] * n)
    pads = attrs.get("pads", [0] * 2 * n)
    blocks = [(i + pads[a] + pads[n + a] - (k - 1) * dil[a] - 1) // strides[a] + 1
              for a, (i, k) in enumerate(zip(image, block))]
    x = _rand(2, 3 * int(np.prod(block)), int(np.prod(blocks)))
    run_case("Col2Im", {"x": x}, {"i": np.array(image, np.int64),
                                  "b": np.array(block, np.int64)}, **attrs)


@pytest.mark.parametrize("output_shape", [None, [1, 2, 6, 7]])
def test_max_unpool(output_shape):
    x = _rand(1, 2, 3, 3)
    idx = np.array([[[[1, 2, 11], [13, 20, 22], [25, 26, 30]],
                     [[37, 39, 47], [48, 50, 52], [61, 62, 65]]]], np.int64)
    shape = None if output_shape is None else np.array(output_shape, np.int64)
    # with output_shape, onnxruntime reads the indices as positions in that shape; ONNX's
    # definition (and its node test, which sw2c passes) in the unpooled shape, padded after
    run_case("MaxUnpool", {"x": x}, {"i": idx, "s": shape}, opset=11, kernel_shape=[2, 2],
             strides=[2, 2], reference=shape is not None)


# --- GridSample and AffineGrid --------------------------------------------------------------------
GRID = [(opset, mode, pad, align) for opset, modes in ((16, ("bilinear", "nearest", "bicubic")),
                                                      (20, ("linear", "nearest", "cubic")))
        for mode in modes for pad in ("zeros", "border", "reflection") for align in (0, 1)]


@pytest.mark.parametrize("opset, mode, padding, align", GRID,
                         ids=[f"{o}-{m}-{p}-{a}" for o, m, p, a in GRID])
def test_grid_sample_2d(opset, mode, padding, align):
    x = _rand(2, 3, 5, 6)
    grid = _rand(2, 4, 7, 2, lo=-1.7, hi=1.7)  # outside [-1, 1] too: the padding modes
    grid[0, 0, :3] = [[-1, -1], [1, 1], [0.5, -0.25]]  # exact corners and half-pixel ties
    # onnxruntime's bicubic border padding clamps positions inside [-0.5, size - 0.5] too,
    # unlike ONNX's definition (and its node tests), which sw2c follows
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    if mode not in ("cubic", "bicubic") or padding != "border":
        run_case("GridSample", {"x": x, "g": grid}, opset=opset, rtol=1e-4, atol=2e-5, **attrs)
        return
    # ONNX's reference knows the opset-20 names only
    want = _expected(_model("GridSample", {"x": x, "g": grid}, {}, 1, 20,
                            **{**attrs, "mode": "cubic"}), {"x": x, "g": grid}, True)[0]
    model = _declared(_model("GridSample", {"x": x, "g": grid}, {}, 1, opset, **attrs),
                      list(want.shape))
    got = sw2c.compile(model, verify=False).run({"x": x, "g": grid})["y0"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("mode, padding", [("linear", "zeros"), ("nearest", "border"),
                                           ("linear", "reflection")])
def test_grid_sample_3d(mode, padding):
    run_case("GridSample", {"x": _rand(1, 2, 3, 4, 5), "g": _rand(1, 2, 3, 4, 3, lo=-1.3,
                                                                  hi=1.3)},
             opset=20, mode=mode, padding_mode=padding)


@pytest.mark.parametrize("size, align", [([2, 3, 4, 5], 0), ([2, 3, 4, 5], 1),
                                         ([1, 2, 3, 4, 2], 0), ([1, 2, 3, 1, 2], 1)])
def test_affine_grid(size, align):
    n = len(size) - 2
    run_case("AffineGrid", {"theta": _rand(size[0], n, n + 1)},
             {"size": np.array(size, np.int64)}, opset=20, align_corners=align,
             reference=1 in size[2:])  # a size-1 axis: onnxruntime puts it at 0, ONNX at -1


# --- DFT and STFT ---------------------------------------------------------------------------------
DFT = [
    (17, 2, {}, None), (17, 1, {"axis": 1}, None), (17, 2, {"axis": 2}, None),
    (17, 1, {"onesided": 1}, None), (17, 2, {"inverse": 1}, None),
    (17, 2, {"inverse": 1, "onesided": 1}, None), (17, 1, {}, 12), (17, 2, {}, 5),
    (20, 2, {}, None), (20, 1, {"onesided": 1}, 9), (20, 2, {"inverse": 1}, 10),
]


@pytest.mark.parametrize("opset, c, attrs, length", DFT, ids=[str(d) for d in DFT])
def test_dft(opset, c, attrs, length):
    x = _rand(2, 8, 6, c) * 3
    consts = {"n": None if length is None else np.array(length, np.int64)}
    if opset >= 20:
        consts["axis"] = np.array(1, np.int64)
    run_case("DFT", {"x": x}, consts, opset=opset, rtol=1e-4, atol=2e-5, **attrs)


@pytest.mark.parametrize("c, window, frame_length, onesided", [
    (1, True, None, 1), (1, False, 8, 1), (2, True, None, 0), (1, True, 8, 0)])
def test_stft(c, window, frame_length, onesided):
    feeds = {"x": _rand(2, 30, c)}
    if window:
        feeds["w"] = np.hanning(8).astype(np.float32)
    consts = {"step": np.array(3, np.int64)}
    if frame_length is not None:
        consts["len"] = np.array(frame_length, np.int64)
    names = ["x", "step", "w" if window else "", "len" if frame_length is not None else ""]
    graph = helper.make_graph(
        [helper.make_node("STFT", names, ["y"], onesided=onesided)], "t",
        [helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, v.shape)
         for k, v in feeds.items()],
        [helper.make_value_info("y", onnx.TypeProto())],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    want = _expected(model, feeds)[0]
    model.graph.output[0].CopyFrom(
        helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, want.shape))
    got = sw2c.compile(model, verify=False).run(feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def _declared(model: onnx.ModelProto, shape: list[int]) -> onnx.ModelProto:
    model.graph.output[0].CopyFrom(
        helper.make_tensor_value_info("y0", onnx.TensorProto.FLOAT, shape))
    return model


def test_dft_too_large_is_refused():
    model = _declared(_model("DFT", {"x": _rand(1, 8192, 2)}, {}, 1, 17), [1, 8192, 2])
    with pytest.raises(sw2c.UnsupportedOpError, match="too large"):
        sw2c.compile(model)


# --- training outputs ----------------------------------------------------------------------------
def test_dropout_mask_is_all_true():
    run_case("Dropout", {"x": _rand(2, 3, 4)}, {"r": np.array(0.3, np.float32)}, n_out=2,
             opset=13)
    model = _declared(_model("Dropout", {"x": _rand(2, 3)}, {}, 2, 7), [2, 3])
    model.graph.output[1].CopyFrom(
        helper.make_tensor_value_info("y1", onnx.TensorProto.FLOAT, [2, 3]))
    with pytest.raises(sw2c.UnsupportedOpError, match="mask output before opset 10"):
        sw2c.compile(model)


@pytest.mark.parametrize("n_out, attrs", [(1, {}), (3, {}), (3, {"momentum": 0.5,
                                                                   "epsilon": 1e-2})])
def test_batch_norm_training(n_out, attrs):
    c = 3
    consts = {k: _rand(c, lo=0.5, hi=1.5) for k in ("s", "b", "m", "v")}
    run_case("BatchNormalization", {"x": _rand(2, c, 4, 5) * 2 + 1}, consts, n_out=n_out,
             opset=15, training_mode=1, **attrs)


# --- refusals ------------------------------------------------------------------------------------
def test_grid_sample_unknown_mode_is_a_model_error():
    model = _declared(_model("GridSample", {"x": _rand(1, 1, 3, 3), "g": _rand(1, 2, 2, 2)},
                             {}, 1, 16, mode="area"), [1, 1, 2, 2])
    with pytest.raises(sw2c.ModelError, match="mode"):
        sw2c.compile(model)


def test_compress_run_time_condition_is_unsupported():
    model = _declared(_model("Compress", {"x": _rand(3, 4), "c": np.ones(3, bool)}, {}, 1, 11,
                             axis=0), [3, 4])
    with pytest.raises(sw2c.UnsupportedOpError, match="condition"):
        sw2c.compile(model)
