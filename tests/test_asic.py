"""The asic target: int8 accuracy on real data, the simulator against the C export (an
independent implementation), verify's oracles, the memory plan and the target's limits,
calibration inputs and errors."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import sw2c
from onnx import TensorProto, helper
from sw2c.backends.asic.build import build
from sw2c.backends.asic.c_runner import CExport, find_compiler
from sw2c.backends.asic.program import Kind
from sw2c.backends.asic.reference import quantize_inputs
from sw2c.backends.asic.schedule import Cost
from sw2c.backends.asic.target import load_target, shipped
from sw2c.benchmarks import zoo
from sw2c.errors import SimulationError, TargetError
from sw2c.frontend import import_model
from sw2c.runtime.simulator import Simulator
from sw2c.runtime.verify import describe_oracles
from sw2c.tests.asic_models import DIGITS, digits_data, every_kind
from sw2c.tests.onnx_util import make_model, node_model


@pytest.fixture(scope="module")
def digits() -> tuple[sw2c.Module, dict[str, np.ndarray]]:
    data = digits_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the symbolic batch dim becomes 1
        return sw2c.compile(str(DIGITS), target="asic:tiny", calibration=data["calib"]), data


def test_digits_int8_accuracy_within_one_point_of_fp32(digits):
    module, data = digits
    sess = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    fp32 = sess.run(None, {"input": data["test"]})[0].argmax(axis=1)
    int8 = np.array([module(x[None]).argmax() for x in data["test"]])
    acc_fp32 = np.mean(fp32 == data["labels"])
    acc_int8 = np.mean(int8 == data["labels"])
    assert acc_fp32 > 0.95
    assert acc_int8 >= acc_fp32 - 0.01, (acc_int8, acc_fp32)


def test_digits_simulator_matches_the_c_export_exactly(digits):
    """Against an independent implementation of every kernel: the exported C, built by cc
    (the simulator runs the integer reference's own kernels, so comparing those two only
    checks the memory plan)."""
    module, data = digits
    p = module.program
    cc, why = find_compiler()
    if cc is None:
        pytest.skip(why)
    rng = np.random.default_rng(0)
    cases = [quantize_inputs(p, [x[None]]) for x in data["test"][:120]]
    cases += [[rng.integers(-128, 128, (1, 1, 8, 8), dtype=np.int8)] for _ in range(8)]
    with CExport(p, module.plan, module.name, cc) as lib:
        for q in cases:
            np.testing.assert_array_equal(module.run_int8(q)[0], lib.run_int8(q)[0])


def test_verify_reports_its_oracles_and_skips_c_without_a_compiler(digits, monkeypatch):
    module, data = digits
    oracles = module.report["oracles"]
    assert oracles["reference"]["ran"] and oracles["qdq"]["ran"]
    assert oracles["qdq"]["max_codes_off"] <= 1
    assert oracles["c"]["ran"] == (find_compiler()[0] is not None)
    monkeypatch.setenv("CC", "/nonexistent/sw2c-cc")  # no compiler: skipped, not an error
    again = sw2c.compile(str(DIGITS), target="asic:tiny", input_shapes={"input": (1, 1, 8, 8)},
                         calibration=data["calib"][:64])
    c = again.report["oracles"]["c"]
    assert not c["ran"] and "/nonexistent/sw2c-cc" in c["reason"], c
    assert "skipped the C export (no C compiler" in describe_oracles(again.report)


def test_report_figures_are_consistent(digits):
    module, _ = digits
    r = module.report
    t = load_target("tiny")
    assert r["target"] == "asic:tiny"
    assert r["cycles"] == sum(row["cycles"] for row in r["layers"])
    assert r["latency_us"] == pytest.approx(r["cycles"] / t.clock_mhz, abs=1e-3)
    assert r["macs"] == 8 * 9 * 64 + 16 * 72 * 16 + 256 * 10  # conv1, conv2, dense
    assert r["arena_lower_bound_bytes"] <= r["arena_bytes"] <= r["sram_bytes"] == t.sram_bytes
    assert r["weights_bytes"] >= 8 * 9 + 16 * 72 + 256 * 10
    assert r["output_sqnr_db"]["logits"] > 30
    assert all(row["sqnr_db"] > 30 for row in r["layers"])
    assert {row["calibration"] for row in r["layers"]} <= {"minmax", "percentile", "mse",
                                                          "inherited"}
    _, cost = module.simulator.run(quantize_inputs(module.program,
                                                   [np.zeros((1, 1, 8, 8), np.float32)]))
    assert cost.cycles == r["cycles"] and cost.macs == r["macs"]
    assert cost.energy_pj(t) / 1e6 == pytest.approx(r["energy_uj"], abs=1e-4)


def test_every_kind_is_lowered_and_bit_exact():
    model = every_kind()
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    module = sw2c.compile(model, target="asic", calibration=calib)  # verify=True: bit-exact
    kinds = {s.kind for s in module.program.steps}
    assert kinds >= {Kind.CONV, Kind.DEPTHWISE, Kind.SUM_POOL, Kind.MAX_POOL, Kind.ADD,
                     Kind.MUL, Kind.LUT, Kind.CONCAT, Kind.SLICE, Kind.PAD}
    per_channel = [s for s in module.program.steps if s.kind is Kind.LUT
                   and s.consts["table"].ndim == 2]
    assert per_channel, "the per-channel affine should be one [C, 256] table"
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = calib[:1]
    want = ref.run(None, {"x": x})[0]
    got = module(x)
    assert 10 * np.log10(np.sum(want ** 2) / np.sum((got - want) ** 2)) > 20


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_zoo_nets_compile_for_the_edge_target(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no calibration data: random inputs
        module = sw2c.compile(zoo.get(name), target="asic:edge")
    r = module.report
    assert r["arena_bytes"] <= r["sram_bytes"]
    assert r["output_sqnr_db"]["output"] > 20
    assert r["cycles"] > r["macs"] / 256  # a 16x16 array cannot beat one MAC per lane


def test_a_plan_that_overlaps_live_tensors_is_caught():
    graph = import_model(every_kind())
    b = build(graph, load_target("edge"), np.ones((2, 3, 8, 8), np.float32))
    x = quantize_inputs(b.program, [np.ones((1, 3, 8, 8), np.float32)])
    squashed = dataclasses.replace(  # every buffer at offset 0: live tensors collide
        b.plan, offsets={n: 0 for n in b.plan.offsets},
        buffers=tuple(dataclasses.replace(buf, offset=0) for buf in b.plan.buffers))
    with pytest.raises(SimulationError, match="overwritten"):
        Simulator(b.program, squashed, b.costs).run(x)
    shifted = dataclasses.replace(b.plan, offsets={n: o + 1 for n, o in b.plan.offsets.items()})
    with pytest.raises(SimulationError, match="outside its buffer"):
        Simulator(b.program, shifted, b.costs).run(x)
    _, cost = Simulator(b.program, b.plan, b.costs).run(x)
    assert cost == sum(b.costs, Cost())


def test_model_too_big_for_the_sram_says_how_many_bytes(tmp_path):
    small = tmp_path / "small.toml"
    text = load_target("tiny").path
    small.write_text(open(text).read().replace("sram_bytes = 65536", "sram_bytes = 256"))
    with pytest.raises(TargetError, match=r"needs 640 bytes of SRAM .* has 256"):
        sw2c.compile(str(DIGITS), target=f"asic:{small}", input_shapes={"input": (1, 1, 8, 8)},
                     calibration=digits_data()["calib"])


def test_targets_by_name_and_path_and_bad_ones(tmp_path):
    assert {"tiny", "edge"} <= set(shipped())
    assert load_target(load_target("tiny").path).mac_rows == 8
    with pytest.raises(sw2c.Sw2cError, match="unknown asic target 'nope'.*tiny"):
        load_target("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text(open(load_target("tiny").path).read().replace("mac_rows = 8", "mac_rows = -1"))
    with pytest.raises(sw2c.Sw2cError, match=r"mac_rows must be a positive int"):
        load_target(str(bad))
    with pytest.raises(sw2c.Sw2cError, match="unknown target 'gpu'"):
        sw2c.compile(str(DIGITS), target="gpu")


def test_an_op_without_an_int8_kernel_names_the_node():
    model = node_model("Div", {"a": [1, 4], "b": [1, 4]})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y0", TensorProto.FLOAT, [1, 4]))
    with pytest.raises(sw2c.UnsupportedOpError, match="div_node.*no int8 kernel.*--target cpu"):
        sw2c.compile(model, target="asic", calibration={"a": np.ones((1, 4), np.float32),
                                                         "b": np.ones((1, 4), np.float32)})


def test_calibration_formats(tmp_path):
    data = digits_data()["calib"][:8]
    shapes = {"input": (1, 1, 8, 8)}
    np.savez(tmp_path / "c.npz", anything=data)
    forms = [data, list(data[:, None]), {"input": data}, [{"input": x[None]} for x in data],
             str(tmp_path / "c.npz")]
    scales = {sw2c.compile(str(DIGITS), target="asic:tiny", input_shapes=shapes, calibration=c,
                           verify=False).program.tensors["input"].scale for c in forms}
    assert len(scales) == 1
    with pytest.raises(sw2c.InputError, match="calibration data for input 'input' has shape"):
        sw2c.compile(str(DIGITS), target="asic:tiny", input_shapes=shapes,
                     calibration=np.ones((3, 5), np.float32))
    with pytest.raises(sw2c.InputError, match="cannot read calibration file"):
        sw2c.compile(str(DIGITS), target="asic:tiny", input_shapes=shapes,
                     calibration=str(tmp_path / "missing.npz"))


def test_run_int8_validates_its_inputs(digits):
    module, _ = digits
    with pytest.raises(sw2c.InputError, match="int8 array of shape"):
        module.run_int8([np.zeros((1, 1, 8, 8), np.float32)])
    with pytest.raises(sw2c.InputError, match="float32"):
        module(np.zeros((1, 1, 8, 8), np.int8))


def test_softmax_is_one_integer_step_with_probability_scale():
    model = node_model("Softmax", {"a": [2, 10]}, axis=1)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y0", TensorProto.FLOAT,
                                                                 [2, 10]))
    x = (np.random.default_rng(0).standard_normal((16, 2, 10)) * 3).astype(np.float32)
    module = sw2c.compile(model, target="asic", calibration=list(x))  # bit-exact
    (step,) = module.program.steps
    out = module.program.tensors[step.output]
    assert step.kind is Kind.SOFTMAX and (out.scale, out.zero_point) == (1 / 256, -128)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got, want = module(x[0]), ref.run(None, {"a": x[0]})[0]
    assert np.abs(got - want).max() < 4 / 256  # input rounding (scale ~0.07) + 1/256 output
    assert np.abs(got.sum(axis=1) - 1).max() < 6 / 256


def test_export_writes_c_that_load_refuses_to_dlopen(digits, tmp_path):
    module, _ = digits
    source = module.export(str(tmp_path))
    assert source.endswith("digits_cnn.c")
    with pytest.raises(sw2c.ModelError, match="holds C source for asic:tiny"):
        sw2c.load(str(tmp_path))


@pytest.mark.parametrize("kernel", [1, 3])
def test_grouped_conv_is_one_block_diagonal_conv(kernel):
    rng = np.random.default_rng(kernel)
    pads = [kernel // 2] * 4
    w = (rng.standard_normal((64, 8, kernel, kernel)) * 0.3).astype(np.float32)
    model = node_model("Conv", {"x": [1, 32, 6, 6]}, inits={"w": w}, group=4, pads=pads)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y0", TensorProto.FLOAT,
                                                                 [1, 64, 6, 6]))
    calib = list(rng.standard_normal((8, 1, 32, 6, 6)).astype(np.float32))
    module = sw2c.compile(model, target="asic", calibration=calib)  # verify: bit-exact
    convs = [s for s in module.program.steps if s.kind is Kind.CONV]
    assert len(convs) == 1
    # the 16x16 array skips the all-zero weight tiles off the diagonal; 8-channel groups
    # share a 16-row tile, so it runs between the useful MACs and half the dense ones
    useful = 36 * 8 * kernel * kernel * 64
    assert useful <= module.report["macs"] <= 4 * useful // 2
    assert module.report["output_sqnr_db"]["y0"] > 30


def test_a_pad_value_outside_its_input_range_gets_its_own_scale():
    """Pad(-1.2) of a ReLU output: the ReLU's codes cannot hold -1.2, so the input is
    rescaled first instead of the pad value being clamped to 0."""
    n = helper.make_node
    model = make_model([n("Relu", ["x"], ["r"], name="relu"),
                        n("Pad", ["r", "pads", "v"], ["y"], name="pad")], {"x": [1, 4, 5, 5]},
                       ["y"], {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                               "v": np.array(-1.2, np.float32)})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                 [1, 4, 7, 7]))
    calib = list(np.random.default_rng(0).standard_normal((8, 1, 4, 5, 5)).astype(np.float32))
    module = sw2c.compile(model, target="asic", calibration=calib)
    assert [s.kind for s in module.program.steps] == [Kind.LUT, Kind.LUT, Kind.PAD]
    corner = module(calib[0])[0, 0, 0, 0]
    assert abs(corner + 1.2) < 0.02
