"""Erf, Gelu, Elu, Selu, Celu, Softplus, Softsign, Mish, ThresholdedRelu and Shrink: the
generated float32 code against float64 references over the whole float range (erf's polynomial,
expm1, log1p), and each ONNX op against onnxruntime through the frontend and the compiler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sw2c
from onnx import helper
from sw2c.driver import compile_graph
from sw2c.errors import UnsupportedOpError
from sw2c.frontend import import_model
from sw2c.ir import Builder, Op, TensorType, Unary, Value
from sw2c.tests.onnx_util import check, make_model, node_model, with_output_shapes
from sw2c.tests.ulp_util import SPECIALS, f64, sweep, ulps


def compiled(fn: Unary, x: np.ndarray, **params: float) -> np.ndarray:
    """``fn`` over ``x`` (1-D) in generated code (vector body and scalar tail)."""
    b = Builder("g", [Value("x", TensorType(x.shape))])
    y = b.add(Op.UNARY, ["x"], fn=fn, **params)
    return compile_graph(b.finish([y]), "t", threads=1).run({"x": x})[y]


def test_erf_within_two_ulp_everywhere():
    """Measured: 1.25 ulp max over every 512th float32; here every 4096th plus a dense [-4, 4]."""
    x = np.concatenate([sweep(12), np.linspace(-4, 4, 200_001, dtype=np.float32)])
    got = compiled(Unary.ERF, x)
    nan = np.isnan(x)
    assert np.isnan(got[nan]).all()
    err = ulps(got[~nan], f64(math.erf, x[~nan]))
    assert err.max() <= 2.0, (err.max(), x[~nan][err.argmax()])
    assert got[x == np.inf].tolist() == [1.0] and got[x == -np.inf].tolist() == [-1.0]
    assert np.signbit(got[(x == 0) & np.signbit(x)]).all()  # erf(-0) = -0


def _exp64(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


@pytest.mark.parametrize("fn,ref,bound", [(Unary.EXP, _exp64, 1.0), (Unary.TANH, math.tanh, 2.5)])
def test_exp_and_tanh_polynomials_within_their_bounds(fn, ref, bound):
    """Measured: exp 0.95 ulp (denormal results within 0.74 of the smallest denormal), tanh
    2.4 ulp; overflow to inf and NaN propagation as libm's."""
    x = np.concatenate([sweep(12), np.linspace(-20, 20, 200_001, dtype=np.float32),
                        np.linspace(-104.5, -85, 50_001, dtype=np.float32),
                        np.linspace(85, 89, 50_001, dtype=np.float32)])
    got = compiled(fn, x)
    nan = np.isnan(x)
    assert np.isnan(got[nan]).all()
    want = f64(ref, x[~nan])
    got = got[~nan]
    normal = np.isfinite(want) & (np.abs(want) >= 1.1754942e-38) & (np.abs(want) < 3.4e38)
    err = ulps(got[normal], want[normal])
    assert err.max() <= bound, (err.max(), x[~nan][normal][err.argmax()])
    tiny = np.abs(want) < 1.1754942e-38  # denormal results: absolute error below one step
    assert np.all(np.abs(got[tiny] - want[tiny]) <= 1.5e-45)
    assert np.all(got[np.isinf(want)] == want[np.isinf(want)])


def _softplus64(v: float) -> float:
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def test_softplus_no_overflow_no_underflow():
    """log(1 + exp(x)) overflows for x > 88 and rounds to 0 below -17; this must not."""
    x = np.concatenate([sweep(14), np.linspace(-120, 120, 100_001, dtype=np.float32)])
    got = compiled(Unary.SOFTPLUS, x)
    ok = np.isfinite(x)
    ref = f64(_softplus64, x[ok])
    nonzero = ref.astype(np.float32) != 0  # below float32's smallest value the answer is 0
    assert ulps(got[ok][nonzero], ref[nonzero]).max() <= 4
    assert got[x == np.inf].tolist() == [np.inf] and got[x == -np.inf].tolist() == [0.0]
    assert np.isnan(got[np.isnan(x)]).all()
    assert got[x == np.float32(-30)][0] > 0  # 9.4e-14, not 0


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_elu_accurate_near_zero(alpha):
    """alpha * (exp(x) - 1) loses all digits for tiny negative x; Kahan's expm1 keeps them."""
    x = np.concatenate([sweep(14), -np.logspace(-30, 2, 10_001).astype(np.float32)])
    got = compiled(Unary.ELU, x, alpha=alpha)
    ok = np.isfinite(x)
    ref = np.where(x[ok] > 0, x[ok], alpha * f64(math.expm1, np.minimum(x[ok], 0)))
    ref = np.where(ref == 0, 0.0, ref)
    small = np.abs(ref) < 1.2e-38  # denormal results: absolute, not relative, accuracy
    assert ulps(got[ok][~small], ref[~small]).max() <= 4
    assert np.abs(got[ok][small] - ref[small]).max() <= 1e-44
    assert got[x == -np.inf].tolist() == [np.float32(-alpha)]
    assert np.isnan(got[np.isnan(x)]).all()


@pytest.mark.parametrize("fn, params", [
    (Unary.THRESHOLDED_RELU, {"alpha": 1.0}), (Unary.THRESHOLDED_RELU, {"alpha": -0.5}),
    (Unary.SHRINK, {"lambd": 0.5, "bias": 0.0}), (Unary.SHRINK, {"lambd": 1.5, "bias": 0.7}),
])
def test_thresholds_match_interpreter(fn, params):
    x = np.concatenate([np.linspace(-3, 3, 1201, dtype=np.float32), SPECIALS])
    b = Builder("g", [Value("x", TensorType(x.shape))])
    y = b.add(Op.UNARY, ["x"], fn=fn, **params)
    graph = b.finish([y])
    np.testing.assert_array_equal(compile_graph(graph, "t", threads=1).run({"x": x})[y],
                                  sw2c.ir.run(graph, {"x": x})[y])


# --- ONNX ops against onnxruntime ----------------------------------------------------------------
CASES = [
    ("Erf", 9, {}), ("Erf", 13, {}),
    ("Gelu", 20, {}), ("Gelu", 20, {"approximate": "none"}), ("Gelu", 20, {"approximate": "tanh"}),
    ("Softplus", 7, {}), ("Softplus", 22, {}), ("Softsign", 7, {}), ("Softsign", 22, {}),
    ("Elu", 7, {}), ("Elu", 22, {"alpha": 0.5}), ("Selu", 7, {}),
    ("Selu", 22, {"alpha": 1.5, "gamma": 2.0}), ("Celu", 12, {}), ("Celu", 22, {"alpha": 2.5}),
    ("Mish", 18, {}), ("Mish", 22, {}),
    ("ThresholdedRelu", 10, {}), ("ThresholdedRelu", 22, {"alpha": 0.2}),
    ("Shrink", 9, {}), ("Shrink", 9, {"lambd": 1.0, "bias": 0.3}),
]
WIDE = np.concatenate([np.linspace(-12, 12, 241), [-100, -40, -20, 20, 40, 100]]).astype(
    np.float32).reshape(1, -1)


@pytest.mark.parametrize("op, opset, attrs", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_op_matches_onnxruntime(op, opset, attrs):
    model = with_output_shapes(node_model(op, {"x": list(WIDE.shape)}, opset=opset, **attrs),
                               [WIDE])
    check(model, {"x": WIDE})  # the IR interpreter
    module = sw2c.compile(model, verify=True)  # the generated code, on random inputs
    np.testing.assert_allclose(module(WIDE), sw2c.ir.run(import_model(model), {"x": WIDE})[
        "y0"], rtol=1e-5, atol=1e-6)


def test_gelu_after_matmul():
    """MatMul + Gelu (a transformer's feed-forward) agrees with onnxruntime."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 24)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["h"]),
                        helper.make_node("Gelu", ["h"], ["y"])], {"x": [8, 16]}, ["y"],
                       {"w": w}, opset=20)
    model = with_output_shapes(model, [np.zeros((8, 24), np.float32)])
    sw2c.compile(model, verify=True)


def test_gelu_unknown_approximation_is_unsupported():
    model = node_model("Gelu", {"x": [2, 3]}, opset=20, approximate="fast")
    with pytest.raises(UnsupportedOpError, match="approximate"):
        import_model(model)
