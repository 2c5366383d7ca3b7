"""The QDQ export: onnxruntime running ``to_qdq(program)`` agrees with the integer reference.

Each model is lowered to an int8 program, exported, and run in onnxruntime three ways: without
graph optimizations (plain QDQ: float ops between Q/DQ), with the default optimizations (on
x86 ORT keeps QDQ groups with int8 activations in float) and with int8 fusion allowed (ORT's
integer kernels: QLinearConv, QGemm, ...).

Two checks: every step, given the int8 inputs ORT computed, must produce the exactly rounded
requantization of the reference's accumulator on >= 99.9% of its codes and be within one code
of ``reference.run_step``; and the model outputs, quantized back to codes, must match
``run_reference`` end to end on >= 99% of codes and never by more than one. Synthetic
variants of the programs cover what calibrated lowering rarely emits: windows padded with
another code, clamps narrower than int8. Last, ``verify=True`` runs the QDQ export as an
oracle: a wrong kernel or a wrong export is a VerificationError.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sw2c
from onnx import helper
from sw2c.backends.asic import c_runner, qdq, reference
from sw2c.backends.asic.build import ASIC_PIPELINE
from sw2c.backends.asic.calibrate import calibrate, calibration_feeds
from sw2c.backends.asic.lower import quantize_graph
from sw2c.backends.asic.program import Kind, QProgram, QTensor, Step
from sw2c.backends.asic.qdq import real_multiplier, to_qdq
from sw2c.backends.asic.reference import (
    BINARY_STEPS,
    UNARY_STEPS,
    quantize_inputs,
    run_reference,
    run_step,
)
from sw2c.frontend import import_model
from sw2c.passes.pipeline import run_pipeline
from sw2c.tests.asic_models import DIGITS, digits_data
from sw2c.tests.onnx_util import make_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODES = ("plain", "default", "int8-fused")
MIN_EQUAL, MAX_LSB = 0.99, 1
STEP_MIN_EQUAL = 0.999  # measured: 100% on every step of every model, in every mode

Samples = list[dict[str, np.ndarray]]


def build_program(model: onnx.ModelProto | Path, calibration,
                  shapes: dict[str, tuple[int, ...]] | None = None) -> QProgram:
    """Import, run the pipeline up to the asic split, calibrate and lower to int8."""
    graph = run_pipeline(import_model(model, shapes), ASIC_PIPELINE)
    feeds = calibration_feeds(calibration, graph)
    return quantize_graph(graph, lambda names: calibrate(graph, names, feeds))


def session(model: onnx.ModelProto, mode: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    if mode == "plain":
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif mode == "int8-fused":  # what ORT does on ARM by default
        so.add_session_config_entry("session.qdqisint8allowed", "1")
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def exactly_rounded(step: Step, xs: list[np.ndarray], tensors: dict[str, QTensor]
                    ) -> np.ndarray:
    """``run_step`` with the requantization rounded once, half away from zero."""
    r = step.requant
    if r is None:
        return run_step(step, xs, tensors)
    kernel = UNARY_STEPS.get(step.kind) or BINARY_STEPS[step.kind]
    out = tensors[step.output]
    acc = kernel(step, *xs, *(tensors[i] for i in step.inputs)).reshape(out.shape)
    v = acc.astype(np.float64) * real_multiplier(r)
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + r.zero_point, r.lo, r.hi)


@functools.cache
def case(name: str) -> tuple[QProgram, Samples]:
    """The program of a test model and the samples to run it on."""
    if name == "digits":
        data = np.load(EXAMPLES / "digits_data.npz")
        calib = data["calib_images"].astype(np.float32) * data["scale"]
        program = build_program(EXAMPLES / "digits_cnn.onnx", calib, {"input": (1, 1, 8, 8)})
        images = data["test_images"].astype(np.float32) * data["scale"]
        return program, [{"input": x[None]} for x in images]
    build, kinds = SMALL[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    model = build(rng)
    shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim)
              for i in model.graph.input}
    calib = {n: rng.standard_normal((32, *s[1:])).astype(np.float32) for n, s in shapes.items()}
    program = build_program(model, calib)
    assert kinds <= {s.kind for s in program.steps}, [s.kind.value for s in program.steps]
    return program, [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
                     for _ in range(24)]


def _rng_weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _conv_relu(rng: np.random.Generator) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return make_model(nodes, {"x": [1, 4, 8, 8]}, ["y"],
                      {"w": _rng_weights(rng, 6, 4, 3, 3),
                       "b": rng.standard_normal(6).astype(np.float32)})


def _conv_scaled(rng: np.random.Generator) -> onnx.ModelProto:
    """A bias-free conv times a per-position scale: the requantization multiplier varies per
    position, so it cannot fold into per-channel weight scales (a float Mul instead)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "k"], ["y"])]
    return make_model(nodes, {"x": [1, 4, 6, 6]}, ["y"],
                      {"w": _rng_weights(rng, 5, 4, 3, 3),
                       "k": rng.uniform(0.5, 2.0, (1, 1, 6, 6)).astype(np.float32)})


def _depthwise(rng: np.random.Generator) -> onnx.ModelProto:
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=6, strides=[2, 2],
                            pads=[1, 0, 1, 1])  # asymmetric: begin and end per axis
    return make_model([node], {"x": [1, 6, 9, 9]}, ["y"],
                      {"w": _rng_weights(rng, 6, 1, 3, 3),
                       "b": rng.standard_normal(6).astype(np.float32)})


def _average_pool(rng: np.random.Generator) -> onnx.ModelProto:
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                            pads=[1, 1, 1, 1], count_include_pad=0)
    return make_model([node], {"x": [1, 3, 7, 7]}, ["y"])


def _max_pool(rng: np.random.Generator) -> onnx.ModelProto:
    nodes = [helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["m"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    return make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"])


def _global_average_pool(rng: np.random.Generator) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("GlobalAveragePool", ["c"], ["y"])]
    return make_model(nodes, {"x": [1, 4, 6, 6]}, ["y"],
                      {"w": _rng_weights(rng, 8, 4, 1, 1),
                       "b": rng.standard_normal(8).astype(np.float32)})


def _add_mul(rng: np.random.Generator) -> onnx.ModelProto:
    """A residual Add of two activations, their Mul, and a Sub: three outputs."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["x", "c"], ["y"]),
             helper.make_node("Mul", ["y", "c"], ["z"]),
             helper.make_node("Sub", ["c", "x"], ["d"])]
    return make_model(nodes, {"x": [1, 4, 6, 6]}, ["y", "z", "d"],
                      {"w": _rng_weights(rng, 4, 4, 3, 3),
                       "b": rng.standard_normal(4).astype(np.float32)})


def _sigmoid(rng: np.random.Generator) -> onnx.ModelProto:
    """A Sigmoid (one table), then Sigmoid * a per-channel constant (a [C, 256] table)."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]),
             helper.make_node("Conv", ["s", "w", "b"], ["c"]),
             helper.make_node("Sigmoid", ["c"], ["cs"]),
             helper.make_node("Mul", ["cs", "k"], ["y"])]
    return make_model(nodes, {"x": [1, 4, 5, 5]}, ["y"],
                      {"w": _rng_weights(rng, 3, 4, 1, 1),
                       "b": rng.standard_normal(3).astype(np.float32),
                       "k": np.array([0.5, 2.0, -3.0], np.float32).reshape(1, 3, 1, 1)})


def _lut_axis(rng: np.random.Generator) -> onnx.ModelProto:
    """Elementwise only, so the tensor stays NCHW: a [C, 256] table indexed along axis 1."""
    nodes = [helper.make_node("Mul", ["x", "k"], ["xk"]),
             helper.make_node("Sigmoid", ["xk"], ["y"])]
    return make_model(nodes, {"x": [1, 3, 4, 5]}, ["y"],
                      {"k": np.array([0.5, 2.0, -3.0], np.float32).reshape(1, 3, 1, 1)})


def _softmax(rng: np.random.Generator) -> onnx.ModelProto:
    """Softmax over the channels of a conv (one axis: the last, in the program's layout)."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("Softmax", ["c"], ["y"], axis=1)]
    return make_model(nodes, {"x": [1, 4, 3, 3]}, ["y"],
                      {"w": 3 * _rng_weights(rng, 6, 4, 1, 1),
                       "b": rng.standard_normal(6).astype(np.float32)})


def _softmax_2d(rng: np.random.Generator) -> onnx.ModelProto:
    """Opset 11 Softmax normalizes over every axis from ``axis`` on: two axes here."""
    return make_model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], {"x": [1, 3, 4]},
                      ["y"], opset=11)


def _moves(rng: np.random.Generator) -> onnx.ModelProto:
    """Pad, strided slice, concat and a flattening transpose around a conv."""
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["p"]),
             helper.make_node("Conv", ["p", "w", "b"], ["c"]),
             helper.make_node("Slice", ["c", "starts", "ends", "axes", "steps"], ["s"]),
             helper.make_node("Concat", ["s", "s"], ["cat"], axis=1),
             helper.make_node("Flatten", ["cat"], ["y"])]
    return make_model(nodes, {"x": [1, 2, 6, 6]}, ["y"], {
        "pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64),
        "value": np.array(0.25, np.float32),
        "w": _rng_weights(rng, 4, 2, 3, 3), "b": rng.standard_normal(4).astype(np.float32),
        "starts": np.array([6, 0], np.int64), "ends": np.array([-100, 100], np.int64),
        "axes": np.array([2, 3], np.int64), "steps": np.array([-2, 2], np.int64)})


SMALL = {"conv_relu": (_conv_relu, {Kind.CONV}),
         "conv_scaled": (_conv_scaled, {Kind.CONV}),
         "depthwise": (_depthwise, {Kind.DEPTHWISE}),
         "average_pool": (_average_pool, {Kind.SUM_POOL}),
         "max_pool": (_max_pool, {Kind.MAX_POOL}),
         "global_average_pool": (_global_average_pool, {Kind.SUM_POOL}),
         "add_mul": (_add_mul, {Kind.ADD, Kind.MUL, Kind.SUB}),
         "sigmoid": (_sigmoid, {Kind.LUT}),
         "lut_axis": (_lut_axis, {Kind.LUT}),
         "softmax": (_softmax, {Kind.SOFTMAX}),
         "softmax_2d": (_softmax_2d, {Kind.SOFTMAX}),
         "moves": (_moves, {Kind.PAD, Kind.SLICE, Kind.CONCAT})}

CASES = ["digits", *SMALL]


@pytest.mark.parametrize("name", CASES)
def test_outputs_match_the_reference(name):
    program, samples = case(name)
    model = to_qdq(program)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == list(program.inputs)
    assert [o.name for o in model.graph.output] == list(program.outputs)
    for mode in MODES:
        sess = session(model, mode)
        diffs = []
        for feed in samples:
            got = sess.run(list(program.outputs), feed)
            want = run_reference(program, quantize_inputs(program, [feed[n] for n in
                                                                    program.inputs]))
            for out, y in zip(program.outputs, got):
                t = program.tensors[out]
                codes = np.round(y / np.float32(t.scale)) + t.zero_point
                diffs.append(np.abs(codes - want[out]).ravel())
        d = np.concatenate(diffs)
        assert d.max() <= MAX_LSB and np.mean(d == 0) >= MIN_EQUAL, (
            mode, float(np.mean(d == 0)), int(d.max()))


def check_steps(program: QProgram, samples: Samples) -> None:
    """Every step, on the int8 inputs ORT computed, is within one code of ``run_step`` and
    equal to the exactly rounded requantization on >= ``STEP_MIN_EQUAL`` of its codes."""
    model = to_qdq(program, int8_outputs=True)
    onnx.checker.check_model(model, full_check=True)
    int8_names = [o.name for o in model.graph.output][len(program.outputs):]
    for mode in MODES:
        sess = session(model, mode)
        equal = {s.output: [] for s in program.steps}
        for feed in samples:
            got = dict(zip(program.tensors, sess.run(int8_names, feed)))
            for step in program.steps:
                xs = [got[i] for i in step.inputs]
                y = got[step.output].astype(np.int64)
                assert np.abs(y - run_step(step, xs, program.tensors)).max() <= 1, (
                    mode, step.output)
                equal[step.output].append((y == exactly_rounded(step, xs, program.tensors))
                                          .ravel())
        worst = min((float(np.mean(np.concatenate(e))), n) for n, e in equal.items())
        assert worst[0] >= STEP_MIN_EQUAL, (mode, worst)


@pytest.mark.parametrize("name", CASES)
def test_every_step_is_exactly_rounded(name):
    check_steps(*case(name))


@pytest.mark.parametrize("name", ["conv_relu", "depthwise", "average_pool", "max_pool"])
def test_window_padded_with_another_code(name):
    """Lowering pads windows with the code of 0.0 (convs, sum pools) or -128 (max pools), which
    the ONNX ops' own padding reproduces; any other code takes an explicit int8 Pad."""
    program, samples = case(name)
    steps = tuple(dataclasses.replace(s, attrs={**s.attrs, "pad": 37}) if s.window else s
                  for s in program.steps)
    check_steps(dataclasses.replace(program, steps=steps), samples[:8])


@pytest.mark.parametrize("name", ["conv_relu", "average_pool", "add_mul"])
def test_clamp_narrower_than_int8(name):
    """A requantization clamp inside [-128, 127] (a ReLU6 calibrated wider than 6, say) is an
    int8 Clip after the QuantizeLinear."""
    program, samples = case(name)
    steps = tuple(dataclasses.replace(s, requant=dataclasses.replace(s.requant, lo=-100, hi=20))
                  if s.requant else s for s in program.steps)
    check_steps(dataclasses.replace(program, steps=steps), samples[:8])


def _digits_compile() -> sw2c.Module:
    return sw2c.compile(str(DIGITS), target="asic:tiny", input_shapes={"input": (1, 1, 8, 8)},
                        calibration=digits_data()["calib"][:64])


@pytest.fixture
def no_c_compiler(monkeypatch):
    """verify without its C oracle: the QDQ one must catch the bug on its own."""
    monkeypatch.setattr(c_runner, "find_compiler", lambda: (None, "no C compiler: test"))


def test_verify_catches_a_wrong_kernel_without_a_c_compiler(monkeypatch, no_c_compiler):
    """A conv that forgets its bias, in the reference (so in the simulator too): only the
    QDQ export in onnxruntime, which computes the conv itself, can tell."""
    right = reference.UNARY_STEPS[Kind.CONV]

    def no_bias(step, x, tx):
        return right(step, x, tx) - step.consts["bias"]

    monkeypatch.setitem(reference.UNARY_STEPS, Kind.CONV, no_bias)
    with pytest.raises(sw2c.VerificationError, match=r"output 'logits' is off the simulator "
                       r".*\(step 'conv1', conv\): the QDQ export differs from the integer "
                       r"reference by more than 1 code in \d+ of \d+ element\(s\) .* on "
                       r"verification input \d+"):
        _digits_compile()


def test_verify_catches_a_wrong_rescale_in_the_export(monkeypatch, no_c_compiler):
    """The QDQ export's requantization multiplier 5% too large: the program is right, its
    export is not, and verify says they disagree."""
    right = qdq.real_multiplier
    monkeypatch.setattr(qdq, "real_multiplier", lambda r: right(r) * 1.05)
    with pytest.raises(sw2c.VerificationError, match="QDQ export"):
        _digits_compile()


# --- int16 layers (precision "int16" / "auto": TFLite's 16x8) ------------------------------
# per kind, the most an int16 step of the export (given ORT's own inputs) is off the integer
# reference, in int16 codes (measured: LayerNorm, the MAC kinds and adds 1); the tables
# (interpolated in int32 ops), softmaxes (int64 ops), data movement, lookups and constants
# are exact
INT16_STEP_MOST = {Kind.SOFTMAX: 0, Kind.LAYERNORM: 1, Kind.CONV: 1, Kind.DEPTHWISE: 1,
                   Kind.SUM_POOL: 1, Kind.ADD: 1, Kind.SUB: 1, Kind.MUL: 1,
                   Kind.BATCH_MATMUL: 1, Kind.CONVERT: 1}


# bert_encoder at 35 dB: int16 softmaxes after int8 layers (issue 12: the float Softmax export
# was up to 7 int16 codes off and verify raised)
AUTO_SQNR_DB = {"cnn:auto": 45.0, "bert_encoder:auto": 35.0}


def _int16_case(name: str) -> tuple[sw2c.Module, Samples]:
    import warnings

    from sw2c.benchmarks import zoo
    from sw2c.tests import test_asic_int16 as t16
    from sw2c.tests.test_asic_sequence import family_feeds

    if name.startswith("bert_encoder"):
        model = zoo.family("bert_encoder")
        calib, samples = family_feeds(model, 1, 16), family_feeds(model, 2, 4)
    else:
        model = {"cnn": t16.cnn(), "every_kind": t16.every_kind()}[name.split(":")[0]]
        calib = t16._calib(model)
        samples = [{model.graph.input[0].name: x} for x in t16._feeds(model, calib)]
    precision = "auto" if name.endswith(":auto") else "int16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = sw2c.compile(model, target="asic:edge", precision=precision, verify=True,
                              calibration=calib,
                              min_sqnr_db=AUTO_SQNR_DB.get(name) if precision == "auto"
                              else None)
    return module, samples


@pytest.mark.parametrize("name", ["cnn", "every_kind", "cnn:auto", "bert_encoder",
                                  "bert_encoder:auto"])
def test_int16_steps_match_the_reference(name):
    """The opset-21 export of an int16 (or mixed, through CONVERT steps) program: every step,
    on the int16/int8 inputs ORT computed, within INT16_STEP_MOST codes of ``run_step`` (int8
    ones within one), the tables and data movement exact; verify ran it as its oracle."""
    from sw2c.backends.asic.fixed_point import dequantize

    module, samples = _int16_case(name)
    p = module.program
    assert module.report["oracles"]["qdq"]["ran"], module.report["oracles"]["qdq"]
    assert any(t.bits == 16 for t in p.tensors.values())
    if name.endswith(":auto"):
        assert any(s.kind is Kind.CONVERT for s in p.steps)
    model = to_qdq(p, int8_outputs=True)
    assert model.opset_import[0].version == 21
    names = [o.name for o in model.graph.output][len(p.outputs):]
    sess = session(model, "plain")
    worst: dict[Kind, int] = {}
    for f in samples:
        q = quantize_inputs(p, [f[n] for n in p.inputs])
        feed = {n: dequantize(x, p.tensors[n].scale, p.tensors[n].zero_point)
                for n, x in zip(p.inputs, q)}
        got = dict(zip(p.tensors, sess.run(names, feed)))
        for n, x in zip(p.inputs, q):
            np.testing.assert_array_equal(got[n], x)  # QuantizeLinear gives the codes back
        for step in p.steps:
            want = run_step(step, [got[x] for x in step.inputs], p.tensors).astype(np.int64)
            diff = np.abs(got[step.output].astype(np.int64).reshape(want.shape) - want)
            worst[step.kind] = max(worst.get(step.kind, 0), int(diff.max(initial=0)))
            most = INT16_STEP_MOST.get(step.kind, 0) if p.tensors[step.output].bits == 16 \
                else (MAX_LSB if step.requant is not None or step.kind in
                      (Kind.SOFTMAX, Kind.LAYERNORM) else 0)
            assert diff.max(initial=0) <= most, (step.kind, step.origin, int(diff.max()))
    print(name, {k.value: v for k, v in worst.items()})


def test_int16_table_export_is_exact_on_every_code():
    """An int16 table (512 interpolated segments) exported as its integer interpolation in
    int32 ops gives ``reference.lut16`` on all 65,536 codes."""
    from sw2c.backends.asic.fixed_point import dequantize

    module, _ = _int16_case("cnn")
    p = module.program
    step = next(s for s in p.steps if s.kind is Kind.LUT and p.tensors[s.output].bits == 16
                and s.consts["table"].ndim == 1)
    x, y = (dataclasses.replace(p.tensors[n], shape=(1 << 16,), view_of="")
            for n in (step.inputs[0], step.output))
    one = QProgram("lut16", {x.name: x, y.name: y}, (x.name,), (y.name,), (step,))
    codes = np.arange(-32768, 32768).astype(np.int16)
    (got,) = session(to_qdq(one), "plain").run(None, {x.name: dequantize(codes, x.scale, 0)})
    want = run_step(step, [codes], one.tensors)
    np.testing.assert_array_equal(np.round(got / np.float32(y.scale)).astype(np.int64), want)


def _softmax16_program(mask: str, rng: np.random.Generator) -> QProgram:
    """One int16 softmax step over the last axis of [3, 4, 40] codes, made as lower.py makes
    it: ``mask`` "const" (int32 codes, some at -MASK_LIMIT), "add" or "absorb" (an int16
    mask tensor rescaled onto x's codes, or replacing them)."""
    from sw2c.backends.asic.fixed_point import quantize_multiplier
    from sw2c.backends.asic.lower import EXP16_ENTRIES, P_BITS
    from sw2c.backends.asic.program import Requant
    from sw2c.backends.asic.reference import MASK_LIMIT

    shape = (3, 4, 40)
    x = QTensor("x", shape, 2e-4, 0, bits=16)  # differences span past the table's end
    y = QTensor("y", shape, 1 / 32768, 0, bits=16)
    grid = 16 * np.log(2) / (EXP16_ENTRIES - 1)
    exp = np.round(np.exp(np.arange(-(EXP16_ENTRIES - 1), 1) * grid) * (1 << 15))
    mult, shift = quantize_multiplier(np.array([2.0 ** -P_BITS / y.scale]))
    step = Step(Kind.SOFTMAX, ("x",), "y", "softmax", {"axes": (2,), "exp_interp": tuple(
        int(v[0]) for v in quantize_multiplier(np.array([x.scale / grid * 128])))},
        {"exp": exp.astype(np.int32)}, Requant(mult, shift, 0, -32768, 32767))
    tensors = {"x": x, "y": y}
    if mask == "const":
        m = rng.integers(-1 << 16, 1 << 16, shape[1:]).astype(np.int32)
        m[rng.random(shape[1:]) < 0.2] = -MASK_LIMIT
        step.consts["mask"] = m
    else:
        ratio = 3.7 if mask == "add" else 2.0 ** 22
        tensors["m"] = QTensor("m", shape, x.scale * ratio, 0, bits=16)
        step = dataclasses.replace(step, inputs=("x", "m"))
        step.attrs["mask_absorbs"] = mask == "absorb"
        step.attrs["mask_rescale"] = tuple(int(v[0]) for v in quantize_multiplier(
            np.array([min(ratio, reference.ABSORBING)])))
    return QProgram("softmax16", tensors, step.inputs, ("y",), (step,))


@pytest.mark.parametrize("mask", ["const", "add", "absorb"])
def test_int16_softmax_export_is_exact(mask):
    """An int16 softmax exported in int64 ops (issue 12: ONNX Softmax was up to 7 codes off):
    ``reference.softmax`` and the requantization to the code, with each kind of mask."""
    from sw2c.backends.asic.fixed_point import dequantize

    rng = np.random.default_rng(12)
    p = _softmax16_program(mask, rng)
    sess = session(to_qdq(p), "plain")
    for _ in range(4):
        codes = [rng.integers(-32768, 32768, p.tensors[n].shape).astype(np.int16)
                 for n in p.inputs]
        if mask != "const":  # a sparse mask: mostly 0 codes
            codes[1][rng.random(codes[1].shape) < 0.7] = 0
        feed = {n: dequantize(c, p.tensors[n].scale, 0) for n, c in zip(p.inputs, codes)}
        (got,) = sess.run(None, feed)
        want = run_step(p.steps[0], codes, p.tensors)
        assert want.max() > 1000  # not all underflowed
        np.testing.assert_array_equal(np.round(got / np.float32(p.tensors["y"].scale)), want)
