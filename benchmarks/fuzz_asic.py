"""Differential fuzzing of sw2c's int8 path (``target="asic"``) on benchmarks/fuzz.py's graphs.

``check_asic(model, seed)`` compiles a random graph for the edge accelerator, calibrated on a
few seeded random feeds, with ``verify=True`` (the simulator must equal the integer reference
and the C export bit for bit, and the QDQ export in onnxruntime within one code), then checks
three more things on fresh inputs:

* the exported C99 (``c_runner.CExport``: built with ``cc``, called through ctypes) gives the
  simulator's int8 codes exactly, on the quantized inputs and on random codes;
* the int8 program computes the model: each step is re-run in float on the dequantized int8
  codes it actually read (the IR nodes it fused, by ``ir.interp``, with the MAC array's int8
  weights), clamped to its output's range (values outside the calibrated range saturate by
  design); its int8 output must be within ``STEP_TOLERANCE`` codes of that, else the case is
  "inaccurate" (whatever the outputs' SQNR: a dropped bias or a wrong scale often hides
  under a large signal). The outputs' SQNR against onnxruntime's fp32 is measured too: under
  ``SQNR_DB`` with every step within tolerance, the loss is quantization error grown through
  the graph or saturation, not a miscompile ("lossy", benign, counted);
* an op or a size the target does not take (UnsupportedOpError, TargetError) is "skipped";
* patch-based tiling (``backends/asic/tiling.py``): a seeded random run of the program's
  layers, computed in a seeded random grid of tiles, gives the untiled simulator's codes on
  the integer reference, the simulator (on its own memory plan, and on one with half of it
  spilled to external RAM) and the exported C (on the spilled plan).

The graphs come from ``fuzz.random_model`` with the op weights biased toward what the
target lowers (``ASIC_WEIGHTS``), or for one seed in five (``SEQUENCE_SHARE``) from
``sequence_model``: embedding lookups of int64/int32 token-id inputs (int16 ids past 128
rows, a cast or reshape on the way, position embeddings, two tables) and then ops weighted
toward a transformer layer (``SEQUENCE_WEIGHTS``: LayerNorm, matmuls, attention,
softmax). The shrinker, the child-process isolation and the soak are fuzz.py's. The command line::

    python -m sw2c.benchmarks.fuzz_asic --count 2000 [--seed 0] [--minutes 20] [--jobs 1]
    python -m sw2c.benchmarks.fuzz_asic --replay benchmarks/fuzz_failures_asic/123.onnx

Minimized failures are saved to ``benchmarks/fuzz_failures_asic/``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from . import fuzz
from .fuzz import Failure

FAILURE_DIR = Path(__file__).resolve().parent / "fuzz_failures_asic"
CALIBRATION_FEEDS = 8
SQNR_DB = 10.0  # an output under this is looked at (int8 usually gives 25-45 dB)
# a step is off when its int8 output is further than this from its float ideal, in output
# codes: the requantization rounds once (0.5 code); the Q31 multiplier, the int32 bias and
# float32 in the ideal add far less (the soak measures at most 0.5 on every kind)
STEP_TOLERANCE = 1.0
MAX_GRID = 4  # tiles per axis of the random tilings checked (check_tiled)
# precisions by seed (seed % 4): int16 (16x8) and auto (mixed, through CONVERT steps) too.
# An int16 step's distance is counted in int16 codes divided by WIDE_CODES (its int16
# multiplier is Q15, its tables interpolated: a few codes), a table's or softmax's in
# int8-sized codes (/256: an interpolated table is checked to be as good as an int8 one)
PRECISIONS = ("int8", "int16", "int8", "auto")
AUTO_SQNR_DB = 30.0  # auto's budget (an output under it, as for int8's floor: "lossy")
WIDE_CODES = 16

# mismatch: verify's oracles disagree with the simulator (VerificationError) or the C export
# does on random codes; inaccurate: a step further than STEP_TOLERANCE from its float ideal;
# raw-exception, crash, error (also: cc rejects the export, a CompileError), hang, generator:
# as in fuzz.py (an "unsupported" is a skip here)
KINDS = ("mismatch", "inaccurate", fuzz.RAW, "crash", "error", "hang", "generator")
# skipped: an op or a size the target does not take; lossy: low SQNR, explained by quantization
BENIGN = ("ok", "lossy", "skipped")

# fuzz.GENERATORS' weights, tilted toward what the int8 target lowers: convs, dense layers
# with constant weights, pools, activations, elementwise ops, data movement and softmax.
# Ops with no int8 kernel (Div, Pow, Min/Max of two tensors, LRN's division) and the MatMul
# forms the target rejects (batched, two activations) stay, rarely, to exercise the skip.
ASIC_WEIGHTS: dict[str, float] = {
    "Conv": 12, "MatMul": 1.5, "Gemm": 3, "Div": 0.4, "Pow": 0.3, "Max": 0.4, "Min": 0.4,
    "LRN": 0.2, "Expand": 0.4, "Sum": 0.8, "Log": 0.7, "Sqrt": 0.7, "Reciprocal": 0.5,
    "Softmax": 2, "Relu": 3, "Clip": 2, "Sigmoid": 1.5, "Tanh": 1.5, "AveragePool": 3,
    "GlobalAveragePool": 2, "Concat": 3, "Slice": 3, "Pad": 2, "Transpose": 2.5,
    "DepthToSpace": 0.6, "Erf": 0.7,
    **{op: 0 for op in fuzz.TYPED_OPS},  # int/bool inputs: the int8 target takes floats only
}


def asic_model(seed: int) -> onnx.ModelProto:
    """The case ``seed``: fuzz.random_model biased toward the int8 target's ops, or (one case
    in SEQUENCE_SHARE, drawn apart so the other seeds keep their graphs) a sequence model
    that starts from token ids (``sequence_model``)."""
    if np.random.default_rng([seed, SEQUENCE_STREAM]).random() < SEQUENCE_SHARE:
        return sequence_model(seed)
    return fuzz.random_model(seed, ASIC_WEIGHTS)


# --------------------------------------------------------------------------- token ids
SEQUENCE_SHARE = 0.2
SEQUENCE_STREAM = 12  # the seed's second stream, picking the sequence cases
# after the lookups, the ops of a transformer layer weigh more
SEQUENCE_WEIGHTS: dict[str, float] = {**ASIC_WEIGHTS, "Conv": 1, "AveragePool": 0.5,
                                      "LayerNormalization": 4, "MatMul": 4, "Einsum": 2.5,
                                      "Softmax": 2.5, "Erf": 1.5, "Gemm": 1}
MAX_ROWS = 600  # an embedding table's rows: over 128, the ids are int16 codes


def token_ids(b: fuzz.Builder) -> str:
    """An int64/int32 ids input [T], [N, T] or [N, T, K] (``fuzz.ids_input``: sometimes
    through a reshape or a cast on the way)."""
    rank = b.choice((1, 2, 2, 2, 3))
    shape = tuple([b.randint(1, 2)] * (rank > 1) + [b.randint(1, 16)]
                  + [b.randint(1, 4)] * (rank > 2))
    return fuzz.ids_input(b, shape)


def embedding(b: fuzz.Builder, ids: str, dim: int) -> str:
    """Gather of a constant table [V, dim] by the token ``ids``, sometimes plus constant
    position embeddings [T, dim] (a constant multi-axis add)."""
    ishape = b.shapes[ids]
    rows = b.randint(2, 128) if b.coin(0.7) else b.randint(129, MAX_ROWS)
    table = b.const(b.floats((rows, dim)), "emb")
    y = b.op1("Gather", [table, ids], ishape + (dim,), axis=0 if b.coin(0.3) else None)
    if b.coin(0.5):
        pos = b.const(b.floats(ishape[-1:] + (dim,), 0.3), "pos")
        y = b.op1("Add", [y, pos], ishape + (dim,))
    return y


def sequence_model(seed: int) -> onnx.ModelProto:
    """A random graph (as ``fuzz.random_model``) whose first tensors are embedding lookups
    of token ids: sometimes a second table summed in (BERT's token types: other ids of the
    same shape, or the same ids), sometimes beside a float input of the same shape."""
    b = fuzz.Builder(np.random.default_rng(seed))
    b.typed_ok = False  # no masks or casts of floats to ids (the target takes ids inputs only)
    ids, dim = token_ids(b), fuzz.wide(b, 16, 48)
    y = embedding(b, ids, dim)
    if b.coin(0.4):
        other = fuzz.ids_input(b, b.shapes[ids]) if b.coin(0.5) else ids
        b.op1("Add", [y, embedding(b, other, dim)], b.shapes[y])
    if b.coin(0.2):
        b.add_input(b.shapes[y])
    fuzz.grow(b, b.randint(3, 15), SEQUENCE_WEIGHTS)
    # float outputs only (the reshaped or cast ids are no output of an int8 program)
    outputs = [o for o in fuzz.choose_outputs(b) if b.elem(o) == onnx.TensorProto.FLOAT]
    model = fuzz.assemble(b, outputs, f"fuzz_{seed}")
    fuzz.validate(model, b.shapes)
    return model


def calibration_feeds(model: onnx.ModelProto, seed: int) -> list[dict[str, np.ndarray]]:
    """A few seeded random feeds, distinct from the test feed ``fuzz.random_feeds(seed)``."""
    return [fuzz.random_feeds(model, 1_000_003 * (k + 1) + seed)
            for k in range(CALIBRATION_FEEDS)]


def _one_threaded(seed: int) -> int:
    return 1  # the simulator and the exported C run on one thread


# --------------------------------------------------------------------------- the C export


def run_c(module, cases: Sequence[Sequence[np.ndarray]], cc: str | Sequence[str]
          ) -> list[list[np.ndarray]]:
    """``<name>_run_int8`` of the exported C, built with ``cc``, on each case (int8 arrays,
    one per input). Raises CompileError when the compiler rejects the source."""
    from sw2c.backends.asic.c_runner import CExport

    with CExport(module.program, module.plan, module.name, cc) as lib:
        return [lib.run_int8(qs) for qs in cases]


# --------------------------------------------------------------------------- accuracy


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum err^2); inf when exact, -inf when ref is 0 and got is not."""
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((np.asarray(got, np.float64).reshape(ref.shape) - ref) ** 2))
    if noise == 0:
        return float("inf")
    signal = float(np.sum(ref * ref))
    return 10 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")


@dataclass
class StepError:
    """How far one step's int8 output is from its float ideal, in output codes."""

    index: int
    kind: str
    origin: str
    worst: float  # max |int8 - ideal| / scale
    rms: float

    def __str__(self) -> str:
        return (f"step {self.index} ({self.kind}, from '{self.origin}') is {self.worst:.1f} "
                f"codes off its float ideal (rms {self.rms:.2f}, tolerance {STEP_TOLERANCE:g})")


def int8_weights(w: np.ndarray, matmul: bool) -> np.ndarray:
    """``w`` as the MAC array holds it, dequantized: symmetric int8 per output channel, that
    is per column of a matmul's [..., K, N] operand (a grouped conv's [G, K, N] too: its
    block-diagonal weights have one column per group and channel), or per channel (the last
    axis) of a depthwise conv's taps. The weights' rounding is the one error of a conv that
    grows with its operands rather than with its output's scale (a conv clamped to a narrow
    range), so the ideal of a conv step carries it."""
    axes = (-2,) if matmul else tuple(range(w.ndim - 1))
    amax = np.abs(w).max(axis=axes, keepdims=True).astype(np.float64)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(w.dtype)


def step_errors(module, qfeeds: Sequence[np.ndarray]) -> list[StepError]:
    """Every step's distance from its float ideal: the IR nodes it fused, run on the
    dequantized int8 codes it read (with int8 weights, for the MAC array), clamped to its
    output's range (values outside the calibrated range saturate by design). Steps that fuse
    no node (the rescaling before a concat) are checked as part of the concat."""
    from sw2c.backends.asic.fixed_point import code_range, dequantize
    from sw2c.backends.asic.program import MAC_ARRAY, Kind
    from sw2c.backends.asic.reference import run_reference
    from sw2c.ir import Op
    from sw2c.ir.interp import evaluate

    b = module.build
    p, g = b.program, b.graph
    codes = run_reference(p, list(qfeeds), keep=True)

    def read(name: str, weights: Op | None) -> np.ndarray:
        """A constant (as int8 weights of a ``weights`` node), or the dequantized codes of a
        program tensor in the IR's shape."""
        c = g.const(name)
        if c is not None and name not in p.tensors:  # (a CONST step's operand: its codes)
            return int8_weights(c, weights is Op.MATMUL) if weights and c.ndim else c
        shape = g.type_of(name).shape
        name = reads.get(name, name)  # the conversion the step read instead, if any
        t = p.tensors[name]
        return dequantize(codes[name], t.scale, t.zero_point).reshape(shape)

    errors = []
    made = {s.output: s.inputs[0] for s in p.steps if s.kind is Kind.CONVERT}
    reads: dict[str, str] = {}
    for i, step in enumerate(p.steps):
        if not step.fused:
            continue
        reads.clear()
        reads.update({made[x]: x for x in step.inputs if x in made})
        env: dict[str, np.ndarray] = {}
        with np.errstate(all="ignore"):
            for name in step.fused:
                node = g.producer[name]
                # the weights: a conv's matmul operand, a depthwise conv's taps (a product
                # with the window patches)
                weights = node.op if step.kind in MAC_ARRAY and (
                    node.op is Op.MATMUL or (node.op is Op.BINARY and any(
                        x in env and g.producer[x].op is Op.WINDOW for x in node.inputs))
                ) else None
                env[name] = evaluate(node, [env[x] if x in env else read(x, weights)
                                            for x in node.inputs])
        t = p.tensors[step.output]
        q_min, q_max = code_range(t.bits)
        lo, hi = t.scale * (q_min - t.zero_point), t.scale * (q_max - t.zero_point)
        ideal = np.clip(np.nan_to_num(env[step.output].astype(np.float64), nan=0.0), lo, hi)
        got = (codes[step.output].astype(np.float64) - t.zero_point) * t.scale
        off = np.abs(got.reshape(ideal.shape) - ideal) / t.scale
        if t.bits == 16:
            off = off / (256 if step.kind in (Kind.LUT, Kind.SOFTMAX) else WIDE_CODES)
        errors.append(StepError(i, step.kind.value, step.origin, float(off.max(initial=0.0)),
                                float(np.sqrt(np.mean(off * off))) if off.size else 0.0))
    return errors


def accuracy(module, feeds: dict[str, np.ndarray], ref: dict[str, np.ndarray]
             ) -> Failure | None:
    """Failure("inaccurate") when a step is further from its float ideal than its tolerance
    (whatever the outputs' SQNR: a wrong bias or scale often hides under a large signal);
    else Failure("lossy") when an output's SQNR against onnxruntime is under SQNR_DB (the
    loss is quantization error growing through the graph, or saturation); else None."""
    from sw2c.backends.asic.reference import quantize_inputs

    got = module.run({n: feeds[n] for n, _, _ in module.inputs})
    low = {n: s for n, r in ref.items() if (s := sqnr_db(r, got[n])) < SQNR_DB}
    what = ", ".join(f"'{n}' {s:.1f} dB" for n, s in low.items())
    p = module.program
    errors = step_errors(module, quantize_inputs(p, [feeds[n] for n in p.inputs]))
    off = [e for e in errors if e.worst > STEP_TOLERANCE]
    if off:
        return Failure("inaccurate", f"{off[0]}" + (f"; output SQNR {what}" if low else ""),
                       off[0].kind)
    if not low:
        return None
    worst = max(errors, key=lambda e: e.worst, default=None)
    return Failure("lossy", f"output SQNR {what} (under {SQNR_DB:g} dB), explained: every "
                   f"step is within tolerance of its float ideal (closest: {worst})", "")


# --------------------------------------------------------------------------- the check


def _skip_label(model: onnx.ModelProto, error: Exception) -> str:
    """The ONNX op type of the node the target rejected, and the IR op it lowered to."""
    import sw2c

    if isinstance(error, sw2c.UnsupportedOpError):
        types = {n.name: n.op_type for n in model.graph.node}
        return f"{types.get(error.node, '?')} ({error.op_type})"
    return type(error).__name__


def classify(model: onnx.ModelProto, seed: int, *, threads: int = 1) -> Failure | None:
    """``check_asic``, with the benign outcomes said: a Failure of kind "skipped" (error =
    the rejected op) or "lossy" instead of None. ``threads`` is ignored (the soak passes it).

    Raises GeneratorError when onnxruntime itself cannot run the model."""
    import sw2c
    from sw2c.backends.asic.c_runner import find_compiler
    from sw2c.backends.asic.reference import quantize_inputs
    from sw2c.errors import TargetError

    feeds = fuzz.random_feeds(model, seed)
    ref = fuzz.reference(model, feeds)
    stage = "compile"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow in quantize of huge values, by design
            try:
                # no SQNR floor: ``accuracy`` below tells quantization loss from a bug
                precision = PRECISIONS[seed % len(PRECISIONS)]
                module = sw2c.compile(model, target="asic", calibration=calibration_feeds(
                    model, seed), verify=True, precision=precision,
                    min_sqnr_db=AUTO_SQNR_DB if precision == "auto" else None)
            except (sw2c.UnsupportedOpError, TargetError) as e:
                return Failure("skipped", str(e), _skip_label(model, e))
            except sw2c.AccuracyError as e:  # auto's budget missed: quantization loss
                return Failure("lossy", str(e).splitlines()[0], "")
            except sw2c.VerificationError as e:
                return Failure("mismatch", f"verify: {e}",
                               "VerificationError")
            p = module.program
            rng = np.random.default_rng(seed)
            cases = [quantize_inputs(p, [feeds[n] for n in p.inputs]),
                     [rng.integers(np.iinfo(p.tensors[n].dtype).min,
                                   np.iinfo(p.tensors[n].dtype).max + 1, p.tensors[n].shape,
                                   dtype=p.tensors[n].dtype) for n in p.inputs]]
            stage = "simulator"
            sim = [module.run_int8(q) for q in cases]
            cc, _ = find_compiler()
            if cc is not None:
                stage = "C export"
                for k, (want, got) in enumerate(zip(sim, run_c(module, cases, cc))):
                    for name, w, c in zip(p.outputs, want, got):
                        if not np.array_equal(w, c):
                            return Failure("mismatch", _c_mismatch(name, k, w, c), "C")
            stage = "tiling"
            if (failure := check_tiled(module, cases, sim, cc, seed)) is not None:
                return failure
            stage = "accuracy"
            return accuracy(module, feeds, ref)
    except Exception as e:  # noqa: BLE001 (anything but a Sw2cError is a compiler bug)
        if (raw := fuzz.raw_exception(e)) is not None:
            return fuzz.raw_failure(raw, stage)
        return Failure("error", f"{type(e).__name__} ({stage}): {e}", type(e).__name__)


def random_tiling(program, seed: int):
    """A seeded random tileable run of ``program`` in a random grid (at most MAX_GRID tiles
    per axis): (tiled program, description), or None when no run can be tiled."""
    from sw2c.backends.asic import tiling

    n = len(program.steps)
    runs = [r for s in range(n) for e in range(s, n) if (r := tiling.tileable(program, s, e))]
    if not runs:
        return None
    rng = np.random.default_rng(seed)
    run = runs[int(rng.integers(len(runs)))]
    y = program.tensors[run.exit]
    grid = tuple(int(rng.integers(1, min(MAX_GRID, y.shape[a]) + 1))
                 for a in run.axes[run.exit])
    if np.prod(grid) == 1:
        return None
    try:
        tiled, _ = tiling.rewrite(program, run, grid)
    except tiling.Untileable:  # a tile wholly inside a window's padding
        return None
    steps = program.steps
    return tiled, (f"steps {run.start}..{run.end} ({steps[run.start].origin} .. "
                   f"{steps[run.end].origin}) in {'x'.join(map(str, grid))} tiles")


def second_tiling(program, what: str, seed: int):
    """On one seed in two, another random run of a tiled ``program`` (clear of the steps
    already tiled) tiled too, with its own tile tags, as spill.py's search does."""
    from sw2c.backends.asic import tiling

    if seed % 2 == 0:
        return program, what
    fresh = [i for i, s in enumerate(program.steps) if "@" not in s.output]
    runs = [r for s in fresh for e in fresh if e >= s and set(range(s, e + 1)) <= set(fresh)
            and (r := tiling.tileable(program, s, e))]
    rng = np.random.default_rng([seed, 2])
    if not runs:
        return program, what
    run = runs[int(rng.integers(len(runs)))]
    y = program.tensors[run.exit]
    grid = tuple(int(rng.integers(1, min(MAX_GRID, y.shape[a]) + 1))
                 for a in run.axes[run.exit])
    try:
        tiled, _ = tiling.rewrite(program, run, grid, "u")
    except tiling.Untileable:
        return program, what
    return tiled, f"{what}; then steps {run.start}..{run.end} in {'x'.join(map(str, grid))}"


def check_tiled(module, cases: Sequence[Sequence[np.ndarray]], sim: list[list[np.ndarray]],
                cc: str | Sequence[str] | None, seed: int) -> Failure | None:
    """A random tiling of the module's program (``random_tiling``) against the untiled
    simulator's outputs ``sim``: the integer reference, the simulator on the tiled program's
    own plan and, with ``cc``, its C export. Failure("mismatch") when any differs."""
    from sw2c.backends.asic.c_runner import CExport
    from sw2c.backends.asic.plan import plan_program, plan_spilled
    from sw2c.backends.asic.reference import run_reference
    from sw2c.backends.asic.schedule import schedule
    from sw2c.backends.asic.spill import root_traffic
    from sw2c.runtime.simulator import Simulator

    picked = random_tiling(module.program, seed)
    if picked is None:
        return None
    tiled, what = picked
    tiled, what = second_tiling(tiled, what, seed)
    plan = plan_program(tiled)
    # and half its arena spilled to external RAM (plan_spilled): the C export runs on that
    traffic = root_traffic(tiled, module.build.target) if seed % 2 else None  # spill.py's rule
    far = plan_spilled(tiled, max(plan.arena_bytes // 2, 4), traffic) or plan
    if log := os.environ.get("SW2C_FUZZ_TILED_LOG"):  # which cases were tiled (soak counts)
        with open(log, "a") as f:
            f.write(f"{seed}\t{bool(far.spilled)}\t{what}\n")
    target = module.build.target
    runs = {"integer reference": [[run_reference(tiled, list(q))[n] for n in tiled.outputs]
                                  for q in cases]}
    for how, layout in (("simulator", plan), ("simulator (half spilled)", far)):
        machine = Simulator(tiled, layout, schedule(tiled, target, layout.external_tensors()))
        runs[how] = [machine.run(list(q))[0] for q in cases]
    if cc is not None:
        with CExport(tiled, far, module.name + "_tiled", cc) as lib:
            runs["C export"] = [lib.run_int8(q) for q in cases]
    for how, got in runs.items():
        for k, (want, mine) in enumerate(zip(sim, got)):
            for name, w, g in zip(tiled.outputs, want, mine):
                if not np.array_equal(w, g):
                    return Failure("mismatch", f"tiled ({what}), {how}: "
                                   f"{_c_mismatch(name, k, w, g).partition(': ')[2]}",
                                   "tiling")
    return None


def _c_mismatch(name: str, case: int, want: np.ndarray, got: np.ndarray) -> str:
    bad = want != got.reshape(want.shape)
    i = tuple(int(j) for j in np.argwhere(bad)[0])
    inputs = "quantized test feed" if case == 0 else "random codes"
    return (f"C export vs simulator: output '{name}' {want.shape}, {int(bad.sum())}/{want.size} "
            f"codes differ on the {inputs}; first at {i}: C {got.reshape(want.shape)[i]}, "
            f"simulator {want[i]}")


def check_asic(model: onnx.ModelProto, seed: int) -> Failure | None:
    """Compile ``model`` for the asic target and check it (see the module doc); the Failure,
    or None when it passes, is skipped (an op or size the target does not take) or loses
    accuracy that quantization explains. Raises GeneratorError when onnxruntime cannot run
    the model."""
    failure = classify(model, seed)
    return None if failure is None or failure.kind in BENIGN else failure


ASIC = fuzz.Mode("sw2c.benchmarks.fuzz_asic", asic_model, classify, _one_threaded, KINDS,
                 BENIGN)


# --------------------------------------------------------------------------- soak


@dataclass
class AsicSoak(fuzz.Soak):
    """fuzz.Soak, also counting the ops the target rejected."""

    mode: fuzz.Mode = ASIC
    skipped_ops: Counter = field(default_factory=Counter)

    def record(self, seed: int, answer: tuple, worker: fuzz.Isolated) -> None:
        kind, _, error, _ = answer
        if kind == "skipped":
            with self.lock:
                self.skipped_ops[error] += 1
        super().record(seed, answer, worker)


def print_summary(soak: AsicSoak, done: int, seconds: float) -> None:
    """fuzz.py's summary, then the asic figures: what lowered, what was skipped and why."""
    fuzz.print_summary(soak, done, seconds)
    c = soak.counts
    failed = {k: c[k] for k in KINDS if c[k]}
    print(f"\nasic: {done} cases: {c['ok'] + c['lossy']} compiled for asic and passed "
          f"({c['lossy']} of them lossy: low SQNR explained by quantization), {c['skipped']} "
          f"skipped, {sum(failed.values())} failed")
    if soak.skipped_ops:
        print("skipped by op: " + ", ".join(f"{op} {n}"
                                            for op, n in soak.skipped_ops.most_common()))
    print("failures by kind: " + (", ".join(f"{k} {n}" for k, n in failed.items()) or "none"))


def replay(path: Path, seed: int) -> int:
    """Re-check a saved case; 1 when it still fails."""
    model = onnx.load(path)
    failure = classify(model, seed)
    print(onnx.printer.to_text(model.graph))
    print(f"seed {seed}: " + (f"{failure.kind}: {failure.message}" if failure else "ok"))
    return 1 if failure is not None and failure.kind not in BENIGN else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = fuzz.parse_args(argv, ASIC, __doc__, FAILURE_DIR)
    if args.replay is not None:
        return replay(args.replay, int(args.replay.stem) if args.replay.stem.isdigit()
                      else args.seed)
    return fuzz.soak_main(args, AsicSoak(args.out, args.shrink_limit), print_summary)


if __name__ == "__main__":
    # the importable module's main: the mode pickled into the child processes must name
    # sw2c.benchmarks.fuzz_asic's functions, not __main__'s
    from sw2c.benchmarks.fuzz_asic import main as _main

    sys.exit(_main())

