"""Trigonometric/hyperbolic functions, Floor/Ceil/Round, Sign, IsNaN, IsInf and Swish: the
generated float32 code against float64 numpy over the whole float range (specials, denormals),
and each ONNX op against onnxruntime through the frontend and the compiler."""

from __future__ import annotations

import numpy as np
import pytest
import sw2c
from onnx import TensorProto, helper
from sw2c.driver import compile_graph
from sw2c.ir import Builder, Op, TensorType, Unary, Value
from sw2c.tests.onnx_util import session

SPECIALS = np.float32([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38,
                       -1.1754942e-38, 3.4028235e38, -3.4028235e38, 0.5, -0.5, 1.5, 2.5, -2.5,
                       1.0, -1.0, 8388607.5, -8388609.0])


def compiled(fn: Unary, x: np.ndarray) -> np.ndarray:
    """``fn`` over ``x`` (1-D) in generated code (vector body and scalar tail)."""
    b = Builder("g", [Value("x", TensorType(x.shape))])
    y = b.add(Op.UNARY, ["x"], fn=fn)
    return compile_graph(b.finish([y]), "t", threads=1).run({"x": x})[y]


def sweep(step_bits: int) -> np.ndarray:
    """Every 2**step_bits-th float32 bit pattern, both signs, finite ones, and the specials."""
    x = np.arange(0, 0x7F800000, 1 << step_bits, dtype=np.uint32).view(np.float32)
    return np.concatenate([x, -x, SPECIALS, np.linspace(-10, 10, 20_001, dtype=np.float32)])


def ulps(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|got - ref| in units of the float32 spacing at ref (ref in float64)."""
    with np.errstate(over="ignore"):
        spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / spacing


LIBM = [(Unary.SIN, np.sin), (Unary.COS, np.cos), (Unary.TAN, np.tan), (Unary.ASIN, np.arcsin),
        (Unary.ACOS, np.arccos), (Unary.ATAN, np.arctan), (Unary.SINH, np.sinh),
        (Unary.COSH, np.cosh), (Unary.ASINH, np.arcsinh), (Unary.ACOSH, np.arccosh),
        (Unary.ATANH, np.arctanh)]


@pytest.mark.parametrize("fn, ref", LIBM, ids=[f.value for f, _ in LIBM])
def test_libm_functions_within_two_ulp(fn, ref):
    x = sweep(14)
    got = compiled(fn, x)
    with np.errstate(all="ignore"):
        want = ref(x.astype(np.float64))
        rounded = want.astype(np.float32)
    # NaN and infinities exactly where float64 numpy has them (domain errors, overflow)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(rounded))
    np.testing.assert_array_equal(got[np.isinf(rounded)], rounded[np.isinf(rounded)])
    ok = np.isfinite(rounded) & (np.abs(rounded) >= 1.2e-38)
    err = ulps(got[ok], want[ok])
    assert err.max() <= 2.0, (err.max(), x[ok][err.argmax()])
    tiny = np.isfinite(rounded) & ~ok  # denormal results: absolute accuracy
    assert np.abs(got[tiny] - want[tiny]).max(initial=0) <= 3e-45


@pytest.mark.parametrize("fn, ref", [(Unary.FLOOR, np.floor), (Unary.CEIL, np.ceil),
                                     (Unary.ROUND, np.round)], ids=["floor", "ceil", "round"])
def test_rounding_exact(fn, ref):
    x = sweep(12)
    got = compiled(fn, x)
    np.testing.assert_array_equal(got, ref(x))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(ref(x)))  # -0.5 -> -0
    assert compiled(Unary.ROUND, np.float32([0.5, 1.5, 2.5, -2.5])).tolist() == [0, 2, 2, -2]


# --- ONNX ops against onnxruntime ----------------------------------------------------------------
def _model(op: str, opset: int, dtype: int, out_dtype: int, shape: tuple[int, ...], **attrs):
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], name="n", **attrs)], "t",
        [helper.make_tensor_value_info("x", dtype, shape)],
        [helper.make_tensor_value_info("y", out_dtype, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


F, B, I64, I32 = TensorProto.FLOAT, TensorProto.BOOL, TensorProto.INT64, TensorProto.INT32
DATA = np.concatenate([SPECIALS, np.linspace(-3, 3, 61, dtype=np.float32)]).reshape(9, 9)
CASES = [(op, opset, F, F, {}) for op in ("Sin", "Cos", "Tan", "Atan", "Sinh", "Cosh", "Asinh")
         for opset in (7, 22) if not (op in ("Sinh", "Cosh", "Asinh") and opset == 7)] + [
    ("Asin", 7, F, F, {}), ("Acos", 22, F, F, {}), ("Acosh", 9, F, F, {}),
    ("Atanh", 22, F, F, {}), ("Floor", 7, F, F, {}), ("Floor", 13, F, F, {}),
    ("Ceil", 13, F, F, {}), ("Round", 11, F, F, {}), ("Round", 22, F, F, {}),
    ("Sign", 9, F, F, {}), ("Sign", 13, I64, I64, {}), ("Sign", 13, I32, I32, {}),
    ("IsNaN", 9, F, B, {}), ("IsNaN", 20, F, B, {}), ("IsInf", 10, F, B, {}),
    ("IsInf", 20, F, B, {"detect_positive": 0}), ("IsInf", 20, F, B, {"detect_negative": 0}),
    ("IsInf", 20, F, B, {"detect_negative": 0, "detect_positive": 0}),
    ("Swish", 24, F, F, {}), ("Swish", 24, F, F, {"alpha": 0.7}),
]


@pytest.mark.parametrize("op, opset, dtype, out_dtype, attrs", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[4]}" for c in CASES])
def test_op_matches_onnxruntime(op, opset, dtype, out_dtype, attrs):
    ints = np.arange(-40, 41).reshape(9, 9) * 1000003
    x = DATA if dtype == F else ints.astype(np.int64 if dtype == I64 else np.int32)
    model = _model(op, opset, dtype, out_dtype, x.shape, **attrs)
    module = sw2c.compile(model)
    got = module.run({"x": x})["y"]
    if op == "Swish":  # onnxruntime has no Swish kernel yet: its definition, in float64
        x64 = x.astype(np.float64)
        with np.errstate(all="ignore"):
            want = x64 / (1 + np.exp(-attrs.get("alpha", 1.0) * x64))
    else:
        want = session(model).run(None, {"x": x})[0]
    assert got.dtype == want.dtype or op == "Swish"
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_floor_of_ints_is_refused():
    with pytest.raises(sw2c.Sw2cError, match="floor"):
        sw2c.compile(_model("Floor", 13, I64, I64, (3,)))
