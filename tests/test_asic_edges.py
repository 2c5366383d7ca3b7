"""Rough edges of the asic target: graphs that used to escape as raw Python exceptions, target
files, calibration data of awkward sizes and dtypes, and the int8 API (codes, scales, zero
points)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import sw2c
from onnx import helper
from sw2c.backends.asic.calibrate import calibration_feeds
from sw2c.backends.asic.emit_c import MAX_RANK
from sw2c.backends.asic.program import Kind
from sw2c.backends.asic.target import load_target
from sw2c.benchmarks import fuzz
from sw2c.frontend import import_model
from sw2c.tests.asic_models import DIGITS, digits_data
from sw2c.tests.onnx_util import make_model

n = helper.make_node
RNG = np.random.default_rng(0)


def shaped(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its outputs' shapes declared (the asic target needs them)."""
    return fuzz.to_model(fuzz.Parts.of(model))


def compile_asic(model: onnx.ModelProto, samples: np.ndarray | dict, **kw) -> sw2c.Module:
    return sw2c.compile(model, target="asic", calibration=samples, **kw)


def calib(*shape: int, count: int = 8, scale: float = 1.0) -> list[np.ndarray]:
    return list((RNG.standard_normal((count, *shape)) * scale).astype(np.float32))


def _steps(module: sw2c.Module) -> list[Kind]:
    return [s.kind for s in module.program.steps]


# --------------------------------------------------------------------------- matcher edges


def exp_of_centered(tail: list[onnx.NodeProto]) -> onnx.ModelProto:
    """exp(x - max(x)) feeding ``tail`` (which reads 'e' and writes 'y')."""
    head = [n("ReduceMax", ["x"], ["m"], axes=[1], keepdims=1, name="max"),
            n("Sub", ["x", "m"], ["d"], name="sub"), n("Exp", ["d"], ["e"], name="exp")]
    return shaped(make_model(head + tail, {"x": [2, 5]}, ["y"],
                             {"ax": np.array([1], np.int64)}))


def test_exp_with_two_users_neither_a_sum_is_lowered_not_a_raw_error():
    """Used to be AttributeError in the softmax matcher (no reduce among the two users)."""
    model = exp_of_centered([n("Relu", ["e"], ["a"], name="relu"),
                             n("Sigmoid", ["e"], ["b"], name="sig"),
                             n("Add", ["a", "b"], ["y"], name="add")])
    module = compile_asic(model, calib(2, 5))  # verify: the simulator = the reference
    assert Kind.SOFTMAX not in _steps(module)
    assert module.report["output_sqnr_db"]["y"] > 25


@pytest.mark.parametrize("op", ["Sub", "Mul", "Add"])
def test_exp_combined_with_its_sum_other_than_by_a_division_is_not_softmax(op):
    """exp(x - max) - sum(exp(x - max)) used to be lowered to a softmax step (a silent
    miscompile: SQNR under 2 dB); only the division is a softmax."""
    model = exp_of_centered([n("ReduceSum", ["e", "ax"], ["s"], keepdims=1, name="sum"),
                             n(op, ["e", "s"], ["y"], name="combine")])
    module = compile_asic(model, calib(2, 5))
    assert Kind.SOFTMAX not in _steps(module)
    assert module.report["output_sqnr_db"]["y"] > 25


def test_exp_over_its_sum_stays_one_softmax_step():
    model = exp_of_centered([n("ReduceSum", ["e", "ax"], ["s"], keepdims=1, name="sum"),
                             n("Div", ["e", "s"], ["y"], name="div")])
    assert _steps(compile_asic(model, calib(2, 5))) == [Kind.SOFTMAX]


def test_rank2_reshape_before_a_transpose_and_a_batched_matmul_compiles():
    """Reshape to rank 2 -> Transpose -> Reshape -> MatMul -> Transpose(1,0,2) -> Reshape has
    the grouped conv's ops but not its ranks: it used to break a tuple unpacking
    (ValueError) in the grouped-conv matcher."""
    shape = {f"s{i}": np.array(v, np.int64) for i, v in enumerate([(6, 4), (2, 2, 6), (4, 3)])}
    w = (RNG.standard_normal((6, 3)) * 0.3).astype(np.float32)
    model = shaped(make_model(
        [n("Reshape", ["x", "s0"], ["r0"], name="r0"),
         n("Transpose", ["r0"], ["t0"], perm=[1, 0], name="t0"),
         n("Reshape", ["t0", "s1"], ["r1"], name="r1"),
         n("MatMul", ["r1", "w"], ["mm"], name="mm"),
         n("Transpose", ["mm"], ["t1"], perm=[1, 0, 2], name="t1"),
         n("Reshape", ["t1", "s2"], ["y"], name="r2")], {"x": [4, 6]}, ["y"],
        {**shape, "w": w}))
    module = compile_asic(model, calib(4, 6))
    assert Kind.CONV in _steps(module)
    assert module.report["output_sqnr_db"]["y"] > 25


def transpose_model(rank: int) -> onnx.ModelProto:
    return shaped(make_model([n("Transpose", ["x"], ["y"], perm=list(range(rank))[::-1],
                                name=f"transpose{rank}")], {"x": [2] * rank}, ["y"]))


def test_a_transpose_the_c_kernels_cannot_index_is_refused_at_compile_time(tmp_path):
    """A rank-9 transpose used to compile and verify, then ``export`` raised
    NotImplementedError: it is refused when compiled, naming the node."""
    with pytest.raises(sw2c.UnsupportedOpError, match=r"transpose9.*9 axes.*--target cpu"):
        compile_asic(transpose_model(MAX_RANK + 1), calib(*[2] * (MAX_RANK + 1)))
    module = compile_asic(transpose_model(MAX_RANK), calib(*[2] * MAX_RANK))
    assert module.export(tmp_path).endswith(".c")


def test_a_scalar_input_model_compiles_runs_and_exports(tmp_path):
    """0-d codes used to come back from quantize as numpy scalars, which run_int8 refused."""
    model = shaped(make_model([n("Relu", ["x"], ["y"], name="relu")], {"x": []}, ["y"]))
    module = compile_asic(model, np.linspace(-2, 2, 16, dtype=np.float32))
    q = module.quantize(np.float32(1.5))
    assert isinstance(q, np.ndarray) and q.shape == ()
    assert abs(float(module(np.array(1.5, np.float32))) - 1.5) < 0.02
    assert module.dequantize(module.run_int8(q)[0]).shape == ()
    assert module.export(tmp_path).endswith(".c")


# --------------------------------------------------------------------------- targets


def test_target_error_is_public_and_raised_for_bad_targets(tmp_path):
    assert "TargetError" in sw2c.__all__ and issubclass(sw2c.TargetError, sw2c.Sw2cError)
    with pytest.raises(sw2c.TargetError, match="unknown asic target 'nope'.*tiny"):
        load_target("nope")
    missing = tmp_path / "missing.toml"
    with pytest.raises(sw2c.TargetError, match=f"target file {missing} was not found"):
        load_target(str(missing))
    with pytest.raises(sw2c.TargetError, match="is not a file"):
        load_target(str(tmp_path) + "/")
    bad = tmp_path / "bad.toml"
    bad.write_text("[compute\n")
    with pytest.raises(sw2c.TargetError, match="cannot read target file"):
        load_target(str(bad))
    bad.write_text(open(load_target("tiny").path).read().replace("mac_rows = 8", ""))
    with pytest.raises(sw2c.TargetError, match=r"lacks \[compute\] mac_rows"):
        load_target(str(bad))


def test_cli_says_a_missing_target_file_was_not_found(tmp_path):
    res = subprocess.run([sys.executable, "-m", "sw2c.cli", str(DIGITS), "--target",
                          "asic:missing.toml", "-o", str(tmp_path / "out"), "--input-shape",
                          "input=1,1,8,8"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("sw2c: error: target file missing.toml was not found"), res.stderr
    assert "unknown asic target" not in res.stderr


# --------------------------------------------------------------------------- calibration


def dense(batch: int) -> onnx.ModelProto:
    w = (RNG.standard_normal((6, 3)) * 0.3).astype(np.float32)
    return shaped(make_model([n("MatMul", ["x", "w"], ["y"], name="dense")], {"x": [batch, 6]},
                             ["y"], {"w": w}))


def test_calibration_samples_not_filling_the_last_batch_are_all_used():
    """10 samples for batch 4: three batches, the last completed with the first samples."""
    graph = import_model(dense(4))
    data = RNG.standard_normal((10, 6)).astype(np.float32)
    data[9] *= 50  # only the last sample reaches this far: it must be seen
    feeds = calibration_feeds(data, graph)
    assert [f["x"].shape for f in feeds] == [(4, 6)] * 3
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds]),
                                  data[np.arange(12) % 10])
    # the same samples as a list of single ones, or as a list of dicts
    same = [calibration_feeds(list(data[:, None]), graph),
            calibration_feeds([{"x": s[None]} for s in data], graph)]
    for other in same:
        np.testing.assert_array_equal(np.stack([f["x"] for f in other]),
                                      np.stack([f["x"] for f in feeds]))
    module = compile_asic(dense(4), data)
    t = module.program.tensors["x"]
    assert t.scale * (127 - t.zero_point) >= np.abs(data[9]).max() * 0.99 or \
        t.scale * (t.zero_point + 128) >= np.abs(data[9]).max() * 0.99


def test_digits_compiled_for_a_batch_of_360_calibrates_on_its_256_samples():
    data = digits_data()
    module = sw2c.compile(str(DIGITS), target="asic:edge", input_shapes={"input": (360, 1, 8, 8)},
                          calibration=data["calib"], verify=False)
    y = module(data["test"])
    assert np.mean(y.argmax(axis=1) == data["labels"]) > 0.9


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, bool])
def test_integer_calibration_data_for_a_float_input_is_refused(tmp_path, dtype):
    """uint8 images taken as 0..255 would calibrate a model trained on [0, 1] inputs wrong
    without a word: sw2c says which input, which dtype, and how to convert."""
    data = (RNG.random((8, 1, 8, 8)) * 255).astype(dtype)
    shapes = {"input": (1, 1, 8, 8)}
    with pytest.raises(sw2c.InputError, match=rf"input 'input' is {np.dtype(dtype)}, the model "
                       r"takes float32.*astype\(np.float32\)"):
        sw2c.compile(str(DIGITS), target="asic:tiny", input_shapes=shapes, calibration=data)
    np.savez(tmp_path / "c.npz", input=data)
    with pytest.raises(sw2c.InputError, match=f"is {np.dtype(dtype)}"):
        sw2c.compile(str(DIGITS), target="asic:tiny", input_shapes=shapes,
                     calibration=str(tmp_path / "c.npz"))
    # float64 is fine (the values are what they say)
    sw2c.compile(str(DIGITS), target="asic:tiny", input_shapes=shapes, verify=False,
                 calibration=digits_data()["calib"][:8].astype(np.float64))


def test_ragged_or_misshapen_calibration_data_is_an_input_error():
    graph = import_model(dense(4))
    with pytest.raises(sw2c.InputError, match="input 'x' is not an array"):
        calibration_feeds([[[1.0, 2.0], [3.0]]], graph)
    with pytest.raises(sw2c.InputError, match="input 'x' has shape"):
        calibration_feeds(np.ones((4, 5), np.float32), graph)
    with pytest.raises(sw2c.InputError, match="empty"):
        calibration_feeds(np.ones((0, 6), np.float32), graph)
    with pytest.raises(sw2c.InputError, match="must be an array.*got int"):
        calibration_feeds(5, graph)
    # a generator of samples, as TFLite's representative datasets
    feeds = calibration_feeds((np.full((1, 6), k, np.float32) for k in range(6)), graph)
    assert [f["x"][:, 0].tolist() for f in feeds] == [[0, 1, 2, 3], [4, 5, 0, 1]]


# --------------------------------------------------------------------------- the int8 API


@pytest.fixture(scope="module")
def digits() -> sw2c.Module:
    return sw2c.compile(str(DIGITS), target="asic:tiny", input_shapes={"input": (1, 1, 8, 8)},
                        calibration=digits_data()["calib"])


def test_quantization_gives_every_input_and_output_scale_and_zero_point(digits):
    q = digits.quantization
    assert set(q) == {"input", "logits"}
    for name, (scale, zero_point) in q.items():
        t = digits.program.tensors[name]
        assert (scale, zero_point) == (t.scale, t.zero_point)
        assert isinstance(scale, float) and isinstance(zero_point, int)
    x = digits_data()["test"][:1]
    codes = digits.quantize(x)
    assert codes.dtype == np.int8 and codes.shape == x.shape
    scale, zp = q["input"]
    np.testing.assert_allclose((codes.astype(np.float32) - zp) * scale, x, atol=scale / 2 + 1e-6)
    out = digits.run_int8(codes)  # one array for the one input, as module(x) takes it
    np.testing.assert_array_equal(digits.dequantize(out[0]), digits(x))
    np.testing.assert_array_equal(digits.run_int8({"input": codes})[0], out[0])
    np.testing.assert_array_equal(digits.run_int8([codes])[0], out[0])


def test_run_int8_and_quantize_say_what_they_take(digits):
    with pytest.raises(sw2c.InputError, match=r"int8 array of shape \(1, 1, 8, 8\), got "
                       r"float32.*module.quantize"):
        digits.run_int8(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(sw2c.InputError, match="list of int8 arrays"):
        digits.run_int8(3)
    with pytest.raises(sw2c.InputError, match="unknown input 'x'"):
        digits.run_int8({"x": np.zeros((1, 1, 8, 8), np.int8)})
    with pytest.raises(sw2c.InputError, match="has no output 'input'"):
        digits.dequantize(np.zeros(10, np.int8), "input")
    with pytest.raises(sw2c.InputError, match="int8 codes .* of output 'logits', got float32"):
        digits.dequantize(np.zeros(10, np.float32))


def test_two_input_model_needs_names_or_a_list():
    model = shaped(make_model([n("Add", ["a", "b"], ["y"], name="add")],
                              {"a": [1, 4], "b": [1, 4]}, ["y"]))
    # a range that holds 1.0 whatever order the tests draw from RNG in (8 normal draws per
    # element did not always)
    span = np.linspace(-2, 2, 32, dtype=np.float32).reshape(8, 1, 4)
    module = compile_asic(model, {"a": span, "b": span / 2})
    a, b = module.quantize(np.ones((1, 4)), "a"), module.quantize(np.ones((1, 4)), "b")
    with pytest.raises(sw2c.InputError, match=r"takes a list of int8 arrays, one per input "
                       r"in order \(a, b\)"):
        module.run_int8(a)
    with pytest.raises(sw2c.InputError, match=r"has 2 inputs \(a, b\): name the input"):
        module.quantize(np.ones((1, 4)))
    with pytest.raises(sw2c.InputError, match=r"takes 2 input\(s\) \(a, b\), got 1"):
        module.run_int8([a])
    with pytest.raises(sw2c.InputError, match="input 'b' must be an int8 array.*got nothing"):
        module.run_int8({"a": a})
    y = module.dequantize(module.run_int8({"a": a, "b": b})[0])
    np.testing.assert_allclose(y, 2.0, atol=4 * module.quantization["y"][0])


def test_calibration_of_inputs_with_different_batches():
    model = shaped(make_model([n("Add", ["a", "b"], ["y"], name="add")],
                              {"a": [4, 3], "b": [1, 3]}, ["y"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        feeds = calibration_feeds({"a": np.ones((8, 3), np.float32),
                                   "b": np.ones((2, 3), np.float32)}, import_model(model))
    assert [(f["a"].shape, f["b"].shape) for f in feeds] == [((4, 3), (1, 3))] * 2
    with pytest.raises(sw2c.InputError, match="different numbers of samples: 'a' 8, 'b' 3"):
        calibration_feeds({"a": np.ones((8, 3), np.float32), "b": np.ones((3, 3), np.float32)},
                          import_model(model))


def test_typed_inputs_are_refused_on_asic_by_name():
    """The int8 pipeline quantizes float activations and codes integer ones (token ids,
    masks: a cast of them to float is a view of their codes); other types are for target
    cpu."""
    from onnx import TensorProto, helper

    def cast_model(dtype: int) -> onnx.ModelProto:
        g = helper.make_graph([helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)],
                              "g", [helper.make_tensor_value_info("ids", dtype, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    with pytest.raises(sw2c.ModelError, match="input 'ids' is bool: target 'asic'"):
        sw2c.compile(cast_model(TensorProto.BOOL), target="asic")
    module = sw2c.compile(cast_model(TensorProto.INT64), target="asic",
                          calibration=np.arange(-8, 8, dtype=np.int64).reshape(4, 1, 4))
    ids = np.array([[-3, 0, 7, 127]], np.int64)
    np.testing.assert_array_equal(module(ids), ids.astype(np.float32))
