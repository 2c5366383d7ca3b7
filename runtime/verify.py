"""`verify=True`: run the compiled module once against onnxruntime on random inputs; for the
asic target, check the simulator against three oracles (``verify_asic``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import onnx

from ..errors import CompileError, InputError, VerificationError
from ..ir import Graph, Op
from ..ir.types import FLOATS, INTS
from .module import Module

RTOL = 1e-3
# float16 keeps 11 bits: two engines that round at different points differ by a few ulps (2**-11)
RTOL_HALF = 1e-2


def reference_session(model: onnx.ModelProto | str | os.PathLike, threads: int = 1):
    """An onnxruntime session on ``model``; give a path for models over protobuf's 2 GB limit
    (onnxruntime then reads their external data itself). Its graph optimizations are off: the
    oracle is the operators as written, and onnxruntime 1.32's fusions are where its own bugs
    are (LayerNormalization over a leading axis gets an InvStdDev of the wrong shape)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    try:
        return _Reference(ort.InferenceSession(source, so, providers=["CPUExecutionProvider"]))
    except Exception as e:  # onnxruntime's own exception types: the model is beyond it
        raise _unverifiable(e) from e


def _unverifiable(e: Exception) -> VerificationError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return VerificationError(f"onnxruntime cannot run the model to check the compiled code "
                             f"({first}); compile with verify=False (--no-verify) to skip the "
                             "check")


class _Reference:
    """An onnxruntime session whose failures are VerificationErrors (sw2c's error contract)."""

    def __init__(self, session) -> None:
        self.session = session

    def run(self, names, feeds):
        try:
            return self.session.run(names, feeds)
        except Exception as e:
            raise _unverifiable(e) from e


def random_feeds(module: Module, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs valid for the model: floats normal, bools 0/1, ints in [0, the smallest table
    they index) (``module.input_ranges``) or else 0/1 (masks, flags)."""
    rng = np.random.default_rng(seed)
    ranges = getattr(module, "input_ranges", None) or {}
    feeds = {}
    for name, shape, dtype in module.inputs:
        if dtype in FLOATS:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = rng.integers(0, ranges.get(name, 2), shape).astype(dtype)
    return feeds


# ops that carry an input's integer values unchanged to a gather's indices
_CARRIERS = frozenset({Op.RESHAPE, Op.TRANSPOSE, Op.SLICE, Op.CONCAT, Op.PAD})


def index_ranges(graph: Graph) -> dict[str, int]:
    """For each integer graph input that reaches gather indices (through reshapes, slices,
    casts to int...), the size of the smallest axis it indexes: its valid ids are below."""
    sources: dict[str, set[str]] = {v.name: {v.name} for v in graph.inputs
                                    if v.type.dtype in INTS}
    ranges: dict[str, int] = {}
    for node in graph.nodes:
        if node.op in _CARRIERS or (node.op is Op.CAST and node.type.dtype != "bool"):
            found = set().union(*(sources.get(i, set()) for i in node.inputs))
            if found:
                sources[node.name] = found
        elif node.op is Op.GATHER:
            n = graph.type_of(node.inputs[0]).shape[node.attrs["axis"]]
            for name in sources.get(node.inputs[1], ()):
                ranges[name] = min(ranges.get(name, n), n)
    return ranges


def _user_feeds(module: Module, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``verify_inputs``: every input, of its compiled dtype and shape (InputError if not)."""
    if not isinstance(feeds, Mapping):
        raise InputError("verify_inputs must map input names to arrays")
    missing = [n for n, _, _ in module.inputs if n not in feeds]
    if missing:
        raise InputError(f"verify_inputs lacks input '{missing[0]}'")
    return {n: module._check(n, np.asarray(feeds[n]), s) for n, s, _ in module.inputs}


def finite_scale(ref: np.ndarray) -> float:
    """max |ref| over its finite elements (an inf or NaN output must not make every error
    look small)."""
    a = np.abs(np.asarray(ref, np.float64))
    return float(np.max(a, initial=0.0, where=np.isfinite(a)))


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max(|ref|, tiny) over finite elements, equal infinities and NaNs
    counting as agreement: a scale-free figure for reports."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    same = (got == ref) | (np.isnan(got) & np.isnan(ref))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(got - ref))
    return float(np.max(diff, initial=0.0)) / max(finite_scale(ref), 1e-30)


def verify_module(module: Module, model: onnx.ModelProto | str | os.PathLike,
                  seed: int = 0, feeds: Mapping[str, np.ndarray] | None = None) -> float:
    """Compare with onnxruntime on ``feeds`` (default: ``random_feeds``); raise
    VerificationError on disagreement. Returns the largest relative error over the outputs
    (integer and bool outputs must be equal)."""
    feeds = random_feeds(module, seed) if feeds is None else _user_feeds(module, feeds)
    ref = reference_session(model).run([n for n, _, _ in module.outputs], feeds)
    got = module.run(feeds)
    worst = 0.0
    for (name, _, dtype), r in zip(module.outputs, ref):
        g = got[name]
        if dtype not in FLOATS:
            if not np.array_equal(g, r):
                raise VerificationError(
                    f"output '{name}' ({dtype}) differs from onnxruntime in "
                    f"{int(np.sum(g != r))} element(s): a miscompile — please report it with "
                    "the model; compile with verify=False to bypass")
            continue
        r = np.asarray(r, dtype=np.float64)
        rtol = RTOL_HALF if dtype == "float16" else RTOL
        ok = np.allclose(g, r, rtol=rtol, atol=rtol * max(finite_scale(r), 1e-6), equal_nan=True)
        err = relative_error(g, r)
        worst = max(worst, err)
        if not ok:
            raise VerificationError(
                f"output '{name}' differs from onnxruntime (max relative error {err:.2e} > "
                f"{rtol:g}): a miscompile — please report it with the model; "
                "compile with verify=False to bypass")
    return worst


def _random_codes(rng: np.random.Generator, t) -> np.ndarray:
    """Uniformly random codes of an int8 or int16 (token ids: backends/asic/sequence.py) input."""
    info = np.iinfo(t.dtype)
    return rng.integers(info.min, info.max + 1, t.shape, dtype=t.dtype)


def verify_asic(module, model: onnx.ModelProto | str | os.PathLike, samples: int = 8,
                min_sqnr_db: float | None = 10.0) -> None:
    """The asic target's oracles, on the first ``samples`` calibration feeds, two random
    normal feeds and one of uniformly random int8 codes (saturation everywhere):

    * the simulator must equal the integer reference bit for bit (the same kernels in numpy:
      this checks the memory plan, not the kernels);
    * the exported C (``emit_c``: every kernel written a second time), built with the
      machine's C compiler, must equal the simulator bit for bit; skipped, and said in
      ``report["oracles"]``, when there is no C compiler or it cannot build any C99 library;
    * the QDQ export run in onnxruntime (float ops between Quantize/DequantizeLinear) must be
      within one code of the simulator's outputs; where an output is further off, every step
      is re-run in onnxruntime on its int8 inputs and must be within one code of the reference
      (a one-code difference that grew through the graph is not a miscompile).

    A disagreement raises VerificationError (a broken export CompileError). The int8
    outputs' SQNR against onnxruntime's fp32 on the calibration feeds is reported, and under
    ``min_sqnr_db`` (None: no floor) raises AccuracyError with the per-layer SQNR table
    (quantization loss is not a miscompile, but an output lost silently is worse)."""
    from ..backends.asic.build import Sqnr
    from ..backends.asic.fixed_point import dequantize
    from ..backends.asic.reference import quantize_inputs, run_reference

    b = module.build
    p = b.program
    calib = b.feeds[:samples]
    cases = [quantize_inputs(p, [f[n] for n in p.inputs])
             for f in [*calib, *(random_feeds(module, seed) for seed in range(2))]]
    rng = np.random.default_rng(0)
    cases.append([_random_codes(rng, p.tensors[n]) for n in p.inputs])
    oracles: dict[str, dict] = {}
    c_export = _start_c_export(module, oracles)  # cc runs while the oracles below do
    try:
        sim = [module.run_int8(q) for q in cases]
        for i, (q, got) in enumerate(zip(cases, sim)):
            want = run_reference(p, q)
            _same(p.outputs, got, [want[n] for n in p.outputs], "the integer reference", i)
        oracles["reference"] = {"ran": True, "inputs": len(cases), "result": "bit-exact"}
        oracles["qdq"] = _check_qdq(p, cases, sim)
        if c_export is not None:
            oracles["c"] = _check_c_export(c_export, cases, sim)
    finally:
        if c_export is not None:
            c_export.close()
    session = reference_session(model)
    names = [n for n, _, _ in module.outputs]
    accuracy = Sqnr()
    for feed, codes in zip(calib, sim):
        ref = session.run(names, {n: feed[n] for n, _, _ in module.inputs})
        for n, r, q in zip(names, ref, codes):
            t = p.tensors[n]
            accuracy.add(n, np.reshape(r, q.shape), dequantize(q, t.scale, t.zero_point))
    module.report["verified_inputs"] = len(cases)
    module.report["oracles"] = {k: oracles[k] for k in ("reference", "c", "qdq")}
    module.report["output_sqnr_db"] = accuracy.db()
    from ..backends.asic.accuracy import enforce

    enforce(module.report, module.report["output_sqnr_db"], min_sqnr_db, len(calib))


def describe_oracles(report: dict) -> str:
    """One line for the command line: which oracles the asic simulator was checked against,
    and which were skipped and why."""
    what = {"reference": "the integer reference", "c": "the C export",
            "qdq": "the QDQ export in onnxruntime"}
    oracles = report.get("oracles", {})
    exact = [what[k] for k in ("reference", "c") if oracles.get(k, {}).get("ran")]
    parts = [f"bit-exact with {' and '.join(exact)}"] if exact else []
    if oracles.get("qdq", {}).get("ran"):
        parts.append(f"within {QDQ_MAX_LSB} code of {what['qdq']}")
    line = f"simulator {', '.join(parts)} on {report.get('verified_inputs', 0)} inputs"
    skipped = [f"{what[k]} ({o['reason']})" for k, o in oracles.items() if not o.get("ran")]
    return line + (f"; skipped {', '.join(skipped)}" if skipped else "")


QDQ_MAX_LSB = 1  # onnxruntime's float32 ops round once, like the program; ties may differ
# an int16 tensor's, in int16 codes (1/256 of an int8 code): its requantization rounds once
# too (the int16 softmax is exported in integer ops, exact), but a LayerNorm's integer
# statistics are ONNX LayerNormalization within one or two
QDQ16_MAX_LSB = 4


def _qdq_tolerance(t) -> int:
    """The QDQ oracle's tolerance of a tensor, in its own codes."""
    return QDQ16_MAX_LSB if t.bits == 16 else QDQ_MAX_LSB


# the C oracle's limit: the export holds its weights as C arrays, ~5 bytes of source per
# weight, and cc parses about 1 MB/s (1 MiB of weights: ~4 s, beside the simulator)
C_ORACLE_MAX_WEIGHTS = 1 << 20


def _same(outputs, got: list[np.ndarray], want: list[np.ndarray], oracle: str, i: int
          ) -> None:
    """VerificationError naming the output, how many codes differ and the input index."""
    for name, g, w in zip(outputs, got, want):
        w = np.asarray(w).reshape(g.shape)
        if not np.array_equal(g, w):
            raise VerificationError(
                f"output '{name}': the simulator differs from {oracle} in "
                f"{int(np.sum(g != w))} of {g.size} element(s) on verification input {i}: a "
                "miscompile — please report it with the model; compile with verify=False to "
                "bypass")


def _start_c_export(module, oracles: dict[str, dict]):
    """Start building the C export in the background; None (and why, in ``oracles``) when
    there is no C compiler."""
    from ..backends.asic.c_runner import CExport, find_compiler

    cc, why = find_compiler()
    if cc is None:
        oracles["c"] = {"ran": False, "reason": why}
        return None
    weights = module.program.weights_bytes
    if weights > C_ORACLE_MAX_WEIGHTS:  # cc parses ~1 MB of C per second: minutes
        oracles["c"] = {"ran": False, "reason": f"{weights:,} bytes of weights, over the "
                        f"{C_ORACLE_MAX_WEIGHTS:,} that verify builds in C on every compile"}
        return None
    try:
        return CExport(module.program, module.plan, module.name, cc)
    except CompileError as e:  # the compiler cannot even be started
        oracles["c"] = {"ran": False, "reason": str(e)}
        return None


def _check_c_export(c_export, cases: list[list[np.ndarray]], sim: list[list[np.ndarray]]
                    ) -> dict:
    """The exported C on every case must equal the simulator bit for bit."""
    from ..backends.asic.c_runner import compiler_works

    try:
        c_export.wait()
    except CompileError as e:
        broken = compiler_works(c_export.cc)
        if broken:  # the toolchain, not the export: no oracle, not a miscompile
            return {"ran": False, "reason": f"{c_export.cc[0]} cannot build C99: "
                                            f"{broken.splitlines()[0][:200]}"}
        raise CompileError(f"{e} — a bug in sw2c's C export; please report it with the "
                           "model; compile with verify=False to bypass") from e
    outputs = list(c_export.program.outputs)
    for i, (q, want) in enumerate(zip(cases, sim)):
        _same(outputs, want, c_export.run_int8(q), f"the C export ({c_export.cc[0]})", i)
    return {"ran": True, "inputs": len(cases), "result": "bit-exact",
            "compiler": c_export.cc[0]}


def _check_qdq(p, cases: list[list[np.ndarray]], sim: list[list[np.ndarray]]) -> dict:
    """The QDQ export in onnxruntime, fed the dequantized int8 inputs (QuantizeLinear gives
    the same codes back), within QDQ_MAX_LSB codes of the simulator on every output; where
    an output is further off, step by step (``_check_qdq_steps``)."""
    from ..backends.asic.fixed_point import dequantize
    from ..backends.asic.qdq import to_qdq

    model = to_qdq(p)  # outside the try: an export that fails is sw2c's bug, said loudly
    try:
        session = _plain_session(model)
    except Exception as e:  # noqa: BLE001 (onnxruntime's own types: an op it lacks)
        return {"ran": False, "reason": f"onnxruntime cannot load the QDQ export: "
                                        f"{str(e).strip().splitlines()[0][:200]}"}
    equal = total = worst = propagated = 0
    for i, (q, codes) in enumerate(zip(cases, sim)):
        feed = {n: dequantize(x, p.tensors[n].scale, p.tensors[n].zero_point)
                for n, x in zip(p.inputs, q)}
        far = ""
        for name, y, want in zip(p.outputs, session.run(list(p.outputs), feed), codes):
            t = p.tensors[name]
            got = np.round(y / np.float32(t.scale)).astype(np.int64) + t.zero_point
            diff = np.abs(got.reshape(want.shape) - want)
            equal, total = equal + int(np.sum(diff == 0)), total + diff.size
            worst = max(worst, int(diff.max(initial=0)))
            if not far and np.any(diff > _qdq_tolerance(t)):
                far = (f"output '{name}' is off the simulator by up to {int(diff.max())} "
                       f"codes in {int(np.sum(diff > _qdq_tolerance(t)))} of {diff.size} "
                       "element(s)")
        if far:
            _check_qdq_steps(p, feed, i, far)
            propagated += 1
    result = {"ran": True, "inputs": len(cases), "max_codes_off": worst,
              "equal_fraction": round(equal / max(total, 1), 4)}
    if propagated:
        result["steps_checked_on"] = propagated  # outputs further off: each step was within
    return result


def _check_qdq_steps(p, feed: dict[str, np.ndarray], i: int, far: str) -> None:
    """Every step of the QDQ export, on the int8 inputs onnxruntime computed, within
    QDQ_MAX_LSB codes of ``run_step``; else VerificationError naming the step and ``far``
    (the model output that sent us here)."""
    from ..backends.asic.qdq import to_qdq
    from ..backends.asic.reference import run_step

    model = to_qdq(p, int8_outputs=True)
    names = [o.name for o in model.graph.output][len(p.outputs):]
    got = dict(zip(p.tensors, _plain_session(model).run(names, feed)))
    for step in p.steps:
        want = run_step(step, [got[x] for x in step.inputs], p.tensors).astype(np.int64)
        diff = np.abs(got[step.output].astype(np.int64).reshape(want.shape) - want)
        most = _qdq_tolerance(p.tensors[step.output])
        if np.any(diff > most):
            raise VerificationError(
                f"{far} in the QDQ export run by onnxruntime; step by step, tensor "
                f"'{step.output}' (step '{step.origin}', {step.kind.value}): the QDQ export "
                f"differs from the integer reference by more than {most} code"
                f"{'s' if most > 1 else ''} in "
                f"{int(np.sum(diff > most))} of {diff.size} element(s) (up to "
                f"{int(diff.max())}) on verification input {i}: a miscompile — please report "
                "it with the model; compile with verify=False to bypass")


def _plain_session(model: onnx.ModelProto):
    """onnxruntime without graph optimizations: the QDQ model's float ops as written."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
