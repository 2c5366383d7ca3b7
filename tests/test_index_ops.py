"""Index, loss, scatter and arithmetic ops on run-time float32/int64/int32 tensors: ArgMax/ArgMin,
Hardmax, TopK, OneHot, ReduceProd/ReduceLogSum (and every Reduce* with axes as an input),
NegativeLogLikelihoodLoss/SoftmaxCrossEntropyLoss, ScatterElements/ScatterND/Scatter, Mod,
CumSum/CumProd and Trilu. Each model is compiled and run natively and on the IR interpreter,
both against onnxruntime (ints exactly)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import pytest
import sw2c
from onnx import helper, numpy_helper
from sw2c import ir
from sw2c.errors import Sw2cError, UnsupportedOpError
from sw2c.frontend import import_model
from sw2c.tests.onnx_util import session

RNG = np.random.default_rng(2024)
I64 = np.iinfo(np.int64)


def rand(*shape: int) -> np.ndarray:
    return np.asarray(RNG.standard_normal(shape), np.float32)


def ints(lo: int, hi: int, *shape: int, dtype=np.int64) -> np.ndarray:
    return RNG.integers(lo, hi, shape).astype(dtype)


def build(op: str, feeds: Mapping[str, np.ndarray], inits: Mapping[str, np.ndarray] | None = None,
          n_out: int = 1, opset: int = 18, order: list[str] | None = None,
          **attrs) -> onnx.ModelProto:
    """One ``op`` node reading run-time ``feeds`` and constant ``inits`` (in ``order``, "" for
    an absent input, else feeds then inits); output types from ONNX shape inference."""
    inits = dict(inits or {})
    names = order if order is not None else [*feeds, *inits]
    outs = [f"y{i}" for i in range(n_out)]
    graph = helper.make_graph(
        [helper.make_node(op, names, outs, name=f"{op.lower()}_node", **attrs)], "t",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def check(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], rtol: float = 1e-5,
          atol: float = 1e-6) -> None:
    """sw2c (compiled, and the IR interpreter) against onnxruntime on ``feeds``."""
    want = session(model).run(None, dict(feeds))
    got_ir = ir.run(import_model(model), feeds)
    module = sw2c.compile(model, verify=False)
    got = module.run(dict(feeds))
    for (name, _, _), w in zip(module.outputs, want):
        for g in (got[name], got_ir[name]):
            assert g.dtype == w.dtype and g.shape == w.shape, (name, g.dtype, w.dtype)
            if w.dtype.kind == "f":
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=name)
            else:
                np.testing.assert_array_equal(g, w, err_msg=name)


# --- ArgMax / ArgMin / Hardmax ---------------------------------------------------------------
def _extremes(dtype) -> np.ndarray:
    """Data with ties and, for ints, the type's extremes (a float cast would merge them)."""
    if dtype == np.float32:
        x = np.round(rand(3, 4, 5) * 2)  # many ties
        x[0, 0, 0] = np.inf
        x[1, 2, 3] = -np.inf
        return x
    info = np.iinfo(dtype)
    x = ints(-3, 3, 3, 4, 5, dtype=dtype)
    x[0, 1, :2] = [info.max, info.max - 1]
    x[1, :2, 2] = [info.min + 1, info.min]
    x[2, 3, 0], x[2, 3, 1] = info.max - 1, info.max  # 2^63 - 1 vs - 2 differ in int64 only
    return x


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32])
@pytest.mark.parametrize("axis, keepdims, last", [(0, 1, 0), (1, 0, 0), (-1, 1, 1), (2, 0, 1)])
def test_arg_extreme(op, dtype, axis, keepdims, last):
    x = _extremes(dtype)
    check(build(op, {"x": x}, axis=axis, keepdims=keepdims, select_last_index=last), {"x": x})


def test_argmax_opset1_and_nan():
    """Opset 1 (no select_last_index); a NaN is the max of its slice, as numpy's argmax."""
    x = rand(4, 6)
    check(build("ArgMax", {"x": x}, opset=7, axis=1), {"x": x})
    x[1, 3] = x[2, 0] = np.nan
    module = sw2c.compile(build("ArgMax", {"x": x}, opset=13, axis=1, keepdims=0), verify=False)
    np.testing.assert_array_equal(module(x), np.argmax(x, axis=1))


@pytest.mark.parametrize("opset, axis, shape", [
    (11, 1, (2, 3, 4)), (11, 0, (3, 4)), (11, -1, (2, 3, 4)), (13, 1, (2, 3, 4)),
    (13, -1, (5, 7))])
def test_hardmax(opset, axis, shape):
    x = np.round(rand(*shape))  # ties: the first index wins
    check(build("Hardmax", {"x": x}, opset=opset, axis=axis), {"x": x})


# --- TopK --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32])
@pytest.mark.parametrize("k, axis, largest", [(3, -1, 1), (2, 1, 0), (3, 0, 1), (1, 2, 0)])
def test_topk(dtype, k, axis, largest):
    x = _extremes(dtype)
    check(build("TopK", {"x": x}, {"k": np.array([k], np.int64)}, n_out=2, opset=11, axis=axis,
                largest=largest), {"x": x})


def test_topk_opset1_attribute_k():
    x = rand(3, 8)
    check(build("TopK", {"x": x}, n_out=2, opset=7, k=3), {"x": x})


def test_topk_long_axis_refused():
    x = rand(1, 5000)
    with pytest.raises(UnsupportedOpError, match="5000 elements"):
        sw2c.compile(build("TopK", {"x": x}, {"k": np.array([2], np.int64)}, n_out=2),
                     verify=False)


# --- OneHot ------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(axis):
    idx = np.array([[0, 3, -1], [-4, 2, 5]], np.int64)  # -4 is 0, 5 is out of range
    values = np.array([-2.0, 7.0], np.float32)
    check(build("OneHot", {"i": idx}, {"depth": np.array(4, np.int64), "v": values}, opset=11,
                axis=axis), {"i": idx})


@pytest.mark.parametrize("idx_dtype, values", [(np.int32, np.array([5, 9], np.int64)),
                                               (np.float32, np.array([0.5, -1], np.float32))])
def test_one_hot_other_types(idx_dtype, values):
    """Index and value types onnxruntime lacks a kernel for: against numpy."""
    idx = np.array([1, 0, -1, 2.7, 3], idx_dtype)
    feeds = {"i": idx, "v": values}
    model = build("OneHot", feeds, {"depth": np.array([3.0], np.float32)},
                  order=["i", "depth", "v"])
    i = idx.astype(np.int64)
    want = np.where((i % 3)[:, None] == np.arange(3), values[1], values[0])
    want[i >= 3] = values[0]
    got = sw2c.compile(model, verify=False).run(feeds)["y0"]
    np.testing.assert_array_equal(got, want)
    assert got.dtype == values.dtype


# --- reductions --------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["ReduceProd", "ReduceLogSum"])
@pytest.mark.parametrize("opset, axes, keepdims", [(13, [1], 1), (13, None, 0), (18, [0, -1], 0),
                                                   (18, None, 1)])
def test_reduce_prod_log_sum(op, opset, axes, keepdims):
    x = np.abs(rand(3, 4, 5)) + 0.5
    if opset < 18:
        model = build(op, {"x": x}, opset=opset, keepdims=keepdims,
                      **({} if axes is None else {"axes": axes}))
    else:
        inits = {} if axes is None else {"axes": np.array(axes, np.int64)}
        model = build(op, {"x": x}, inits, opset=opset, keepdims=keepdims)
    check(model, {"x": x})


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_reduce_prod_ints(dtype):
    x = ints(-3, 4, 3, 4, dtype=dtype)
    check(build("ReduceProd", {"x": x}, {"axes": np.array([1], np.int64)}), {"x": x})


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                                "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum",
                                "ReduceLogSumExp"])
@pytest.mark.parametrize("axes", [[], [1]])
def test_reduce_axes_input_noop(op, axes):
    """Opset 18: axes as an input; an empty one with noop_with_empty_axes is the identity."""
    x = np.abs(rand(2, 3, 4)) + 0.5
    check(build(op, {"x": x}, {"axes": np.array(axes, np.int64)}, noop_with_empty_axes=1,
                keepdims=1), {"x": x})


# --- losses ------------------------------------------------------------------------------------
LOSS_CASES = [  # (scores shape, reduction, weight, ignore_index)
    ((4, 5), "mean", False, None), ((4, 5), "sum", True, None), ((4, 5), "none", False, 2),
    ((3, 4, 2), "mean", True, 1), ((3, 4, 2, 3), "mean", False, -1),
    ((2, 3, 2, 2), "none", True, 0), ((2, 3, 2, 2), "sum", False, 5)]


def _loss_model(op: str, shape, reduction, weight, ii, n_out=1):
    x = rand(*shape)
    if op == "NegativeLogLikelihoodLoss":
        x = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    t = ints(0, shape[1], shape[0], *shape[2:])
    if ii is not None:
        t.reshape(-1)[::3] = ii
    feeds = {"x": x, "t": t}
    inits = {"w": np.abs(rand(shape[1])) + 0.1} if weight else {}
    attrs = {"reduction": reduction, **({} if ii is None else {"ignore_index": ii})}
    return build(op, feeds, inits, n_out=n_out, opset=13, **attrs), feeds


@pytest.mark.parametrize("case", LOSS_CASES)
def test_nll_loss(case):
    check(*_loss_model("NegativeLogLikelihoodLoss", *case))


@pytest.mark.parametrize("case", LOSS_CASES)
def test_softmax_cross_entropy_loss(case):
    check(*_loss_model("SoftmaxCrossEntropyLoss", *case, n_out=2), rtol=1e-4, atol=1e-5)


def test_nll_runtime_weight_int32_target():
    x, t, w = rand(4, 3), np.array([0, 2, 1, 2], np.int32), np.abs(rand(3))
    check(build("NegativeLogLikelihoodLoss", {"x": x, "t": t, "w": w}, opset=13),
          {"x": x, "t": t, "w": w})


# --- scatter -----------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements(reduction, dtype, axis):
    data = (rand(4, 5) * 4).astype(dtype)
    shape = [2, 3] if axis == 0 else [3, 2]
    idx = ints(-4, 4, *shape)  # negative ones count back; duplicates likely
    if reduction == "none":  # duplicates are undefined without a reduction
        idx = np.argsort(RNG.random(shape), axis=axis) - RNG.integers(0, 2, shape) * 4
    upd = (rand(*shape) * 4).astype(dtype)
    feeds = {"d": data, "i": idx, "u": upd}
    check(build("ScatterElements", feeds, axis=axis, reduction=reduction), feeds)


def test_scatter_elements_duplicate_last_wins_and_constant_indices():
    data, upd = rand(1, 5), rand(1, 3)
    model = build("ScatterElements", {"d": data, "u": upd}, {"i": np.array([[1, 3, 1]])},
                  order=["d", "i", "u"], axis=1)
    want = data.copy()
    want[0, 3], want[0, 1] = upd[0, 1], upd[0, 2]
    np.testing.assert_array_equal(sw2c.compile(model, verify=False)(data, upd), want)


def test_scatter_opset9():
    data, idx, upd = rand(3, 3), np.array([[1, 0, 2], [0, 2, 1]], np.int64), rand(2, 3)
    feeds = {"d": data, "i": idx, "u": upd}
    check(build("Scatter", feeds, opset=9, axis=0), feeds)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("ishape, ushape", [((2, 1), (2, 4, 3)), ((3, 2), (3, 3)),
                                            ((2, 2, 3), (2, 2))])
def test_scatter_nd(reduction, dtype, ishape, ushape):
    data = (rand(4, 4, 3) * 4).astype(dtype)
    k = ishape[-1]
    if reduction == "none":  # distinct index tuples
        flat = RNG.permutation(int(np.prod(data.shape[:k])))[:int(np.prod(ishape[:-1]))]
        idx = np.stack(np.unravel_index(flat, data.shape[:k]), -1).reshape(ishape)
        idx = np.where(RNG.random(idx.shape) < 0.3, idx - np.array(data.shape[:k]), idx)
    else:
        idx = np.stack([ints(-d, d, *ishape[:-1]) for d in data.shape[:k]], -1)
    upd = (rand(*ushape) * 4).astype(dtype)
    feeds = {"d": data, "i": idx.astype(np.int64), "u": upd}
    check(build("ScatterND", feeds, reduction=reduction), feeds)


def test_scatter_too_large_refused():
    data, idx, upd = rand(64, 512), np.zeros((64, 512), np.int64), rand(64, 512)
    with pytest.raises(UnsupportedOpError, match="comparisons"):
        sw2c.compile(build("ScatterElements", {"d": data, "i": idx, "u": upd},
                           reduction="add"), verify=False)


# --- Mod, CumSum, CumProd, Trilu -------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32])
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod(dtype, fmod):
    if dtype == np.float32:
        a = np.array([-4.3, 7.2, 5, 4.3, -7.2, 8, 0, -0.0, -3, 1e30, 6, -6], dtype)
        b = np.array([2.1, -3.4, 8, -2.1, 3.4, 5, -2, 2, np.inf, 3, 3, 3], dtype)
    else:
        info = np.iinfo(dtype)
        a = np.array([-4, 7, 5, 4, -7, 8, 0, info.min, info.max, -9, 9, 3], dtype)
        b = np.array([3, -3, 8, -2, 3, 5, -2, 7, -5, -9, 4, -1], dtype)
    feeds = {"a": a, "b": b}
    model = build("Mod", feeds, opset=13, fmod=fmod)
    if fmod or dtype != np.float32:  # onnxruntime: float fmod=0 from opset 28 only
        check(model, feeds)
    got = sw2c.compile(model, verify=False).run(feeds)["y0"]
    with np.errstate(all="ignore"):
        want = np.fmod(a, b) if fmod else np.mod(a, b)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_mod_int_divisor_zero_is_zero():
    a, b = np.array([5, -3, 0], np.int64), np.array([0, 0, 0], np.int64)
    module = sw2c.compile(build("Mod", {"a": a, "b": b}, opset=13), verify=False)
    np.testing.assert_array_equal(module(a, b), [0, 0, 0])


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32])
@pytest.mark.parametrize("axis, exclusive, reverse", [(0, 0, 0), (1, 1, 0), (-1, 0, 1),
                                                      (1, 1, 1)])
def test_cumulative(op, dtype, axis, exclusive, reverse):
    if op == "CumProd" and onnx.defs.onnx_opset_version() < 26:
        pytest.skip("CumProd is opset 26")
    x = (rand(3, 7) * 3).astype(dtype) if op == "CumSum" else ints(-2, 3, 3, 7, dtype=dtype)
    if op == "CumProd" and dtype == np.float32:
        x = (rand(3, 7) + 1).astype(dtype)
    model = build(op, {"x": x}, {"axis": np.array(axis, np.int64)},
                  opset=26 if op == "CumProd" else 14, exclusive=exclusive, reverse=reverse)
    if op == "CumProd":  # onnxruntime may lack CumProd: compare with numpy
        m = x if not reverse else np.flip(x, axis)
        n = m.shape[axis]
        if exclusive:
            ones = np.ones_like(np.take(m, [0], axis))
            m = np.concatenate([ones, np.take(m, range(n - 1), axis)], axis)
        want = np.cumprod(m, axis=axis, dtype=dtype)
        want = np.flip(want, axis) if reverse else want
        got = sw2c.compile(model, verify=False)(x)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert got.dtype == want.dtype
        return
    check(model, {"x": x}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("upper, k", [(1, 0), (0, 0), (1, -1), (0, 2), (1, 9)])
def test_trilu(dtype, upper, k):
    x = (rand(2, 4, 5) * 5).astype(dtype)
    check(build("Trilu", {"x": x}, {"k": np.array(k, np.int64)}, opset=14, upper=upper),
          {"x": x})


# --- errors ----------------------------------------------------------------------------------
def test_runtime_parameters_refused():
    """k, depth and axis must be constants (they fix output shapes): a clear refusal."""
    x, k = rand(3, 4), np.array([2], np.int64)
    with pytest.raises(UnsupportedOpError, match="k"):
        sw2c.compile(build("TopK", {"x": x, "k": k}, n_out=2), verify=False)
    i, depth = np.array([1, 2], np.int64), np.array(3, np.int64)
    with pytest.raises(UnsupportedOpError, match="depth"):
        sw2c.compile(build("OneHot", {"i": i, "depth": depth},
                           {"v": np.array([0, 1], np.float32)}), verify=False)


def test_bad_target_shape_is_model_error():
    model = build("NegativeLogLikelihoodLoss", {"x": rand(3, 4), "t": np.zeros(3, np.int64)},
                  opset=13)
    model.graph.input[1].type.tensor_type.shape.dim[0].dim_value = 2
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    with pytest.raises(Sw2cError, match="target"):
        import_model(model)


def test_reduce_then_wider_cast_is_not_clobbered():
    """A float32 reduction followed by a cast to int64: the reduce kernel accumulates in its
    output buffer, so the wider epilogue must not fuse into it (it would overwrite sums not
    yet read); every row's maximum comes out."""
    x = np.arange(24, dtype=np.float32).reshape(6, 4)[::-1].copy()
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["x"], ["m"], axes=[1]),
         helper.make_node("Cast", ["m"], ["y"], to=onnx.TensorProto.INT64)], "t",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [6, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.INT64, [6, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    np.testing.assert_array_equal(sw2c.compile(model, verify=False)(x), x.max(1, keepdims=True))


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_reduce_min_int_extremes(dtype):
    """min = ~max(~x) on ints: -max(-x) would wrap at the type's minimum."""
    info = np.iinfo(dtype)
    x = np.array([[info.min, 5, 3], [info.max, -2, info.min + 1]], dtype)
    check(build("ReduceMin", {"x": x}, {"axes": np.array([1], np.int64)}), {"x": x})
