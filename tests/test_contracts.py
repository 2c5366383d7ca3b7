"""The promises sw2c makes beyond "the numbers are right": no raw exception reaches the user,
the rewrite driver reaches its fixed point, code size is linear in the body, max reductions
propagate NaN as the IR interpreter does, and the cpu verifier catches a wrong kernel."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import sw2c
from onnx import TensorProto, helper
from sw2c import ir
from sw2c.backends.cpu import math as cpu_math
from sw2c.backends.cpu.codegen import generate
from sw2c.errors import CompileError, blame, internal_errors
from sw2c.frontend import import_model
from sw2c.passes import rewrite as rewrite_mod
from sw2c.passes.pipeline import run_pipeline
from sw2c.runtime.verify import reference_session

from .onnx_util import make_model, with_output_shapes


def _model(nodes, shape, outputs, inits=None) -> onnx.ModelProto:
    m = make_model(nodes, {"x": shape}, outputs, inits)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    return with_output_shapes(m, reference_session(m).run(None, feeds))


# --- NaN in max reductions and Max/Min ---------------------------------------------------------
def test_max_reductions_and_max_min_propagate_nan_like_the_interpreter():
    """The IR interpreter (numpy, as the ONNX reference implementation) defines the semantics:
    a NaN anywhere in a window makes its max NaN. onnxruntime agrees for Max/Min; its
    ReduceMax and MaxPool drop a NaN unless it comes first in the window (measured with
    onnxruntime 1.2x), so against it only the NaN-free positions are compared."""
    shape = (1, 16, 6, 6)
    nodes = [helper.make_node("ReduceMax", ["x"], ["a"], axes=[2, 3], keepdims=1),
             helper.make_node("MaxPool", ["x"], ["b"], kernel_shape=[3, 3]),
             helper.make_node("ReduceMax", ["x"], ["c"], axes=[1], keepdims=0),
             helper.make_node("Neg", ["x"], ["n"]),
             helper.make_node("Max", ["n", "x"], ["d"]),
             helper.make_node("Min", ["n", "x"], ["e"])]
    outs = ["a", "b", "c", "d", "e"]
    m = _model(nodes, shape, outs)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    for at in [(0, 0, 0, 0), (0, 5, 2, 4), (0, 15, 5, 5), (0, 9, 3, 0)]:
        x[at] = np.nan
    got = sw2c.compile(m).run({"x": x})
    interp = ir.run(import_model(m), {"x": x})
    ref = dict(zip(outs, reference_session(m).run(None, {"x": x})))
    for name in outs:
        assert np.isnan(got[name]).any(), name
        np.testing.assert_allclose(got[name], interp[name], rtol=1e-6, err_msg=name)  # NaN too
        finite = ~np.isnan(interp[name])
        np.testing.assert_allclose(got[name][finite], ref[name][finite], rtol=1e-6, err_msg=name)
    for name in ("d", "e"):
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(ref[name]), err_msg=name)


# --- the rewrite driver ------------------------------------------------------------------------
def test_an_output_that_reduces_to_an_identity_converges_in_a_few_rounds(monkeypatch):
    rounds = []
    once = rewrite_mod.rewrite_once
    monkeypatch.setattr(rewrite_mod, "rewrite_once", lambda g, r: (rounds.append(1), once(g, r))[1])
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["t"], ["y"], perm=[0, 3, 1, 2])]
    m = _model(nodes, (1, 3, 4, 5), ["y"])
    run_pipeline(import_model(m))
    assert len(rounds) < 20  # was 50 (the limit) for choose-layout alone


def test_rules_that_undo_each_other_raise_compile_error():
    g = import_model(_model([helper.make_node("Relu", ["x"], ["y"])], (1, 4), ["y"]))

    def flip(rw, node):  # rewrites every unary into a fresh copy of itself, forever
        if node.op is ir.Op.UNARY:
            return rw.emit(node.op, node.inputs, node.origin, **node.attrs)
        return None

    with pytest.raises(CompileError, match="fixed point"):
        rewrite_mod.rewrite(g, [flip], max_rounds=5)


# --- code size ---------------------------------------------------------------------------------
def _square_chain(depth: int, movement: bool) -> onnx.ModelProto:
    """x -> (x*x) -> ... : each value read twice; with ``movement`` through two slices each."""
    nodes, cur, inits = [], "x", {}
    for i in range(depth):
        a = b = cur
        if movement:
            a, b = f"sa{i}", f"sb{i}"
            for s in (a, b):
                nodes.append(helper.make_node("Slice", [cur, "st", "en"], [s]))
            inits = {"st": np.array([0], np.int64), "en": np.array([64], np.int64)}
        cur = f"m{i}"
        nodes.append(helper.make_node("Mul", [a, b], [cur]))
    nodes.append(helper.make_node("Tanh", [cur], ["y"]))
    return make_model(nodes, {"x": (1, 64)}, ["y"], inits)


@pytest.mark.parametrize("movement", [False, True])
def test_kernel_code_size_is_linear_in_the_depth_of_reuse(movement):
    def size(depth: int) -> int:
        text = str(generate(run_pipeline(import_model(_square_chain(depth, movement))), "m")
                   .module)
        return text.count(" fmul ")

    small, big = size(8), size(16)
    assert big <= 2 * small + 4  # exponential emission gave 255 -> 65,535


# --- one funnel for unexpected exceptions -------------------------------------------------------
def test_internal_errors_names_the_innermost_blamed_place():
    with pytest.raises(CompileError, match=r"while testing at node 'inner'.*ZeroDivision.*report"):
        with internal_errors("testing"), blame("node 'outer'"), blame("node 'inner'"):
            _ = 1 / 0


def test_a_raw_exception_inside_compile_becomes_a_compile_error(monkeypatch):
    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'attrs'")

    monkeypatch.setattr(cpu_math, "emit_unary", broken)
    monkeypatch.setattr("sw2c.backends.cpu.expr.emit_unary", broken)
    m = _model([helper.make_node("Tanh", ["x"], ["y"], name="the_tanh")], (1, 4), ["y"])
    with pytest.raises(CompileError, match=r"kernel .*the_tanh.*AttributeError.*report"):
        sw2c.compile(m)


def test_onnxruntime_failures_during_verify_are_verification_errors(monkeypatch):
    import onnxruntime as ort

    def refuse(*args, **kwargs):
        raise ort.capi.onnxruntime_pybind11_state.Fail("[ONNXRuntimeError] : 1 : FAIL : nope")

    monkeypatch.setattr(ort, "InferenceSession", refuse)
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (1, 4)}, ["y"])
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]))
    with pytest.raises(sw2c.VerificationError, match="onnxruntime cannot run.*verify=False"):
        sw2c.compile(m)


# --- the cpu verifier catches a wrong kernel ----------------------------------------------------
def test_verify_catches_a_deliberately_wrong_cpu_kernel(monkeypatch):
    right = cpu_math.emit_binary

    def off_by_a_bit(b, fn, x, y):  # every add computes x + 1.01 * y
        if fn is ir.Binary.ADD:
            y = b.fmul(y, cpu_math.splat(b, y, 1.01))
        return right(b, fn, x, y)

    for where in ("sw2c.backends.cpu.expr.emit_binary", "sw2c.backends.cpu.math.emit_binary"):
        monkeypatch.setattr(where, off_by_a_bit)
    nodes = [helper.make_node("Add", ["x", "b"], ["y"])]
    m = _model(nodes, (1, 8), ["y"], {"b": np.full((1, 8), 3.0, np.float32)})
    with pytest.raises(sw2c.VerificationError, match="differs from onnxruntime"):
        sw2c.compile(m)
    monkeypatch.undo()
    sw2c.compile(m)  # the same model with the right kernel verifies


# --- zero-size intermediates ---------------------------------------------------------------------
def _emptied(op_nodes, out_shape, inits=None) -> onnx.ModelProto:
    """x[1, 4] -> z = x[:, 0:0] (empty) -> op_nodes; onnxruntime refuses some of these, so the
    output's shape is declared by hand and the interpreter is the oracle."""
    inits = {"s": np.array([0], np.int64), "e": np.array([0], np.int64),
             "ax": np.array([1], np.int64), **(inits or {})}
    nodes = [helper.make_node("Slice", ["x", "s", "e", "ax"], ["z"]), *op_nodes]
    m = make_model(nodes, {"x": (1, 4)}, ["y"], inits, opset=18)
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape))
    return m


@pytest.mark.parametrize("case", ["matmul", "concat", "reduce_sum", "reduce_max", "empty"])
def test_zero_size_intermediates_compile_and_match_the_interpreter(case):
    w = {"w": np.ones((0, 3), np.float32), "rx": np.array([1], np.int64)}
    op, shape = {
        "matmul": (helper.make_node("MatMul", ["z", "w"], ["y"]), [1, 3]),
        "concat": (helper.make_node("Concat", ["z", "x"], ["y"], axis=1), [1, 4]),
        "reduce_sum": (helper.make_node("ReduceSum", ["z", "rx"], ["y"]), [1, 1]),
        "reduce_max": (helper.make_node("ReduceMax", ["z", "rx"], ["y"]), [1, 1]),
        "empty": (helper.make_node("Relu", ["z"], ["y"]), [1, 0]),
    }[case]
    m = _emptied([op], shape, w)
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    want = ir.run(import_model(m), {"x": x})["y"]
    got = sw2c.compile(m, verify=False)(x)
    assert got.shape == tuple(shape)
    np.testing.assert_array_equal(got, want)


def test_an_output_aliasing_a_reshape_of_a_reshape_converges():
    """Found by the fuzzer: reshape(reshape(sigmoid)) as the output was merged into a fresh
    reshape and re-aliased every round."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]),
             helper.make_node("Sigmoid", ["r"], ["y"])]
    m = _model(nodes, (1, 43), ["y"], {"s": np.array([43, 1, 1, 1], np.int64)})
    x = np.random.default_rng(0).standard_normal((1, 43)).astype(np.float32)
    got = sw2c.compile(m)(x)
    np.testing.assert_allclose(got, reference_session(m).run(None, {"x": x})[0], rtol=1e-6)
