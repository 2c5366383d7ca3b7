"""precision="int16" (TFLite's 16x8: int16 activations, int8 weights, int64 accumulators) and
precision="auto" (per layer, the cheapest precision that meets min_sqnr_db) on the asic
target: the integer reference, the simulator and the C export agree bit for bit; int16 is
more accurate than int8; auto meets its budget with fewer int16 layers; errors name what is
at fault."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sw2c
from onnx import helper
from sw2c.backends.asic import lower as lower_module
from sw2c.backends.asic.c_runner import CExport, find_compiler
from sw2c.backends.asic.fixed_point import dequantize
from sw2c.backends.asic.program import Kind
from sw2c.backends.asic.qdq import to_qdq
from sw2c.backends.asic.reference import quantize_inputs, run_reference
from sw2c.cli import _compile_parser
from sw2c.tests.asic_models import DIGITS, digits_data, every_kind
from sw2c.tests.onnx_util import make_model

CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror", "-shared", "-fPIC"]


def _w(rng: np.random.Generator, *shape: int, s: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * s).astype(np.float32)


def cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv+ReLU, depthwise conv, max pool, a residual add, sigmoid, global average pool, a
    dense layer and a softmax."""
    rng = np.random.default_rng(seed)
    inits = {"w1": _w(rng, 6, 2, 3, 3), "b1": _w(rng, 6), "wd": _w(rng, 6, 1, 3, 3),
             "bd": _w(rng, 6), "wf": _w(rng, 6, 5), "bf": _w(rng, 5),
             "shape": np.array([1, 6], np.int64)}
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu"),
        n("Conv", ["r1", "wd", "bd"], ["d1"], name="depthwise", group=6, pads=[1, 1, 1, 1]),
        n("Add", ["d1", "r1"], ["s1"], name="residual"),
        n("MaxPool", ["s1"], ["p1"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Sigmoid", ["p1"], ["g1"], name="sigmoid"),
        n("Mul", ["p1", "g1"], ["m1"], name="silu"),
        n("GlobalAveragePool", ["m1"], ["gap"], name="gap"),
        n("Reshape", ["gap", "shape"], ["flat"], name="flatten"),
        n("Gemm", ["flat", "wf", "bf"], ["logits"], name="dense"),
        n("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    return _typed(make_model(nodes, {"x": [1, 2, 8, 8]}, ["y", "logits"], inits))


def mlp(seed: int = 1) -> onnx.ModelProto:
    """Three dense layers (ReLU, tanh), a transpose, a slice and a concat."""
    rng = np.random.default_rng(seed)
    inits = {"w1": _w(rng, 12, 16), "b1": _w(rng, 16), "w2": _w(rng, 16, 16, s=0.25),
             "b2": _w(rng, 16), "w3": _w(rng, 24, 4), "starts": np.array([0], np.int64),
             "ends": np.array([8], np.int64), "axes": np.array([1], np.int64)}
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        n("Add", ["h1", "b1"], ["a1"], name="fc1_bias"),
        n("Relu", ["a1"], ["r1"], name="relu1"),
        n("MatMul", ["r1", "w2"], ["h2"], name="fc2"),
        n("Add", ["h2", "b2"], ["a2"], name="fc2_bias"),
        n("Tanh", ["a2"], ["t2"], name="tanh"),
        n("Slice", ["r1", "starts", "ends", "axes"], ["sl"], name="slice"),
        n("Concat", ["t2", "sl"], ["cat"], name="concat", axis=1),
        n("MatMul", ["cat", "w3"], ["y"], name="fc3"),
    ]
    return _typed(make_model(nodes, {"x": [3, 12]}, ["y"], inits))


def _typed(model: onnx.ModelProto) -> onnx.ModelProto:
    """The outputs' shapes filled in by onnx's shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for out in model.graph.output:
        if out.name in known and known[out.name].type.tensor_type.HasField("shape"):
            out.CopyFrom(known[out.name])
    return model


def _calib(model: onnx.ModelProto, count: int = 32, seed: int = 7) -> np.ndarray:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count * shape[0], *shape[1:])).astype(np.float32)


def _feeds(model: onnx.ModelProto, calib: np.ndarray, count: int = 4) -> list[np.ndarray]:
    """The first ``count`` batches of ``calib`` at the model's batch size."""
    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    return [calib[i * batch:(i + 1) * batch] for i in range(count)]


def _compile(model, precision: str, **kw) -> sw2c.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw2c.compile(model, target="asic:edge", precision=precision, **kw)


def _bits(module: sw2c.Module) -> list[int]:
    return [r["bits"] for r in module.report["layers"]]


def _c_matches(module: sw2c.Module, feeds: list[np.ndarray]) -> None:
    """The C export, built warning-free, equals the reference and the simulator bit for bit
    on calibration inputs and on uniformly random codes (saturation everywhere)."""
    cc, why = find_compiler()
    if cc is None:
        pytest.skip(why)
    p = module.program
    rng = np.random.default_rng(3)
    cases = [quantize_inputs(p, [f]) for f in feeds]
    for _ in range(3):
        cases.append([rng.integers(np.iinfo(p.tensors[n].dtype).min,
                                   np.iinfo(p.tensors[n].dtype).max + 1, p.tensors[n].shape
                                   ).astype(p.tensors[n].dtype) for n in p.inputs])
    with CExport(p, module.plan, module.name, cc, CFLAGS) as lib:
        lib.wait()
        assert not lib.warnings, lib.warnings
        for q in cases:
            want = run_reference(p, q)
            sim = module.run_int8(q)
            for n, c, s in zip(p.outputs, lib.run_int8(q), sim):
                assert c.dtype == p.tensors[n].dtype
                np.testing.assert_array_equal(s, want[n], err_msg=n)
                np.testing.assert_array_equal(c, want[n], err_msg=n)


@pytest.mark.parametrize("make", [cnn, mlp, every_kind], ids=["cnn", "mlp", "every_kind"])
def test_int16_reference_simulator_and_c_are_bit_exact(make):
    model = make()
    calib = _calib(model)
    module = _compile(model, "int16", calibration=calib)
    steps = module.program.steps
    assert all(module.program.tensors[s.output].bits == 16 for s in steps)
    assert {s.kind for s in steps} >= {Kind.CONV}
    oracles = module.report["oracles"]  # verify=True ran them too (QDQ: opset 21's int16)
    assert oracles["reference"]["result"] == "bit-exact"
    assert oracles["qdq"]["ran"], oracles["qdq"]
    _c_matches(module, _feeds(model, calib))


def test_mixed_precision_converts_between_int8_and_int16_bit_exactly():
    model = every_kind()
    calib = _calib(model)
    int8, int16 = _compile(model, "int8", calibration=calib), _compile(model, "int16",
                                                                        calibration=calib)
    budget = (int8.report["output_sqnr_db"]["y"] + int16.report["output_sqnr_db"]["y"]) / 2
    module = _compile(model, "auto", calibration=calib, min_sqnr_db=budget)
    kinds = {s.kind for s in module.program.steps}
    assert Kind.CONVERT in kinds and {8, 16} <= set(_bits(module))
    _c_matches(module, _feeds(model, calib))


def test_int16_is_more_accurate_than_int8():
    for make in (cnn, mlp, every_kind):
        model = make()
        calib = _calib(model)
        db8 = _compile(model, "int8", calibration=calib).report["output_sqnr_db"]
        db16 = _compile(model, "int16", calibration=calib).report["output_sqnr_db"]
        for name, v in db8.items():
            assert db16[name] > v + 1.0, (make.__name__, name, v, db16[name])


def test_auto_meets_its_budget_with_fewer_int16_layers_and_less_energy():
    model = every_kind()
    calib = _calib(model)
    int8 = _compile(model, "int8", calibration=calib)
    int16 = _compile(model, "int16", calibration=calib)
    db8, db16 = int8.report["output_sqnr_db"]["y"], int16.report["output_sqnr_db"]["y"]
    budget = db8 + (db16 - db8) * 0.5
    auto = _compile(model, "auto", calibration=calib, min_sqnr_db=budget)
    assert auto.report["output_sqnr_db"]["y"] >= budget
    assert auto.report["min_sqnr_db"] == budget
    rows = auto.report["layers"]
    assert all(r["precision"] in ("int8", "int16") for r in rows)
    wide = sum(r["bits"] == 16 and r["kind"] != "convert" for r in rows)
    assert 0 < wide < sum(r["bits"] == 16 and r["kind"] != "convert"
                          for r in int16.report["layers"])
    # (auto may undercut int8 too: a conversion rescales more cheaply than int8's table)
    assert auto.report["energy_uj"] < int16.report["energy_uj"]
    assert auto.report["int16_kernels"] == sum(r["bits"] == 16 for r in rows)
    again = _compile(model, "auto", calibration=calib, min_sqnr_db=budget)  # deterministic
    assert _bits(again) == _bits(auto)
    # a budget int8 meets: auto is all int8, the int8 program itself
    easy = _compile(model, "auto", calibration=calib, min_sqnr_db=db8 - 5)
    assert set(_bits(easy)) == {8}
    assert easy.report["output_sqnr_db"] == int8.report["output_sqnr_db"]


def test_digits_cnn_at_int16_matches_float_top1():
    data = digits_data()
    module = _compile(str(DIGITS), "int16", calibration=data["calib"])
    sess = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    fp32 = sess.run(None, {"input": data["test"]})[0].argmax(axis=1)
    int16 = np.array([module(x[None]).argmax() for x in data["test"]])
    assert np.mean(int16 == fp32) >= 0.995, np.mean(int16 == fp32)
    acc16, acc32 = np.mean(int16 == data["labels"]), np.mean(fp32 == data["labels"])
    assert abs(acc16 - acc32) <= 0.005, (acc16, acc32)
    int8 = _compile(str(DIGITS), "int8", calibration=data["calib"])
    assert module.report["output_sqnr_db"]["logits"] > int8.report["output_sqnr_db"]["logits"]


def test_int16_softmax_resolves_probabilities_int8_ties():
    """1000 classes: int8 probabilities (scale >= 1/512) tie many of the top classes; int16
    ones (scale 1/32768) keep float's order of the top five."""
    rng = np.random.default_rng(5)
    w = _w(rng, 16, 1000, s=0.15)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"], name="head"),
             helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1)]
    model = _typed(make_model(nodes, {"x": [1, 16]}, ["y"], {"w": w}))
    calib = _calib(model, 64)
    module = _compile(model, "int16", calibration=calib)
    x = calib[:8]
    ref = np.exp(x @ w) / np.exp(x @ w).sum(axis=1, keepdims=True)
    for xi, r in zip(x, ref):
        got = module(xi[None])[0]
        top = np.argsort(-r)[:5]
        assert np.all(np.diff(got[top]) <= 0)  # float's order, no inversions
        assert np.argmax(got) == np.argmax(r)
        assert np.abs(got - r).max() < 2e-3


def test_precision_words_are_checked():
    model = mlp()
    with pytest.raises(sw2c.Sw2cError, match="precision='int4'"):
        _compile(model, "int4", calibration=_calib(model))
    with pytest.raises(sw2c.Sw2cError, match="min_sqnr_db"):
        _compile(model, "auto", calibration=_calib(model), min_sqnr_db=None)
    args = _compile_parser().parse_args(["m.onnx", "--target", "asic", "--precision", "auto",
                                         "--min-sqnr-db", "35"])
    assert (args.precision, args.min_sqnr_db) == ("auto", 35.0)
    assert _compile_parser().parse_args(["m.onnx", "--precision", "int16"]).precision == "int16"


def test_a_kind_without_an_int16_kernel_is_an_error_naming_the_layer(monkeypatch):
    monkeypatch.setattr(lower_module, "INT16_KINDS", lower_module.INT16_KINDS - {Kind.LUT})
    model = mlp()
    with pytest.raises(sw2c.Sw2cError, match=r"layer 'tanh' \(lut\) has no int16 kernel"):
        _compile(model, "int16", calibration=_calib(model))


def test_qdq_export_of_int16_programs_is_opset_21():
    """int16 Quantize/DequantizeLinear are ONNX from opset 21 (tests/test_qdq.py checks the
    export against the integer reference); an all-int8 program stays opset 17."""
    model = mlp()
    calib = _calib(model)
    for precision, opset in (("int16", 21), ("int8", 17)):
        module = _compile(model, precision, calibration=calib, verify=False)
        assert to_qdq(module.program).opset_import[0].version == opset


def test_int16_lookup_tables_interpolate_within_a_code_or_two():
    model = mlp()
    calib = _calib(model)
    module = _compile(model, "int16", calibration=calib, verify=False)
    p = module.program
    step = next(s for s in p.steps if s.kind is Kind.LUT)
    x, y = p.tensors[step.inputs[0]], p.tensors[step.output]
    codes = np.arange(-32768, 32768, dtype=np.int16)
    got = run_reference_step(step, codes, p)
    want = np.clip(np.round(np.tanh(dequantize(codes, x.scale, 0).astype(np.float64))
                            / y.scale), -32768, 32767)
    assert np.abs(got.astype(np.int64) - want).max() <= 2


def run_reference_step(step, codes: np.ndarray, p) -> np.ndarray:
    from dataclasses import replace

    from sw2c.backends.asic.reference import run_step

    tensors = dict(p.tensors)
    tensors[step.inputs[0]] = replace(p.tensors[step.inputs[0]], shape=codes.shape)
    tensors[step.output] = replace(p.tensors[step.output], shape=codes.shape)
    return run_step(step, [codes], tensors)
