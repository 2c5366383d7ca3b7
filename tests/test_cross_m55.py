"""Cortex-M55 (Armv8.1-M, Helium/MVE): built with zig, run in ``qemu-system-arm``'s mps3-an547
board (unicorn 2.1 has no M55), checked like the other cross targets: the int8 digits CNN bit
for bit with the simulator on 20+ inputs (saturating ones and rounding near-ties included),
fp32 within ``verify``'s tolerance of the host; the MVE instructions counted in the linked
program; a fault, a runaway loop and a missing qemu are ``EmulationError``s.

qemu-system-arm is a system package (Debian/Ubuntu: ``apt-get install qemu-system-arm``): the
tests that run it skip without it, unless ``SW2C_REQUIRE_QEMU=1`` (CI), which makes a missing
qemu a failure."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import sw2c
from sw2c.runtime.cross import EmulationError, lookup
from sw2c.tests.asic_models import DIGITS, digits_data
from sw2c.tests.test_cross import _cases
from sw2c.tests.test_cross_fp32 import _close, _images

SHAPES = {"input": (1, 1, 8, 8)}


def _need_toolchain() -> None:
    for module in ("ziglang", "elftools"):
        pytest.importorskip(module)


@pytest.fixture(scope="module")
def qemu() -> str:
    """qemu-system-arm's path; skip without it (fail with SW2C_REQUIRE_QEMU=1)."""
    _need_toolchain()
    from sw2c.runtime.cross.qemu import qemu_path

    path = qemu_path()
    if path is None:
        if os.environ.get("SW2C_REQUIRE_QEMU") == "1":
            pytest.fail("SW2C_REQUIRE_QEMU=1 but qemu-system-arm is not on PATH")
        pytest.skip("qemu-system-arm is not installed (apt-get install qemu-system-arm)")
    return path


def _digits(precision: str, **kw) -> sw2c.Module:
    calib = {"calibration": digits_data()["calib"][:64]} if precision == "int8" else {}
    return sw2c.compile(str(DIGITS), target="cpu:cortex-m55", precision=precision,
                        input_shapes=SHAPES, **calib, **kw)


@pytest.fixture(scope="module")
def int8(qemu) -> sw2c.Module:
    return _digits("int8", verify=True)  # verify: 12 inputs against the simulator, in qemu


@pytest.fixture(scope="module")
def fp32(qemu) -> sw2c.Module:
    return _digits("fp32", verify=True)  # verify: onnxruntime, as on the host


def test_int8_digits_bit_exact_with_the_simulator(int8):
    r = int8.report
    assert r["verified_inputs"] >= 12 and r["emulator"] == "qemu"
    floats, codes = _cases(int8)
    assert len(codes) >= 20
    got = int8.cross.run_int8_many([[q] for q in codes])  # one qemu boot for them all
    saturated = 0
    for q, g in zip(codes, got):
        want = int8.reference.run([q])[0][0]
        np.testing.assert_array_equal(g[0], want, err_msg=f"codes {q.ravel()[:8]}")
        saturated += int(np.isin(want, (-128, 127)).any())
    assert saturated >= 4
    for x, g in zip(floats, int8.cross.run_many([[x] for x in floats])):
        want = int8.dequantize(int8.reference.run([int8.quantize(x)])[0][0])
        np.testing.assert_array_equal(g[0], want)
    x = digits_data()["test"][:1]  # and through the Module API, one boot per call
    np.testing.assert_array_equal(int8(x), int8.dequantize(int8.reference.run(
        [int8.quantize(x)])[0][0]))


def test_int8_instructions_are_counted(int8):
    """qemu -icount + SysTick: deterministic, so equal on a repeat and bounded per MAC."""
    r = int8.report
    assert "not cycles" in r["instructions_note"]
    # 3.8 per MAC with the SMLAD loop (as on the M4), 2.5 with Helium's VMLADAVA
    assert r["macs"] < r["instructions"] < 3 * r["macs"]
    q = int8.quantize(digits_data()["test"][:1])
    assert int8.cross.call_int8([q], count=True).instructions == r["instructions"]
    assert 0 < r["text_bytes"] < 8192 and r["bss_bytes"] > 0


def test_fp32_digits_match_the_host(fp32):
    r = fp32.report
    assert 0 <= r["verification_error"] <= 1e-3 and r["instructions"] > r["macs"] / 4
    assert r["vector_lanes_generated"] == 4
    host = _digits_host()
    for x in _images():
        got, want = fp32(x), host(x)
        assert _close(got, want), (got, want)


def _digits_host() -> sw2c.Module:
    return sw2c.compile(str(DIGITS), target="cpu", input_shapes=SHAPES, verify=False)


def test_mve_instructions_are_in_the_program():
    """The linked M55 programs use Helium (q registers): fp32 its vector FMA, int8 the conv
    loop's 16-code multiply-accumulate; the same counter finds none in the Cortex-M33 build (no
    MVE), so it can fail."""
    _need_toolchain()
    from sw2c.runtime.cross.mve import build_mve_instructions

    fp = build_mve_instructions(_digits("fp32", verify=False).cross)
    assert fp["vfma.f32"] >= 8 and sum(fp.values()) >= 50, fp
    i8 = build_mve_instructions(_digits("int8", verify=False).cross)
    assert i8["vmlava.s8"] >= 4, i8  # the conv loop's VMLADAVA (LLVM prints vmlava)
    m33 = sw2c.compile(str(DIGITS), target="cpu:cortex-m33", input_shapes=SHAPES,
                       verify=False)
    assert sum(build_mve_instructions(m33.cross).values()) == 0


def test_mve_counter_reads_both_listings():
    from sw2c.runtime.cross.mve import mve_instructions

    objdump = "  40: 91 ed 00 1f \tvldrw.u32\tq0, [r1]\n  44: 00 ee 01 0e \tvfma.f32\tq0, q1, q2"
    assert mve_instructions(objdump) == {"vldrw.u32": 1, "vfma.f32": 1}
    asm = "\tvmlava.s32\tr0, q1, q2\n\tvadd.f32\ts0, s1, s2\n\tvpst\n\tadd\tr0, r1"
    assert mve_instructions(asm) == {"vmlava.s32": 1}


SPIN = r"""
#include <stdint.h>
/* n iterations of 4 instructions */
int spin(const int32_t *n, int32_t *out)
{
    int32_t k = n[0];
    __asm__ volatile("1: subs %0, %0, #1\n nop\n nop\n bne 1b\n" : "+r"(k) : : "cc");
    out[0] = k;
    return 0;
}

int crash(const int32_t *n, int32_t *out)
{
    out[0] = *(volatile int32_t *)0xF0000000u + n[0]; /* no memory there: a bus fault */
    return 0;
}
"""


@pytest.fixture(scope="module")
def spin(qemu, tmp_path_factory):
    from sw2c.runtime.cross.qemu import QemuEmulator
    from sw2c.runtime.cross.toolchain import build

    d: Path = tmp_path_factory.mktemp("m55_spin")
    (d / "spin.c").write_text(SPIN)
    return QemuEmulator(build(lookup("cortex-m55"), [d / "spin.c"], ["spin", "crash"],
                              directory=d, name="spin"))


def _n(v: int) -> list[np.ndarray]:
    return [np.array([v], np.int32)]


def test_qemu_counts_instructions_exactly_enough(spin):
    calls = spin.call_many("spin", [_n(10_000), _n(1_000_000)], [((1,), np.int32)], count=True)
    for n, c in zip((10_000, 1_000_000), calls):
        assert abs(c.instructions - 4 * n) <= 64 and c.outputs[0][0] == 0 and c.returned == 0


def test_fault_and_runaway_are_errors(spin):
    with pytest.raises(EmulationError, match=r"faulted at pc=0x[0-9a-f]+ \(crash\+"):
        spin.call("crash", _n(1), [((1,), np.int32)])
    with pytest.raises(EmulationError, match=r"instruction cap.*spin\+"):
        spin.call("spin", _n(10_000_000), [((1,), np.int32)], cap=100_000)


def test_without_qemu_it_builds_and_says_what_to_install(monkeypatch):
    """No qemu-system-arm: the build links and reports its size, running names the package."""
    _need_toolchain()
    from sw2c.runtime.cross import qemu

    monkeypatch.setattr(qemu, "qemu_path", lambda: None)
    for precision in ("int8", "fp32"):
        module = _digits(precision, verify=True)  # verify needs a run: not done, said so
        r = module.report
        assert 0 < r["text_bytes"] < 8192 and "instructions" not in r
        assert "apt-get install qemu-system-arm" in r["instructions_note"]
        with pytest.raises(EmulationError, match="cortex-m55.*qemu-system-arm.*apt-get"):
            module(digits_data()["test"][:1])


def _relu_sigmoid_model():
    from onnx import TensorProto, helper
    from sw2c.tests.onnx_util import make_model

    nodes = [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Sigmoid", ["a"], ["s"])]
    model = make_model(nodes, {"a": [16]}, ["r", "s"])
    for out in model.graph.output:
        out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [16]))
    return model


@pytest.mark.parametrize("rewrite", (True, False))
def test_nan_lanes_of_mve_compares(qemu, monkeypatch, rewrite):
    """MVE's VCMP LT/LE are true for a NaN lane, LLVM 14 takes them as ordered: Relu(NaN) and
    Sigmoid(NaN) came out 0. With the compares rewritten (mve_fcmp) they are NaN as on the
    host; without, qemu shows the wrong zeros (so this test can fail)."""
    from sw2c.runtime.cross import mve_fcmp

    if not rewrite:
        monkeypatch.setattr(mve_fcmp, "nan_safe_compares", lambda text: (text, 0))
    model = _relu_sigmoid_model()
    m55 = sw2c.compile(model, target="cpu:cortex-m55", verify=False)
    x = np.linspace(-2, 2, 16, dtype=np.float32)
    x[[3, 12]] = np.nan
    relu, sigmoid = m55(x)
    nan_kept = bool(np.isnan(relu[[3, 12]]).all() and np.isnan(sigmoid[[3, 12]]).all())
    assert nan_kept == rewrite
    assert np.isfinite(relu[~np.isnan(x)]).all() and np.isfinite(sigmoid[~np.isnan(x)]).all()


def test_nan_safe_compares_text():
    from sw2c.runtime.cross.mve_fcmp import nan_safe_compares

    ir = ("  %5 = fcmp ugt <4 x float> %4, zeroinitializer\n"
          "  %6 = fcmp olt <4 x float> %4, <float 1.0, float 1.0, float 1.0, float 1.0>\n"
          "  %7 = fcmp olt float %a, %b\n")
    text, n = nan_safe_compares(ir)
    assert n == 2 and "%7 = fcmp olt float %a, %b" in text
    assert "%5 = or <4 x i1> %sw2c.nan.0.cmp, %sw2c.nan.0.nan0" in text
    assert "%6 = and <4 x i1> %sw2c.nan.1.cmp, %sw2c.nan.1.ok" in text
    assert text.count("icmp ugt <4 x i32>") == 3  # %4 twice, the constant once


@pytest.mark.parametrize("model", ("convs", "every_kind"))
def test_conv_shapes_bit_exact(qemu, model):
    """The Helium conv loop (VMLADAVA, tail-predicated loads) on every conv path: K = 27,
    odd channel counts, strides, dilations, pads, a 1x1 conv in place, a dense layer; the
    every-kind model (depthwise, pools, adds ...) besides."""
    from sw2c.tests.test_cross_int8 import conv_case

    onnx_model, calib = conv_case(model)
    module = sw2c.compile(onnx_model, target="cpu:cortex-m55", precision="int8",
                          calibration=calib)  # verify: 12 inputs bit-exact, in qemu
    shape = module.inputs[0][1]
    rng = np.random.default_rng(11)
    codes = [rng.integers(-128, 128, shape, dtype=np.int8) for _ in range(6)]
    codes += [np.full(shape, v, np.int8) for v in (-128, 127)]
    for q, got in zip(codes, module.cross.run_int8_many([[q] for q in codes])):
        for g, w_ in zip(got, module.reference.run([q])[0]):
            np.testing.assert_array_equal(g, w_, err_msg=model)


def test_a_batch_larger_than_the_io_region_boots_in_parts(spin):
    """call_many splits a batch whose arrays do not fit the 1 MB io region."""
    cases, out = [_n(k + 1) for k in range(4)], [((70_000,), np.int32)]  # 280 KB outputs
    assert spin._bytes(cases, out) > spin.io.size
    calls = spin.call_many("spin", cases, out)
    assert [c.returned for c in calls] == [0] * 4
    assert all(c.outputs[0].shape == (70_000,) and c.outputs[0][0] == 0 for c in calls)


CAST_MODEL = """
import numpy as np, sw2c
from onnx import TensorProto, helper
from sw2c.tests.onnx_util import make_model
nodes = [helper.make_node("Mul", ["x", "four"], ["m"]),
         helper.make_node("Cast", ["m"], ["y"], to=TensorProto.INT32)]
model = make_model(nodes, {"x": [1, 6]}, ["y"], {"four": np.array(4, np.float32)})
model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.INT32, [1, 6]))
module = sw2c.compile(model, target="cpu:cortex-m55", verify=False)
print(module.report["text_bytes"])
"""


def test_tail_folded_cast_does_not_abort_llvm():
    """fuzz_cross seed 5058: MVE masked loads/stores around fptosi.sat made LLVM abort the
    process (an MC assertion), so mve_fcmp turns them off. In a child process: an abort
    here would end the test session."""
    import subprocess
    import sys

    _need_toolchain()
    res = subprocess.run([sys.executable, "-c", CAST_MODEL], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.split()[-1]) > 0
