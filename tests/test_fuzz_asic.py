"""Differential fuzzing of the int8 path (benchmarks/fuzz_asic.py): random graphs compiled for
the asic target, the simulator against the integer reference, the exported C against the
simulator, every step against its float ideal.

Reproduce a failing seed with ``python -m sw2c.benchmarks.fuzz_asic --count 1 --seed SEED``
(it also minimizes and saves it).
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import onnx
import pytest
import sw2c
from onnx import TensorProto, helper
from sw2c.backends.asic.reference import quantize_inputs
from sw2c.benchmarks import fuzz, fuzz_asic

SEEDS = 40
CHUNK = 20
CC = shutil.which("cc")


@pytest.mark.parametrize("start", range(0, SEEDS, CHUNK))
def test_random_models_pass_on_asic(start: int) -> None:
    """check_asic on seeded random graphs (the C part runs when a cc is installed)."""
    failures = {}
    for seed in range(start, start + CHUNK):
        failure = fuzz_asic.check_asic(fuzz_asic.asic_model(seed), seed)
        if failure is not None:
            failures[seed] = failure
    assert not failures, "\n".join(f"seed {seed}: {f.kind}: {f.message}"
                                   for seed, f in failures.items())


def test_most_biased_models_lower_for_asic() -> None:
    """ASIC_WEIGHTS keeps the cases mostly on what the target lowers (the rest is skipped)."""
    outcomes = [fuzz_asic.classify(fuzz_asic.asic_model(seed), seed) for seed in range(SEEDS)]
    skipped = sum(f is not None and f.kind == "skipped" for f in outcomes)
    assert skipped <= SEEDS // 2, skipped
    raw = [f"seed {seed}: {f.message}" for seed, f in enumerate(outcomes)
           if f is not None and f.kind == fuzz.RAW]
    assert not raw, "\n".join(raw)


def test_sequence_cases_start_from_token_ids() -> None:
    """One seed in five is a sequence case: embedding lookups of int token-id inputs, which
    the target compiles (GATHER steps) and the checks pass."""
    seeds = [s for s in range(100) if np.random.default_rng(
        [s, fuzz_asic.SEQUENCE_STREAM]).random() < fuzz_asic.SEQUENCE_SHARE]
    assert 10 <= len(seeds) <= 30, len(seeds)
    for seed in seeds[:3]:
        model = fuzz_asic.asic_model(seed)
        ints = [v for v in model.graph.input
                if v.type.tensor_type.elem_type in (TensorProto.INT64, TensorProto.INT32)]
        assert ints and any(n.op_type == "Gather" for n in model.graph.node), seed
        failure = fuzz_asic.classify(model, seed)
        assert failure is None or failure.kind in ("lossy", "skipped"), failure
        if failure is None:
            assert fuzz_asic.check_asic(model, seed) is None


def _raises(error: BaseException):
    def fail(*args, **kwargs):
        raise error
    return fail


def _internal(cause: BaseException) -> sw2c.CompileError:
    """sw2c's "internal error" CompileError wrapping ``cause`` (as errors.internal_errors)."""
    try:
        raise sw2c.CompileError("internal error while compiling the model") from cause
    except sw2c.CompileError as e:
        return e


@pytest.mark.parametrize("error", [KeyError("t3"), _internal(AttributeError("attrs"))],
                         ids=["raw", "wrapped"])
def test_an_exception_that_is_not_a_sw2c_error_is_a_raw_exception_failure(monkeypatch, error):
    """Both fuzzers: anything but a Sw2cError (or sw2c's internal-error wrapper of one) is a
    "raw-exception" failure naming the exception, never a skip or an "error"."""
    model = _conv_relu()
    monkeypatch.setattr(sw2c, "compile", _raises(error))
    for failure in (fuzz_asic.classify(model, 0), fuzz.check(model, 0)):
        assert failure is not None and failure.kind == fuzz.RAW, failure
        assert failure.error in ("KeyError", "AttributeError")
        assert failure.signature().startswith(f"{fuzz.RAW}:{failure.error}:")
    assert fuzz.RAW in fuzz_asic.KINDS and fuzz.RAW in fuzz.KINDS
    assert fuzz_asic.check_asic(model, 0) is not None
    monkeypatch.setattr(sw2c, "compile", _raises(sw2c.CompileError("no cc")))
    assert fuzz_asic.classify(model, 0).kind == "error"


def test_an_exception_outside_the_check_is_counted_not_fatal_to_the_child():
    mode = fuzz.Mode("sw2c.benchmarks.fuzz_asic", _raises(IndexError("seed")), fuzz_asic.classify,
                     lambda seed: 1, fuzz_asic.KINDS, fuzz_asic.BENIGN)
    kind, message, error, _ = fuzz._answer(("seed", 3), mode)
    assert (kind, error) == (fuzz.RAW, "IndexError") and "outside the check" in message


SAVED = sorted(fuzz_asic.FAILURE_DIR.glob("*.onnx"), key=lambda p: p.stem)


@pytest.mark.parametrize("path", SAVED, ids=[p.stem for p in SAVED])
def test_saved_reproducers_pass(path) -> None:
    """The minimized failures a soak saved (benchmarks/fuzz_failures_asic/) pass once fixed."""
    seed = int(path.stem) if path.stem.isdigit() else 0
    failure = fuzz_asic.check_asic(onnx.load(path), seed)
    assert failure is None, f"{path}: {failure.kind}: {failure.message}"


def _model(nodes: list, inputs: dict[str, list[int]], outputs: list[str],
           inits: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v)
                     for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[onnx.numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return fuzz.to_model(fuzz.Parts.of(model))  # with the outputs' inferred shapes


def test_an_op_without_int8_kernel_is_skipped_not_failed() -> None:
    model = _model([helper.make_node("Div", ["x", "y"], ["z"], name="n0_Div")],
                   {"x": [1, 4], "y": [1, 4]}, ["z"])
    failure = fuzz_asic.classify(model, 0)
    assert failure is not None and failure.kind == "skipped", failure
    assert failure.error == "Div (div)"
    assert fuzz_asic.check_asic(model, 0) is None


def _compiled(model: onnx.ModelProto, seed: int = 0) -> sw2c.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw2c.compile(model, target="asic", verify=False,
                            calibration=fuzz_asic.calibration_feeds(model, seed))


def _conv_relu() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {"w": (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32),
             "b": rng.standard_normal(4).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return _model(nodes, {"x": [1, 3, 6, 6]}, ["y"], inits)


def test_step_errors_see_a_wrong_bias() -> None:
    """The accuracy oracle: every step lands near its float ideal, and a bias off by 20
    codes' worth of accumulator is caught (whatever the outputs' SQNR)."""
    model = _conv_relu()
    module = _compiled(model)
    p = module.program
    feeds = fuzz.random_feeds(model, 0)
    q = quantize_inputs(p, [feeds[n] for n in p.inputs])
    assert all(e.worst <= fuzz_asic.STEP_TOLERANCE for e in fuzz_asic.step_errors(module, q))
    (conv,) = [s for s in p.steps if s.kind.value == "conv"]
    mult = float(conv.requant.multiplier[0]) * 2.0 ** (float(conv.requant.shift[0]) - 31)
    conv.consts["bias"] = conv.consts["bias"] + np.int32(round(20 / mult))
    off = [e for e in fuzz_asic.step_errors(module, q) if e.worst > fuzz_asic.STEP_TOLERANCE]
    assert [e.kind for e in off] == ["conv"]
    ref = fuzz.reference(model, feeds)
    failure = fuzz_asic.accuracy(module, feeds, ref)
    assert failure is not None and failure.kind == "inaccurate", failure


def test_sqnr() -> None:
    ref = np.array([3.0, 4.0])
    assert fuzz_asic.sqnr_db(ref, ref) == np.inf
    assert fuzz_asic.sqnr_db(ref, ref + [0.5, 0.0]) == pytest.approx(20.0)
    assert fuzz_asic.sqnr_db(np.zeros(2), np.ones(2)) == -np.inf


@pytest.mark.skipif(CC is None, reason="needs a C compiler (cc)")
def test_exported_c_runs_through_ctypes() -> None:
    model = _conv_relu()
    module = _compiled(model)
    p = module.program
    rng = np.random.default_rng(1)
    cases = [[rng.integers(-128, 128, p.tensors[n].shape, dtype=np.int8) for n in p.inputs]
             for _ in range(2)]
    for qs, got in zip(cases, fuzz_asic.run_c(module, cases, CC)):
        for want, g in zip(module.run_int8(qs), got):
            np.testing.assert_array_equal(g, want)


def test_isolated_asic_mode() -> None:
    """The soak's child process runs the asic check (the mode pickles into it)."""
    worker = fuzz.Isolated(timeout=120, mode=fuzz_asic.ASIC)
    try:
        kind, _, _, ops = worker.ask(("seed", 1))
        assert kind in (*fuzz_asic.BENIGN, *fuzz_asic.KINDS) and ops
    finally:
        worker.close()
