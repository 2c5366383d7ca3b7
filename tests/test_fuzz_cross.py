"""Differential fuzzing of the cross targets (benchmarks/fuzz_cross.py): random graphs built
for Cortex-M4 and wasm32, fp32 run in the emulator against onnxruntime, int8 against the
simulator bit for bit. A CI-sized sweep; the soak is
``python -m sw2c.benchmarks.fuzz_cross --count 600``. Reproduce a seed of this sweep with
``python -m sw2c.benchmarks.fuzz_cross --target cortex-m4 --target wasm32 --count 1 --seed S``.

Skips without the ``cross`` extra (``pip install 'sw2c[cross]'``)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sw2c.benchmarks import fuzz, fuzz_cross

TARGETS = ("cortex-m4", "wasm32")
SEEDS = range(12, 24)  # 3 graphs per target and precision
# wasm32 fp32 cases that hit a known codegen bug (duplicate llvm.fmuladd declaration on a
# target without FMA, backends/cpu/llvm.py module_text): pass once it is fixed
KNOWN_BAD = (2, 6)


@pytest.fixture(autouse=True)
def _extras() -> None:
    for module in ("ziglang", "elftools", "unicorn", "wasmtime"):
        pytest.importorskip(module)


def _check(seed: int) -> fuzz.Failure | None:
    return fuzz_cross.check_cross(fuzz_cross.cross_model(seed, TARGETS), seed, targets=TARGETS)


def test_cases_cover_every_target_and_precision() -> None:
    cases = {fuzz_cross.case(s, TARGETS) for s in SEEDS}
    assert cases == {(t, p) for t in TARGETS for p in fuzz_cross.PRECISIONS}
    assert {fuzz_cross.case(s)[0] for s in range(2 * len(fuzz_cross.TARGETS))} == set(
        fuzz_cross.TARGETS)


def test_random_models_pass_on_cortex_m4_and_wasm32() -> None:
    failures = {seed: f for seed in SEEDS if (f := _check(seed)) is not None}
    assert not failures, "\n".join(f"seed {seed}: {f.kind}: {f.message}"
                                   for seed, f in failures.items())


@pytest.mark.parametrize("seed", KNOWN_BAD)
def test_known_wasm32_fp32_cases(seed: int) -> None:
    """Found by the soak: a model using both llvm.fma (GEMM) and llvm.fmuladd (math.py) on a
    target without FMA declared llvm.fmuladd twice."""
    assert fuzz_cross.case(seed, TARGETS) == ("wasm32", "fp32")
    failure = _check(seed)
    assert failure is None, failure.message


def test_a_wrong_int8_code_is_a_mismatch(monkeypatch) -> None:
    """The check can fail: one int8 code off by one in the emulator's output is caught."""
    from sw2c.runtime.cross.asic_c import CrossCExport

    real = CrossCExport.run_int8

    def off_by_one(self, qfeeds):
        outs = real(self, qfeeds)
        outs[0].flat[0] = np.int8(outs[0].flat[0] ^ 1)
        return outs

    monkeypatch.setattr(CrossCExport, "run_int8", off_by_one)
    seed = 13  # cortex-m4 int8
    failure = fuzz_cross.classify(fuzz_cross.cross_model(seed, TARGETS), seed, targets=TARGETS)
    assert failure is not None and failure.kind == "mismatch", failure
    assert failure.message.startswith("[cortex-m4 int8] int8 quantized test feed")


def test_an_fp32_error_beyond_tolerance_is_a_mismatch(monkeypatch) -> None:
    """The check can fail: fp32 outputs 1% off onnxruntime's are caught."""
    from sw2c.runtime.cross.fp32 import Fp32Build

    real = Fp32Build.call

    def scaled(self, arrays, count=False, cap=None):
        result = real(self, arrays, count, cap)
        for o in result.outputs:
            if o.dtype == np.float32:
                o *= np.float32(1.01)
        return result

    monkeypatch.setattr(Fp32Build, "call", scaled)
    seed = 14  # wasm32 fp32
    failure = fuzz_cross.classify(fuzz_cross.cross_model(seed, TARGETS), seed, targets=TARGETS)
    assert failure is not None and failure.kind == "mismatch", failure
    assert failure.message.startswith("[wasm32 fp32]")


def test_mode_is_picklable_and_the_flags_pick_the_cases() -> None:
    """The soak's mode goes to a spawned child; --target / --precision decide the cases."""
    targets, precisions, rest = fuzz_cross._split_options(
        ["--target", "cpu:rv32imac", "--precision", "int8", "--count", "3"])
    assert (targets, precisions, rest) == (["rv32imac"], ["int8"], ["--count", "3"])
    mode = pickle.loads(pickle.dumps(fuzz_cross.mode(targets, precisions)))
    assert mode.model.keywords == {"targets": ("rv32imac",), "precisions": ("int8",)}
    assert fuzz_cross.case(5, targets, precisions) == ("rv32imac", "int8")
    with pytest.raises(SystemExit):
        fuzz_cross._split_options(["--target", "cortex-m3"])


def test_lrn_links_and_matches_on_cortex_m33() -> None:
    """Found by the soak (seed 1026): LRN's power called powf, which a freestanding build has
    no library for; sw2c now supplies it."""
    from onnx import TensorProto, helper

    node = helper.make_node("LRN", ["x"], ["y"], size=3, alpha=0.5, beta=0.75, bias=1.5)
    graph = helper.make_graph([node], "lrn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 5, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 5, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    assert fuzz_cross.check_fp32(model, 0, "cortex-m33") is None
