"""Cross targets: target descriptions, the zig toolchain and the emulators, proven on the asic
C export of the digits CNN: built for Cortex-M4, RV32IMAC, AArch64 and wasm32 and run in
unicorn / wasmtime, its int8 outputs equal the simulator's bit for bit (float boundary too)
on 20+ inputs, saturating ones and rounding near-ties included.

The emulator tests skip when the ``cross`` extra is missing (``pip install 'sw2c[cross]'``);
the description tests always run."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sw2c
from sw2c.errors import Sw2cError
from sw2c.runtime.cross import (
    TARGETS,
    EmulationError,
    MissingExtraError,
    UnknownTargetError,
    lookup,
    names,
)
from sw2c.runtime.cross.toolchain import linker_script, startup_source, zig
from sw2c.tests.asic_models import DIGITS, digits_data

ISSUE_TARGETS = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "rv32imac", "rv32imafc",
                 "aarch64", "wasm32")
RUN_TARGETS = ("cortex-m4", "cortex-m7", "cortex-m33", "rv32imac", "rv32imafc", "aarch64",
               "wasm32")


# ------------------------------------------------------------------------------------------
# Descriptions (no optional package needed)
# ------------------------------------------------------------------------------------------

def test_every_issue_target_is_described():
    assert set(ISSUE_TARGETS) <= set(TARGETS)
    for name in ISSUE_TARGETS:
        t = lookup(name)
        assert lookup(f"cpu:{name}") is t and t.name == name
        assert t.triple and t.zig_target and t.zig_cpu and t.vector_lanes >= 1
        if t.bare_metal:
            assert {r.name for r in t.memory} >= {"flash", "ram", "io", "trap"}
    m4 = lookup("cortex-m4")
    assert m4.has_fpu and "+vfp4d16sp" in m4.zig_cpu and m4.region("scs").base == 0xE000E000
    assert not lookup("rv32imac").has_fpu and lookup("rv32imac").float_abi == "soft"
    assert lookup("cortex-m55").emulator == "qemu"  # qemu-system-arm's mps3-an547 board
    assert lookup("wasm32").vector_lanes == 4 and "+simd128" in lookup("wasm32").features


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(UnknownTargetError, match="cortex-m3") as e:
        lookup("cortex-m3")
    assert isinstance(e.value, Sw2cError)
    for name in names():
        assert name in str(e.value)


def test_host_is_a_description_built_on_demand():
    h = lookup("host")
    assert lookup("cpu") is h and h.emulator == "native" and h.threads
    assert h.vector_lanes in (4, 8, 16)


def test_generated_startup_and_linker_script():
    m4 = lookup("cortex-m4")
    start, script = startup_source(m4), linker_script(m4)
    assert "0xED88" in start and "sw2c_vectors" in start  # the CPACR write, the vector table
    assert "ORIGIN = 0x20000000" in script and "AT > FLASH" in script
    assert "mstatus" in startup_source(lookup("rv32imafc"))
    assert "cpacr_el1" in startup_source(lookup("aarch64"))


def test_missing_toolchain_says_which_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ziglang" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"pip install 'sw2c\[cross\]'"):
        zig()


# ------------------------------------------------------------------------------------------
# Build and emulate (the cross extra)
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def cross() -> Iterator[dict]:
    """The digits CNN compiled for asic:edge, its C export built for every run target and for
    the M55 (once per test session)."""
    for module in ("ziglang", "unicorn", "wasmtime", "elftools"):
        pytest.importorskip(module)
    from sw2c.runtime.cross.asic_c import CrossCExport

    module = sw2c.compile(str(DIGITS), target="asic:edge", verify=False,
                          input_shapes={"input": (1, 1, 8, 8)},
                          calibration=digits_data()["calib"][:64])
    targets = (*RUN_TARGETS, "cortex-m55")
    with ThreadPoolExecutor(4) as pool:  # zig runs in subprocesses: build side by side
        made = pool.map(lambda t: CrossCExport(module.program, module.plan, "digits", t), targets)
        builds = dict(zip(targets, made))
    try:
        yield {"module": module, "builds": builds}
    finally:
        for b in builds.values():
            b.close()


# 8x8 black/white images (bit 63 = pixel 0; 1 = code 127) that drive a logit to 127 (classes
# 0, 2) or to -128 (classes 0, 7): found by flipping pixels greedily against the simulator.
SATURATING = (0x147263636222BD18, 0xAAAEF9194838E087, 0xDDEF170A0A5BFE7B, 0x4BAAF9F1EA41F75D)


def _binary_image(bits: int) -> np.ndarray:
    on = np.array([(bits >> (63 - i)) & 1 for i in range(64)], bool)
    return np.where(on, 127, -128).astype(np.int8).reshape(1, 1, 8, 8)


def _cases(module) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(float inputs, int8 codes): test images, over-range images (quantize saturates),
    NaN/inf/-0/huge values, near-ties of the input rounding; codes at the int8 limits (the
    accumulators and requantization saturate) and random codes."""
    data = digits_data()
    scale, zp = module.quantization["input"]
    rng = np.random.default_rng(13)
    floats = [x[None] for x in data["test"][:8]]
    floats += [x[None] * 4 - 1 for x in data["calib"][:4]]  # in [-1, 3]: saturates both ways
    # x / scale == k + 0.5 exactly in float32 (the C divides by the float32 scale)
    ties = ((rng.integers(-128, 127, 64) - zp + 0.5) * float(np.float32(scale))).astype(
        np.float32)
    assert np.sum(ties / np.float32(scale) % 1 == 0.5) > 48
    special = ties.copy()
    special[:6] = [np.nan, np.inf, -np.inf, -0.0, 1e30, -1e30]
    floats += [ties.reshape(1, 1, 8, 8), special.reshape(1, 1, 8, 8)]
    codes = [np.full((1, 1, 8, 8), v, np.int8) for v in (-128, 127)]
    codes.append(np.where(np.indices((1, 1, 8, 8)).sum(0) % 2 == 0, 127, -128).astype(np.int8))
    codes += [rng.integers(-128, 128, (1, 1, 8, 8), dtype=np.int8) for _ in range(5)]
    codes += [_binary_image(p) for p in SATURATING]
    codes += [module.quantize(x) for x in floats]
    return floats, codes


@pytest.mark.parametrize("target", RUN_TARGETS)
def test_int8_bit_exact_with_the_simulator(cross, target):
    module, build = cross["module"], cross["builds"][target]
    floats, codes = _cases(module)
    assert len(codes) >= 20
    saturated = 0
    for q in codes:
        want = module.run_int8(q)[0]
        got = build.run_int8([q])[0]
        np.testing.assert_array_equal(got, want, err_msg=f"{target}, codes {q.ravel()[:8]}")
        saturated += int(np.isin(want, (-128, 127)).any())
    assert saturated >= 4, "SATURATING no longer saturates the logits: search new images"
    for x in floats:  # the float boundary (quantize/dequantize) is IEEE float32 everywhere
        want = module.dequantize(module.run_int8(module.quantize(x))[0])
        np.testing.assert_array_equal(build.run([x])[0], want, err_msg=target)


def _per_instruction_count(emu, q: np.ndarray) -> int:
    """Instructions of one ``run_int8`` counted by unicorn's per-instruction hook."""
    import unicorn

    seen = [0]

    def hook(*_) -> None:
        seen[0] += 1

    uc = emu.emulator.uc
    handle = uc.hook_add(unicorn.UC_HOOK_CODE, hook)
    uc.ctl_flush_tb()
    try:
        emu.call_int8([q])
    finally:
        uc.hook_del(handle)
        uc.ctl_flush_tb()
    return seen[0]


def test_instruction_counts(cross):
    """Counts are deterministic: Cortex-M4 does more than one instruction per MAC (SMLAD
    does two, but patches, requantization and loops cost too); the per-block counter agrees
    with unicorn's per-instruction hook on RV32 (16- and 32-bit encodings mixed) and is at
    least it on Thumb (unicorn's hook skips instructions whose IT condition fails; they still
    execute)."""
    module = cross["module"]
    q = module.quantize(digits_data()["test"][:1])
    macs = module.report["macs"]
    counts = {}
    for target in ("cortex-m4", "rv32imac"):
        emu = cross["builds"][target]
        counts[target] = emu.call_int8([q], count=True).instructions
        per = _per_instruction_count(emu, q)
        assert counts[target] >= per > macs, (target, counts[target], per)
        if target == "rv32imac":
            assert counts[target] == per
    assert counts["cortex-m4"] == cross["builds"]["cortex-m4"].call_int8([q], True).instructions
    assert cross["builds"]["wasm32"].call_int8([q]).instructions > macs  # fuel


def test_instruction_cap_stops_a_run(cross):
    q = np.zeros((1, 1, 8, 8), np.int8)
    for target in ("cortex-m4", "wasm32"):
        with pytest.raises(EmulationError, match="no return within|fuel"):
            cross["builds"][target].call_int8([q], cap=1000)


def test_m55_builds_and_without_qemu_says_what_to_install(cross, monkeypatch):
    """The M55 runs in qemu-system-arm (tests/test_cross_m55.py); without it, it still links
    and running names the package to install."""
    from sw2c.runtime.cross import qemu
    from sw2c.runtime.cross.emulate import open_emulator

    m55 = cross["builds"]["cortex-m55"]
    assert 0 < m55.binary.sizes[".text"] < 8192 and m55.binary.sizes[".bss"] > 0
    monkeypatch.setattr(qemu, "qemu_path", lambda: None)
    with pytest.raises(EmulationError, match="cortex-m55.*apt-get install qemu-system-arm"):
        open_emulator(m55.binary)


PERTURBED = {  # C that rounds differently from the simulator, and the inputs to catch it
    # the convs' requantization (conv_mbqm: mbqm's rounding for shift <= -1, the digits CNN's)
    "requantize rounds down": ("(hi + ((int32_t)1 << (h - 1))) >> h", "hi >> h", "int8"),
    "quantize rounds ties toward zero": (  # for v >= 0: ceil(v - 0.5) instead of floor(v + 0.5)
        "r = v + (v >= 0.0f ? 0.5f : -0.5f);",
        "r = v >= 0.0f ? (float)(int32_t)(v - 0.5f) + ((float)(int32_t)(v - 0.5f) < v - 0.5f"
        " ? 1.0f : 0.0f) : v - 0.5f;", "float"),
}


@pytest.mark.parametrize("perturb", PERTURBED)
def test_a_perturbed_rounding_is_caught(cross, monkeypatch, perturb):
    """The comparison can fail: the C export with its requantization rounding (to nearest ->
    down) or its input rounding (ties away from zero -> toward zero) changed must differ from
    the simulator on some case. (Ties of the requantization itself never occur here: the
    product would need ~37 trailing zero bits.)"""
    from sw2c.runtime.cross import asic_c

    old, new, path = PERTURBED[perturb]
    real = asic_c.emit_c

    def perturbed(*args):
        source, header = real(*args)
        assert old in source
        return source.replace(old, new), header

    monkeypatch.setattr(asic_c, "emit_c", perturbed)
    module = cross["module"]
    floats, codes = _cases(module)
    with asic_c.CrossCExport(module.program, module.plan, "digits", "cortex-m4") as build:
        if path == "int8":
            assert any((build.run_int8([q])[0] != module.run_int8(q)[0]).any() for q in codes)
        else:
            want = [module.dequantize(module.run_int8(module.quantize(x))[0]) for x in floats]
            assert any((build.run([x])[0] != w).any() for x, w in zip(floats, want))


MANY_ARGS = """
#include <stdint.h>
/* ten pointers: past the argument registers of every ABI (4 on Arm, 8 on RV32 and AArch64) */
int many(const int32_t *a, const int32_t *b, const int32_t *c, const int32_t *d,
         const int32_t *e, const int32_t *f, const int32_t *g, const int32_t *h,
         const int32_t *i, int32_t *out)
{
    out[0] = a[0] + 2 * b[0] + 3 * c[0] + 4 * d[0] + 5 * e[0] + 6 * f[0] + 7 * g[0]
             + 8 * h[0] + 9 * i[0];
    out[1] = i[1];
    return 7;
}
"""


@pytest.mark.parametrize("target", ("cortex-m4", "rv32imac", "aarch64", "wasm32"))
def test_arguments_past_the_registers_go_on_the_stack(cross, tmp_path, target):
    from sw2c.runtime.cross.emulate import open_emulator
    from sw2c.runtime.cross.toolchain import build

    (tmp_path / "many.c").write_text(MANY_ARGS)
    binary = build(lookup(target), [tmp_path / "many.c"], ["many"], directory=tmp_path)
    ins = [np.array([k + 1, 100 + k], np.int32) for k in range(9)]
    got = open_emulator(binary).call("many", ins, [((2,), np.int32)], count=True)
    assert got.returned == 7 and got.instructions > 0
    assert got.outputs[0].tolist() == [sum((k + 1) ** 2 for k in range(9)), 108]
