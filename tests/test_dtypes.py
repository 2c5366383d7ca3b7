"""Every element type ONNX models use at run time (float16/32/64, int8..64, uint8..64, bool):
elementwise ops, matmuls and reductions compared with onnxruntime (integers exactly), float16
rounding compared with numpy's per-op definition, and the legalization pass checked by the
interpreter before and after."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import sw2c
from onnx import helper as h
from sw2c.ir.interp import run
from sw2c.passes.legalize_types import legalize_types
from sw2c.runtime.verify import reference_session

INTS = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]


def one_node(op: str, dtype: str, shapes: list[tuple[int, ...]], opset: int = 17,
             **attrs) -> onnx.ModelProto:
    elem = h.np_dtype_to_tensor_dtype(np.dtype(dtype))
    names = [f"x{i}" for i in range(len(shapes))]
    g = h.make_graph([h.make_node(op, names, ["y"], **attrs)], "g",
                     [h.make_tensor_value_info(n, elem, s) for n, s in zip(names, shapes)],
                     [h.make_tensor_value_info("y", 0, None)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(m)


def feeds(model: onnx.ModelProto, seed: int = 0, wide: bool = True) -> dict[str, np.ndarray]:
    """Random inputs; integers over the whole type when ``wide`` (so sums and products wrap)."""
    rng = np.random.default_rng(seed)
    out = {}
    for vi in model.graph.input:
        dt = h.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dt.kind == "f":
            out[vi.name] = (rng.standard_normal(shape) * 3).astype(dt)
        else:
            info = np.iinfo(dt)
            lo, hi = (info.min, info.max) if wide else (max(info.min, -9), min(info.max, 9))
            out[vi.name] = rng.integers(lo, hi, shape, dtype=dt, endpoint=True)
    return out


def check(model: onnx.ModelProto, x: dict[str, np.ndarray], rtol: float = 1e-6) -> None:
    got = sw2c.compile(model, verify=False).run(x)["y"]
    want = reference_session(model).run(["y"], x)[0]
    assert got.dtype == want.dtype
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", INTS)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_integer_arithmetic_wraps_like_onnxruntime(op: str, dtype: str) -> None:
    m = one_node(op, dtype, [(4, 33), (4, 33)])
    x = feeds(m)
    if op == "Div":  # ONNX leaves x / 0 undefined
        x["x1"][x["x1"] == 0] = 1
    check(m, x)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "uint32", "int64", "uint64"])
def test_integer_max_min_compare_unsigned_types_as_unsigned(dtype: str) -> None:
    for op in ("Max", "Min"):
        m = one_node(op, dtype, [(3, 17), (3, 17)])
        check(m, feeds(m))
    m = one_node("Less", dtype, [(3, 17), (3, 17)])
    x = feeds(m)
    got = sw2c.compile(m).run(x)["y"]
    np.testing.assert_array_equal(got, x["x0"] < x["x1"])


@pytest.mark.parametrize("dtype", ["int32", "int64", "float64", "float16"])
def test_matmul_of_each_type(dtype: str) -> None:
    m = one_node("MatMul", dtype, [(2, 5, 7), (7, 3)])
    check(m, feeds(m, wide=False), rtol=2.0**-9 if dtype == "float16" else 1e-12)


@pytest.mark.parametrize("dtype", ["int32", "int64", "float64", "float16"])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax"])
def test_reductions_of_each_type(op: str, dtype: str) -> None:
    m = one_node(op, dtype, [(3, 6, 5)], opset=11, axes=[1], keepdims=1)
    check(m, feeds(m, wide=False), rtol=2.0**-9 if dtype == "float16" else 1e-12)


@pytest.mark.parametrize("op", ["Exp", "Tanh", "Sigmoid", "Erf", "Sqrt", "Log", "Softplus"])
def test_float64_functions_are_double_accurate(op: str) -> None:
    m = one_node(op, "float64", [(4, 9)])
    x = {"x0": np.abs(feeds(m)["x0"]) + 0.01}
    got = sw2c.compile(m, verify=False).run(x)["y"]

    ref = {"Exp": np.exp, "Tanh": np.tanh, "Sigmoid": lambda v: 1 / (1 + np.exp(-v)),
           "Erf": np.vectorize(math.erf), "Sqrt": np.sqrt, "Log": np.log,
           "Softplus": lambda v: np.log1p(np.exp(v))}[op]
    np.testing.assert_allclose(got, ref(x["x0"]), rtol=1e-13)


@pytest.mark.parametrize("op", ["Add", "Mul", "Div", "Sub"])
def test_float16_arithmetic_rounds_each_op_like_numpy(op: str) -> None:
    m = one_node(op, "float16", [(8, 31), (8, 31)])
    x = feeds(m)
    got = sw2c.compile(m).run(x)["y"]
    want = {"Add": np.add, "Mul": np.multiply, "Div": np.divide, "Sub": np.subtract}[op](
        x["x0"], x["x1"])
    np.testing.assert_array_equal(got, want)  # float32 then round: numpy's result exactly


@pytest.mark.parametrize("src,dst", [("float16", "int32"), ("int64", "float16"),
                                     ("float64", "float16"), ("float16", "float64"),
                                     ("uint16", "float32"), ("float32", "uint8"),
                                     ("int8", "uint64"), ("bool", "float16")])
def test_casts_between_new_types(src: str, dst: str) -> None:
    m = one_node("Cast", src, [(5, 11)], to=h.np_dtype_to_tensor_dtype(np.dtype(dst)))
    if src == "bool":
        x = {"x0": np.random.default_rng(0).integers(0, 2, (5, 11)).astype(bool)}
    else:  # floats out of the integer type's range convert as ONNX leaves undefined
        x = {"x0": np.abs(feeds(m, wide=False)["x0"])}
    got = sw2c.compile(m, verify=False).run(x)["y"]
    assert got.dtype == np.dtype(dst)
    np.testing.assert_array_equal(got, reference_session(m).run(["y"], x)[0])


def test_legalized_graph_means_what_the_original_means() -> None:
    """The pass is checked by the interpreter before and after it."""
    model = one_node("MatMul", "float16", [(3, 4), (4, 5)])
    from sw2c.frontend.importer import import_model

    g = import_model(model)
    x = feeds(model)
    before = run(g, x)["y"]
    after = run(legalize_types(g), x)["y"]
    np.testing.assert_array_equal(before, after)
    ints = import_model(one_node("MatMul", "int16", [(3, 4), (4, 5)]))
    xi = feeds(one_node("MatMul", "int16", [(3, 4), (4, 5)]))
    np.testing.assert_array_equal(run(ints, xi)["y"], run(legalize_types(ints), xi)["y"])


def test_float16_and_uint64_feeds_are_validated() -> None:
    m = one_node("Add", "float16", [(2, 3), (2, 3)])
    module = sw2c.compile(m)
    with pytest.raises(sw2c.InputError, match="x0.*float16"):
        module.run({"x0": np.zeros((2, 3), np.float32), "x1": np.zeros((2, 3), np.float16)})


@pytest.mark.parametrize("dtype", INTS)
def test_bitwise_ops_and_shifts_of_any_amount(dtype: str) -> None:
    """Vector-wide shifts by amounts in and out of [0, bits): never LLVM's poison."""
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, (4, 40), dtype=dtype, endpoint=True)
    s = rng.integers(0 if info.min == 0 else -3, 8 * a.itemsize + 4, (4, 40)).astype(dtype)
    bits = 8 * a.itemsize
    inside = (s >= 0) & (s < bits)
    safe = np.where(inside, s, 0).astype(dtype)
    sign = np.where(a < 0, -1, 0).astype(dtype)
    want = {"BitwiseAnd": a & s, "BitwiseOr": a | s, "BitwiseXor": a ^ s,
            "LEFT": np.where(inside, a << safe, 0).astype(dtype),
            "RIGHT": np.where(inside, a >> safe, sign).astype(dtype)}
    for op, expected in want.items():
        if op in ("LEFT", "RIGHT"):
            m = one_node("BitShift", dtype, [a.shape, a.shape], opset=18, direction=op)
        else:
            m = one_node(op, dtype, [a.shape, a.shape], opset=18)
        got = sw2c.compile(m, verify=False).run({"x0": a, "x1": s})["y"]
        np.testing.assert_array_equal(got, expected, err_msg=op)
    m = one_node("BitwiseNot", dtype, [a.shape], opset=18)
    np.testing.assert_array_equal(sw2c.compile(m, verify=False).run({"x0": a})["y"], ~a)
