"""``sw2c.compile(model, target="cpu:NAME", precision="int8")``: the asic int8 program built
for Cortex-M4, RV32IMAC, AArch64 and wasm32, run in unicorn / wasmtime, equal to the simulator
bit for bit (saturating inputs and rounding near-ties included); the restructured conv loops
(SMLAD on DSP cores, portable C elsewhere) on convs of every shape the kernel handles.

Instruction counts are deterministic (the emulator executes the same program on the same
input), so a bound on them is a test of the generated code, not a timing. The emulator tests
skip without the ``cross`` extra (``pip install 'sw2c[cross]'``)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import sw2c
from onnx import TensorProto, helper
from sw2c.errors import Sw2cError
from sw2c.runtime.cross import MissingExtraError, UnknownTargetError
from sw2c.tests.asic_models import DIGITS, digits_data, every_kind
from sw2c.tests.onnx_util import make_model
from sw2c.tests.test_cross import SATURATING, _cases

TARGETS = ("cortex-m4", "rv32imac", "aarch64", "wasm32")
EXTRAS = ("ziglang", "unicorn", "wasmtime", "elftools")
# Cortex-M4 instructions per MAC of the digits CNN, whole inference (22.6 before the DSP
# loops): deterministic, so a regression in the generated loops fails here
M4_BOUND = 4.0


def _digits(target: str, **kw) -> sw2c.Module:
    return sw2c.compile(str(DIGITS), target=f"cpu:{target}", precision="int8",
                        input_shapes={"input": (1, 1, 8, 8)},
                        calibration=digits_data()["calib"][:64], **kw)


# ------------------------------------------------------------------------------------------
# Errors (no optional package needed)
# ------------------------------------------------------------------------------------------

def test_unknown_cross_target_lists_the_known_ones():
    with pytest.raises(UnknownTargetError, match="cortex-m4.*wasm32"):
        _digits("cortex-m3")


def test_bad_precision_is_named():
    with pytest.raises(Sw2cError, match="precision='int4'"):
        sw2c.compile(str(DIGITS), target="cpu:cortex-m4", precision="int4")
    with pytest.raises(Sw2cError, match="not built.*cpu:NAME"):
        sw2c.compile(str(DIGITS), target="cpu", precision="int8")


def test_missing_extra_is_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ziglang" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"pip install 'sw2c\[cross\]'"):
        _digits("cortex-m4")


# ------------------------------------------------------------------------------------------
# Build and emulate
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits() -> dict[str, sw2c.Module]:
    for module in EXTRAS:
        pytest.importorskip(module)
    return {t: _digits(t) for t in TARGETS}  # verify=True: 12 inputs checked on the way


@pytest.mark.parametrize("target", TARGETS)
def test_digits_int8_bit_exact_with_the_simulator(digits, target):
    module = digits[target]
    assert module.report["verified_inputs"] >= 12
    floats, codes = _cases(module)
    assert len(codes) >= 20 and len(SATURATING) >= 4
    saturated = 0
    for q in codes:
        want = module.reference.run([q])[0][0]
        got = module.run_int8(q)[0]
        np.testing.assert_array_equal(got, want, err_msg=f"{target}: codes {q.ravel()[:8]}")
        saturated += int(np.isin(want, (-128, 127)).any())
    assert saturated >= 4
    for x in floats:  # float in, float out through the emulated C's boundary
        want = module.dequantize(module.reference.run([module.quantize(x)])[0][0])
        np.testing.assert_array_equal(module(x), want, err_msg=target)


def test_report_counts_instructions_and_sizes(digits):
    r = digits["cortex-m4"].report
    assert r["target"] == "cpu:cortex-m4" and r["precision"] == "int8" and r["macs"] == 25600
    assert "not cycles" in r["instructions_note"]
    assert r["instructions"] == round(r["instructions_per_mac"] * r["macs"], 0) or \
        abs(r["instructions"] / r["macs"] - r["instructions_per_mac"]) < 1e-3
    assert r["instructions_per_mac"] < M4_BOUND, r["instructions_per_mac"]
    assert 0 < r["text_bytes"] < 8192 and r["rodata_bytes"] >= r["weights_bytes"]
    assert r["arena_bytes"] > 0 and r["bss_bytes"] >= r["arena_bytes"]
    # the other targets run the same loops without SMLAD: more instructions per MAC
    assert digits["rv32imac"].report["instructions"] > r["instructions"]


def test_a_miscompile_is_caught_by_verify(digits, monkeypatch):
    """verify compares with the simulator: a C export whose conv rounds differently fails."""
    from sw2c.errors import VerificationError
    from sw2c.runtime.cross import asic_c

    real = asic_c.emit_c

    def perturbed(*args):
        source, header = real(*args)
        old = "return (hi + ((int32_t)1 << (h - 1))) >> h;"
        assert old in source
        return source.replace(old, "return hi >> h;"), header

    monkeypatch.setattr(asic_c, "emit_c", perturbed)
    with pytest.raises(VerificationError, match="differs from the simulator"):
        _digits("cortex-m4")


def _convs() -> tuple:
    """Convs of every shape the kernel's paths take: 3 input channels (patch gathered,
    K = 27 not a multiple of 4), stride 2 + dilation 2 + asymmetric pads, 5 and 7 output
    channels (not multiples of 4), a 1x1 conv read in place, a dense layer (K = 210)."""
    rng = np.random.default_rng(7)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.4).astype(np.float32)

    inits = {"w1": w(5, 3, 3, 3), "b1": w(5), "w2": w(7, 5, 3, 3), "b2": w(7),
             "w3": w(5, 7, 1, 1), "b3": w(5), "wf": w(210, 6), "shape": np.array([1, 210])}
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 0, 2, 1]),
        n("Relu", ["c1"], ["r1"]),
        n("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 1], dilations=[2, 2],
          pads=[2, 1, 1, 2]),
        n("Conv", ["c2", "w3", "b3"], ["c3"]),
        n("Reshape", ["c3", "shape"], ["flat"]),
        n("MatMul", ["flat", "wf"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, 3, 11, 9]}, ["y"], inits)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6]))
    calib = [rng.standard_normal((1, 3, 11, 9)).astype(np.float32) for _ in range(16)]
    return model, calib


def conv_case(model: str) -> tuple:
    """(onnx model, calibration) of a conv-shapes case: "convs" or "every_kind"."""
    if model == "convs":
        return _convs()
    rng = np.random.default_rng(3)
    return every_kind(), [rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
                          for _ in range(16)]


@pytest.mark.parametrize("target", ("cortex-m4", "rv32imac", "wasm32"))
@pytest.mark.parametrize("model", ("convs", "every_kind"))
def test_conv_shapes_bit_exact(target, model):
    for module in EXTRAS:
        pytest.importorskip(module)
    onnx_model, calib = conv_case(model)
    module = sw2c.compile(onnx_model, target=f"cpu:{target}", precision="int8",
                          calibration=calib)
    shape = module.inputs[0][1]
    rng = np.random.default_rng(11)
    codes = [rng.integers(-128, 128, shape, dtype=np.int8) for _ in range(6)]
    codes += [np.full(shape, v, np.int8) for v in (-128, 127)]
    for q in codes:
        want = module.reference.run([q])[0]
        for g, w_ in zip(module.run_int8(q), want):
            np.testing.assert_array_equal(g, w_, err_msg=f"{model} on {target}")


def test_m55_without_qemu_builds_and_says_what_to_install(monkeypatch):
    """(With qemu-system-arm the M55 runs: tests/test_cross_m55.py.)"""
    for module in EXTRAS:
        pytest.importorskip(module)
    from sw2c.runtime.cross import EmulationError, qemu

    monkeypatch.setattr(qemu, "qemu_path", lambda: None)
    m55 = _digits("cortex-m55")
    assert 0 < m55.report["text_bytes"] < 8192 and "instructions" not in m55.report
    with pytest.raises(EmulationError, match="qemu-system-arm"):
        m55(digits_data()["test"][:1])


def test_cli_bench_prints_instructions(tmp_path, capsys):
    for module in EXTRAS:
        pytest.importorskip(module)
    from sw2c.cli import main

    calib = tmp_path / "calib.npz"
    np.savez(calib, input=digits_data()["calib"][:32])
    args = [str(DIGITS), "--target", "cpu:cortex-m4", "--precision", "int8",
            "--input-shape", "input=1,1,8,8", "--calibration", str(calib)]
    assert main(["bench", *args]) == 0
    out = capsys.readouterr().out
    assert "per inference" in out and "per MAC" in out and "not cycles" in out
    assert main([*args, "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "digits_cnn.c").exists()


def _depthwise_model() -> tuple:
    """Two 3x3 depthwise convs over 32 channels (pads, stride 2, asymmetric pads)."""
    rng = np.random.default_rng(0)
    c = 32

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.4).astype(np.float32)

    inits = {"wd": w(c, 1, 3, 3), "bd": w(c), "wd2": w(c, 1, 3, 3), "bd2": w(c)}
    n = helper.make_node
    nodes = [n("Conv", ["x", "wd", "bd"], ["d1"], group=c, pads=[1, 1, 1, 1]),
             n("Conv", ["d1", "wd2", "bd2"], ["y"], group=c, strides=[2, 2],
               pads=[0, 1, 1, 0])]
    model = make_model(nodes, {"x": [1, c, 12, 12]}, ["y"], inits)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                 [1, c, 6, 6]))
    return model, [rng.standard_normal((1, c, 12, 12)).astype(np.float32) for _ in range(16)]


def test_depthwise_instructions_per_mac():
    """The depthwise kernel finds each tap's pixel once per position, runs the channels
    innermost and pairs taps for SMLAD on DSP cores: 14.7 instructions per MAC on the
    Cortex-M4 (71 with a bounds check per product, 17.6 without the tap pairs); bit-exact
    (verify) and deterministic, so the bound is a test of the generated loop."""
    for module in EXTRAS:
        pytest.importorskip(module)
    model, calib = _depthwise_model()
    m4 = sw2c.compile(model, target="cpu:cortex-m4", precision="int8", calibration=calib)
    assert m4.report["verified_inputs"] >= 12
    assert m4.report["instructions_per_mac"] < 16, m4.report["instructions_per_mac"]
