"""fp32 on cross targets: ``sw2c.compile(model, target="cpu:NAME")`` builds the cpu backend's
float code for each chip (LLVM for its triple, CPU, features and float ABI), links it with
zig and runs it in unicorn / wasmtime. The digits CNN must agree with the host build within
``verify``'s tolerance on every target (NaN positions must agree too; a NaN's payload and sign
may differ between ISAs, so they are not compared); the C math functions sw2c supplies where
compiler-rt has none (fmaximumf, fminimumf, roundevenf) must give the host's bits.

The emulator tests skip when the ``cross`` extra is missing (``pip install 'sw2c[cross]'``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sw2c
from llvmlite import ir
from onnx import TensorProto, helper
from sw2c.errors import Sw2cError
from sw2c.runtime.cross import EmulationError, UnknownTargetError, lookup, names
from sw2c.runtime.verify import RTOL
from sw2c.tests.asic_models import DIGITS, digits_data
from sw2c.tests.onnx_util import make_model

RUN_TARGETS = ("cortex-m4", "cortex-m7", "cortex-m33", "rv32imac", "rv32imafc", "aarch64",
               "wasm32")
SHAPES = {"input": (1, 1, 8, 8)}


def _need(target: str) -> None:
    """Skip unless the toolchain and ``target``'s emulator are installed."""
    for module in ("ziglang", "elftools"):
        pytest.importorskip(module)
    emulator = lookup(target).emulator
    if emulator in ("unicorn", "wasmtime"):
        pytest.importorskip(emulator)


def _digits(target: str, **kw) -> sw2c.Module:
    return sw2c.compile(str(DIGITS), target=target, input_shapes=SHAPES, **kw)


@pytest.fixture(scope="module")
def host() -> sw2c.Module:
    return _digits("cpu", verify=False)


def _images() -> list[np.ndarray]:
    """Test images, random normals (negative pixels), huge values, and one NaN pixel."""
    rng = np.random.default_rng(7)
    xs = [x[None] for x in digits_data()["test"][:4]]
    xs += [rng.standard_normal((1, 1, 8, 8)).astype(np.float32) for _ in range(2)]
    xs.append(np.full((1, 1, 8, 8), 3e4, np.float32))
    nan = xs[0].copy()
    nan[0, 0, 3, 3] = np.nan
    return [*xs, nan]


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    """verify's tolerance (relative to the largest finite output), NaNs where the host has
    them."""
    finite = np.abs(want[np.isfinite(want)])
    scale = max(float(finite.max()) if finite.size else 0.0, 1e-6)
    return bool(np.allclose(got, want, rtol=RTOL, atol=RTOL * scale, equal_nan=True))


# ------------------------------------------------------------------------------------------
# Errors and descriptions (no optional package needed)
# ------------------------------------------------------------------------------------------

def test_unknown_target_is_a_sw2c_error_listing_the_known_ones():
    with pytest.raises(UnknownTargetError) as e:
        _digits("cpu:cortex-m3")
    assert isinstance(e.value, Sw2cError)
    for name in names():
        assert name in str(e.value)


def test_threads_on_a_core_without_them_is_named():
    with pytest.raises(Sw2cError, match="threads=4.*cortex-m4"):
        _digits("cpu:cortex-m4", threads=4)


def test_fused_multiply_add_only_where_the_chip_has_it():
    """llvm.fma is a soft fmaf call per MAC without hardware FMA: there it becomes fmuladd,
    also in a module that declares fmuladd itself (math.py's polynomials)."""
    from sw2c.backends.cpu.llvm import F32, emit_object, intrinsic, new_module

    def text(target: str) -> str:
        m = new_module("t", lookup(target))
        fn = ir.Function(m, ir.FunctionType(F32, [F32] * 3), "f")
        b = ir.IRBuilder(fn.append_basic_block())
        x = b.call(intrinsic(m, "llvm.fmuladd", [F32], F32, [F32] * 3), list(fn.args))
        b.ret(b.call(intrinsic(m, "llvm.fma", [F32], F32, [F32] * 3), [x, *fn.args[1:]]))
        emit_object(m, reloc="static")  # LLVM takes it: one declaration of each intrinsic
        return str(m)

    for target in ("rv32imac", "wasm32"):
        assert "llvm.fma." not in text(target) and "llvm.fmuladd.f32" in text(target)
    for target in ("cortex-m4", "rv32imafc", "aarch64"):
        assert "llvm.fma.f32" in text(target)
    assert lookup("cortex-m4").triple in text("cortex-m4")


def test_spin_hint_is_per_architecture():
    from sw2c.backends.cpu.team import spin_hint

    assert spin_hint("x86_64-unknown-linux-gnu")[0] == "llvm.x86.sse2.pause"
    assert spin_hint(lookup("aarch64").triple)[0] == "llvm.aarch64.hint"
    assert spin_hint(lookup("cortex-m4").triple)[0] == "llvm.arm.hint"
    for target in ("rv32imac", "wasm32"):
        assert spin_hint(lookup(target).triple) is None


def test_host_export_assembly_has_no_host_only_syntax():
    from sw2c.runtime.export import weights_assembly

    text = weights_assembly("m", "m.weights", 64)
    assert "@" not in text and '.incbin "m.weights"' in text and "%progbits" in text


# ------------------------------------------------------------------------------------------
# Build and emulate (the cross extra)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", RUN_TARGETS)
def test_digits_fp32_matches_the_host(target, host):
    _need(target)
    module = _digits(f"cpu:{target}", verify=True)  # verify: onnxruntime, as on the host
    r = module.report
    assert r["precision"] == "fp32" and r["target"] == f"cpu:{target}"
    assert 0 <= r["verification_error"] <= RTOL
    assert r["instructions"] > 0 and "not cycles" in r["instructions_note"]
    assert r["rodata_bytes"] >= r["weights_bytes"] and r["text_bytes"] > 0
    for x in _images():
        got, want = module(x), host(x)
        assert _close(got, want), (target, got, want)
    out = np.empty((1, 10), np.float32)
    module.run_into([_images()[0]], [out])
    assert _close(out, host(_images()[0]))


def test_soft_float_has_no_fmaf_call_per_mac():
    """RV32IMAC: fmuladd, so about 150 instructions per MAC (fmaf made it 8-9 M in all)."""
    _need("rv32imac")
    module = _digits("cpu:rv32imac", verify=False)
    assert module.report["instructions"] < 6_000_000
    from sw2c.runtime.cross.fp32 import undefined_symbols

    calls = undefined_symbols(module.cross.code.read_bytes(), lookup("rv32imac"))
    assert "__mulsf3" in calls and "fmaf" not in calls


def _arm_attributes(path: Path) -> dict[str, object]:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        section = ELFFile(f).get_section_by_name(".ARM.attributes")
        return {a.tag: a.value for sub in section.iter_subsections()
                for subsub in sub.iter_subsubsections() for a in subsub.iter_attributes()}


def test_cortex_m55_builds_uses_mve_and_without_qemu_says_so(monkeypatch):
    """No pip emulator models the M55 (it runs in qemu-system-arm: tests/test_cross_m55.py):
    without qemu the build and link work, the object says it is MVE (integer and float) code
    with the hard-float ABI, and running it is an EmulationError naming what to install."""
    from sw2c.runtime.cross import qemu

    _need("cortex-m55")
    monkeypatch.setattr(qemu, "qemu_path", lambda: None)
    module = _digits("cpu:cortex-m55", verify=True)  # verify cannot run: skipped, said below
    r = module.report
    assert r["text_bytes"] > 0 and "instructions" not in r
    assert "M55" in r["instructions_note"]
    attrs = _arm_attributes(module.cross.code)
    assert attrs["TAG_CPU_NAME"] == "cortex-m55" and attrs["TAG_MVE_ARCH"] == 2
    assert attrs["TAG_ABI_VFP_ARGS"] == 1
    with pytest.raises(EmulationError, match="cortex-m55.*qemu"):
        module(_images()[0])


def test_arm_code_passes_floats_in_fpu_registers():
    """zig's C and compiler-rt for eabihf take floats in s0-s15: so must sw2c's code, or a
    call into compiler-rt (fminf, floorf ...) reads garbage."""
    _need("cortex-m4")
    module = _digits("cpu:cortex-m4", verify=False)
    assert _arm_attributes(module.cross.code)["TAG_ABI_VFP_ARGS"] == 1


def _minmax_round_model():
    nodes = [helper.make_node("Max", ["a", "b"], ["mx"]),
             helper.make_node("Min", ["a", "b"], ["mn"]), helper.make_node("Round", ["a"], ["rd"])]
    model = make_model(nodes, {"a": [16], "b": [16]}, ["mx", "mn", "rd"])
    for out in model.graph.output:  # the checker wants output shapes
        out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [16]))
    return model


@pytest.mark.parametrize("target", ("rv32imac", "cortex-m4"))
def test_supplied_math_functions_give_the_hosts_bits(target):
    """rv32imac calls sw2c's fmaximumf / fminimumf / roundevenf, Cortex-M4 (no VRINTN) its
    roundevenf: signed zeros, infinities, ties to even, NaN either side."""
    _need(target)
    model = _minmax_round_model()
    module = sw2c.compile(model, target=f"cpu:{target}", verify=False)
    host = sw2c.compile(model, verify=False)
    nan, inf = np.float32(np.nan), np.float32(np.inf)
    a = np.array([0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -2.5, nan, 1.0, -inf, inf, 8388609.0,
                  0.49999997, -1.5, 3.0, -7.25], np.float32)
    b = np.array([-0.0, 0.0, 0.5, nan, -1.0, 2.0, -3.0, 1.0, inf, 5.0, -inf, 1.0, 0.0, -1.5,
                  -2.0, -7.5], np.float32)
    got, want = module(a, b), host(a, b)
    for g, w in zip(got, want):
        same_nan = np.isnan(g) == np.isnan(w)
        bits = g.view(np.uint32) == w.view(np.uint32)
        assert np.all(same_nan) and np.all(bits | np.isnan(w)), (target, g, w)
    if target == "rv32imac":  # the soft functions are really what ran
        assert {p.name for p in module.cross.objects} >= {"test_libm.o"}


def test_export_links_into_a_firmware_build(tmp_path, host):
    """lib<name>.a (code, const weights, arena in .bss) + <name>.h + <name>.json: relinked
    on its own with the start-up code, it runs in the emulator and gives the module's outputs;
    the archive holds no path of this machine."""
    _need("cortex-m4")
    from sw2c.runtime.cross.emulate import open_emulator
    from sw2c.runtime.cross.toolchain import build

    module = _digits("cpu:cortex-m4", verify=False)
    lib = Path(module.export(tmp_path / "out"))
    header = (tmp_path / "out" / "digits_cnn.h").read_text()
    assert "int digits_cnn_run(const float *input, float *logits);" in header
    meta = json.loads((tmp_path / "out" / "digits_cnn.json").read_text())
    assert meta["precision"] == "fp32" and meta["instructions"] == module.report["instructions"]
    assert meta["library"]["undefined_symbols"] == []
    assert meta["library"]["rodata_bytes"] >= meta["weights_bytes"]
    assert meta["library"]["bss_bytes"] >= meta["arena_bytes"]
    data = lib.read_bytes()
    assert str(tmp_path).encode() not in data and b"/tmp/" not in data
    program = build(lookup("cortex-m4"), [], ["digits_cnn_run"], objects=[lib],
                    directory=tmp_path / "fw", name="fw")
    x = _images()[0]
    got = open_emulator(program).call("digits_cnn_run", [x], [((1, 10), np.float32)])
    assert got.returned == 0 and np.array_equal(got.outputs[0], module(x))


def test_cli_bench_and_export_fp32(tmp_path, capsys):
    _need("cortex-m4")
    from sw2c.cli import main

    args = [str(DIGITS), "--target", "cpu:cortex-m4", "--input-shape", "input=1,1,8,8"]
    assert main(["bench", *args]) == 0
    out = capsys.readouterr().out
    assert "fp32" in out and "per inference" in out and "not cycles" in out
    assert re.search(r"[\d,]+ per inference, [\d.]+ per MAC", out)
    assert main([*args, "-o", str(tmp_path)]) == 0
    assert {"libdigits_cnn.a", "digits_cnn.h", "digits_cnn.json"} <= {
        p.name for p in tmp_path.iterdir()}


def _pow_model():
    model = make_model([helper.make_node("Pow", ["a", "b"], ["p"])], {"a": [48], "b": [48]},
                       ["p"])
    for out in model.graph.output:
        out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [48]))
    return model


@pytest.mark.parametrize("target", ("cortex-m4", "wasm32"))
def test_supplied_powf_is_accurate_and_has_c99s_special_cases(target):
    """Pow (and LRN) call powf, which compiler-rt lacks: sw2c's own (exp(y log|x|) in float32)
    is within 1e-5 of numpy and gets C99's special cases exactly (found by
    benchmarks/fuzz_cross.py: a link error before)."""
    _need(target)
    nan, inf = np.nan, np.inf
    special = [(0.0, 0.0), (nan, 0.0), (1.0, nan), (-1.0, inf), (-1.0, -inf), (0.0, -3.0),
               (-0.0, -3.0), (-0.0, -2.0), (-0.0, 3.0), (-0.0, 2.5), (0.5, -inf), (2.0, -inf),
               (0.5, inf), (2.0, inf), (-inf, -3.0), (-inf, -2.0), (-inf, 3.0), (-inf, 0.5),
               (inf, -1.0), (-2.0, 0.5), (-2.0, 3.0), (-2.0, 2.0), (-3.0, 1e30), (nan, 1.0),
               (2.0, nan), (3.0, -100.0), (-0.5, -7.0), (1e-45, 0.5)]
    rng = np.random.default_rng(3)
    a = rng.uniform(0.01, 10, 48).astype(np.float32)
    b = rng.uniform(-8, 8, 48).astype(np.float32)
    a[:len(special)], b[:len(special)] = zip(*special)
    with np.errstate(all="ignore"):
        want = np.power(a, b)
    module = sw2c.compile(_pow_model(), target=f"cpu:{target}", verify=False)
    assert any(p.name.endswith("_libm.o") for p in module.cross.objects)
    got = module(a, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    exact = ~np.isfinite(want) | (want == 0) | (np.arange(48) < len(special) - 1)
    ok = np.isnan(want) | (got == want)
    assert ok[exact].all(), (a[exact & ~ok], b[exact & ~ok], got[exact & ~ok])
    assert np.all(np.signbit(got[exact & ~np.isnan(want)]) == np.signbit(want[exact &
                                                                             ~np.isnan(want)]))
    finite = np.isfinite(want) & ~exact
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5)
