"""The ONNX backend node tests, run through sw2c: scope rules, preparation, and the harness
that classifies every test of the suite (passed, wrong, sw2c error with its reason, non-sw2c
exception, hang, or out of harness).

`python -m sw2c.tests.conformance [--write docs/conformance.md] [--onnxruntime]` prints (or
writes) the whole-suite report of conformance_report.py; ``--onnxruntime`` adds onnxruntime
through the same harness as the reference column.
"""

from __future__ import annotations

import faulthandler
import re
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import numpy as np
import onnx
from onnx import numpy_helper
from sw2c.frontend.convert import RUNTIME_DTYPES

# ONNX ops sw2c compiles (beyond these, Shape/Gather/Cast/... fold when their inputs are constant)
SUPPORTED = frozenset("""
Abs Add AveragePool BatchNormalization CastLike Clip Concat Constant ConstantOfShape Conv Div
Dropout Exp Expand Flatten Gather Gemm GlobalAveragePool GlobalMaxPool HardSigmoid HardSwish
Identity LRN LeakyRelu Log LogSoftmax MatMul Max MaxPool Mean Min Mul Neg PRelu Pad Pow
Reciprocal ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceSum
ReduceSumSquare Relu Reshape Sigmoid Slice Softmax Split Sqrt Squeeze Sub Sum Tanh Tile Transpose
Unsqueeze
DepthToSpace Einsum GroupNormalization InstanceNormalization LayerNormalization RMSNormalization
SpaceToDepth
Celu Elu Erf Gelu Mish Selu Shrink Softplus Softsign ThresholdedRelu
ConvTranspose Resize Upsample
Cast Equal Less LessOrEqual Greater GreaterOrEqual And Or Xor Not Where GatherElements GatherND
BitwiseAnd BitwiseOr BitwiseXor BitwiseNot BitShift
Attention RotaryEmbedding CausalConvWithState LinearAttention SwiGLU TensorScatter Det RoiAlign
DeformConv
LSTM GRU RNN
Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Floor Ceil Round Sign IsNaN IsInf Swish
LpPool LpNormalization MeanVarianceNormalization Compress ReverseSequence CenterCropPad Col2Im
GridSample DFT STFT AffineGrid MaxUnpool
ArgMax ArgMin Hardmax TopK OneHot ReduceProd ReduceLogSum SoftmaxCrossEntropyLoss
NegativeLogLikelihoodLoss ScatterElements ScatterND Scatter Mod CumSum CumProd Trilu
QuantizeLinear DequantizeLinear DynamicQuantizeLinear QLinearMatMul QLinearConv MatMulInteger
ConvInteger
""".split())
# may appear in a test's graph when they fold to constants at compile time
RUN_TIME_TYPES = tuple(RUNTIME_DTYPES.values())  # what sw2c takes and computes at run time
FOLDABLE = frozenset("Shape Size Cast Range Equal Where".split())

# in-scope tests we knowingly fail, with the reason (kept empty unless a reason is real)
KNOWN: dict[str, str] = {
    **{f"test_not_{r}d": "the test model declares opset 1; sw2c imports opset 7 and newer"
       for r in (2, 3, 4)},
}


@cache
def node_cases() -> tuple:
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(load_model_tests(kind="node"))


@cache
def _one_node_ops() -> dict[str, str]:
    """Test name -> op type, for the suite's one-node tests."""
    return {c.name: c.model.graph.node[0].op_type for c in node_cases()
            if len(c.model.graph.node) == 1}


def op_of(case) -> str:
    """The op a node test is about: its node's, for a one-node test; for an `_expanded` test
    (the op's function body), the op of the one-node test it expands; else the longest op
    named at the start of the test's name (`test_softmax_..._expanded` -> Softmax); else its
    first node that is not a Constant."""
    if len(case.model.graph.node) == 1:
        return case.model.graph.node[0].op_type
    single = _one_node_ops()
    base = re.sub(r"_expanded(_ver\d+)?$", "", case.name)
    if base in single:
        return single[base]
    name = case.name.removeprefix("test_").lower()
    named = [op for op in SUPPORTED | set(single.values())
             if name == op.lower() or name.startswith(op.lower() + "_")]
    if named:
        return max(named, key=len)
    ops = [n.op_type for n in case.model.graph.node]
    return next((op for op in ops if op != "Constant"), ops[0])


def _data(case) -> tuple[list, list]:
    inputs, outputs = case.data_sets[0]
    return [_array(x) for x in inputs], [_array(x) for x in outputs]


def _array(x):
    """A data set value as numpy holds it; a TensorProto stays one when numpy has no dtype for
    its elements (float8, int4, bfloat16: ml_dtypes types)."""
    if isinstance(x, onnx.TensorProto) and x.data_type in NUMPY_TYPES:
        return numpy_helper.to_array(x)
    return np.asarray(x) if isinstance(x, np.generic) else x


NUMPY_TYPES = frozenset(getattr(onnx.TensorProto, t) for t in (
    "FLOAT DOUBLE FLOAT16 INT8 INT16 INT32 INT64 UINT8 UINT16 UINT32 UINT64 BOOL STRING".split()))


def harness_gap(case) -> str | None:
    """Why the harness cannot represent ``case``'s data (numpy has no float8/int4/..., sw2c's
    feeds are tensors), or None."""
    if not case.data_sets:
        return "no data set"
    inputs, outputs = _data(case)
    if any(isinstance(x, onnx.TensorProto) for x in inputs + outputs):
        return "a data type numpy cannot hold (float8, int4, ...)"
    if any(not isinstance(x, np.ndarray) for x in inputs + outputs):
        return "sequence or optional values"
    return None


def scope(case) -> str | None:
    """None when sw2c must pass ``case``, else the reason it is outside the static scope."""
    graph = case.model.graph
    ops = {n.op_type for n in graph.node}
    if any(n.domain not in ("", "ai.onnx") for n in graph.node):
        return "non-default domain"
    if not ops <= SUPPORTED | FOLDABLE or not ops & SUPPORTED:
        return "uses ops sw2c does not implement: " + ", ".join(sorted(ops - SUPPORTED - FOLDABLE))
    if (gap := harness_gap(case)) is not None:
        return gap
    inputs, outputs = _data(case)
    if any(str(o.dtype) not in RUN_TIME_TYPES for o in outputs):
        return "an output type sw2c does not compute (bfloat16, strings)"
    float_inputs = [x for x in inputs if str(x.dtype) in RUN_TIME_TYPES]  # all fed (int too)
    if any(str(x.dtype) not in RUN_TIME_TYPES for x in inputs):
        return "an input type sw2c does not take (bfloat16, strings)"
    if any(x.size == 0 for x in float_inputs) and all(o.size == 0 for o in outputs):
        return "empty input and only empty outputs: nothing to compute, which sw2c refuses"
    for node in graph.node:
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            names = [vi.name for vi in graph.input]
            if node.input[2] in names and bool(inputs[names.index(node.input[2])]):
                return "training mode"
    return None


# float inputs that are parameters, not data (Resize's roi and scales, Upsample's scales)
FLOAT_PARAMS: dict[str, tuple[int, ...]] = {"Resize": (1, 2), "Upsample": (1,)}


def prepare(case, int_feeds: bool = True
            ) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[np.ndarray]]:
    """The model with its parameter inputs (0-d: clip bounds, dropout ratio; Resize's scales;
    with ``int_feeds`` False every non-float input: shapes, axes, pads) made initializers, as
    they are in a real exported model, plus the feeds and the expected outputs."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = _data(case)
    feeds = {}
    keep = []
    params = {n.input[i] for n in model.graph.node for i in FLOAT_PARAMS.get(n.op_type, ())
              if i < len(n.input)}
    for vi, x in zip(list(model.graph.input), inputs):
        data = x.dtype.kind == "f" or (int_feeds and str(x.dtype) in RUN_TIME_TYPES)
        if data and x.ndim > 0 and vi.name not in params:
            feeds[vi.name] = x
            keep.append(vi)
        else:
            model.graph.initializer.append(numpy_helper.from_array(x, vi.name))
    if model.ir_version >= 4:  # before IR 4, every initializer must also be a graph input
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return model, feeds, list(outputs)


# --- the harness: every test of the suite, classified ----------------------------------------

NEEDS_CONSTANT = "known at compile time"  # Ctx.const, and ops that only fold
PASSED, WRONG, ERROR = "passed", "wrong", "sw2c error"
RAW, HANG, OUT = "non-sw2c exception", "hang", "out of harness"
KINDS = (PASSED, WRONG, ERROR, RAW, HANG, OUT)
BUGS = (WRONG, RAW, HANG)  # what CI fails on, in or out of scope
TIMEOUT = 60  # seconds per test; the slowest takes ~1 s
# float16 outputs: 4 ulps at the top of a binade. The reference rounds after every op of a
# function body (Sigmoid: exp, add, div), sw2c once per op it computes in float32.
HALF_RTOL = 2.0**-8


@dataclass(frozen=True)
class Outcome:
    """What a test gave: ``kind`` (one of KINDS), ``reason`` (the key that groups tests
    refused for the same cause) and ``detail`` (the message, one line)."""

    kind: str
    reason: str = ""
    detail: str = ""


class Hang(BaseException):
    """A test ran out of time (a BaseException, so no ``except Exception`` swallows it)."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise Hang after ``seconds`` while Python code runs (signal.alarm; main thread only);
    and if native code hangs, where the alarm cannot land, kill the process after twice that
    (faulthandler): pytest-xdist and the report's process pool then count the test as lost."""
    main = threading.current_thread() is threading.main_thread()

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"no answer within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, alarm) if main else None
    if main:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(2 * seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _run_sw2c(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import sw2c

    module = sw2c.compile(model, verify=False, input_shapes={k: v.shape for k, v in feeds.items()})
    got = module.run(feeds)
    return [got[name] for name, _, _ in module.outputs]


def _run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 4  # its refusals are counted, not printed
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run([o.name for o in model.graph.output], feeds)


ENGINES = {"sw2c": _run_sw2c, "onnxruntime": _run_onnxruntime}


def mismatch(case, got: list, expected: list[np.ndarray]) -> str | None:
    """Why ``got`` is not the test's expected outputs (count, shape, dtype, or values beyond the
    tolerances: the test's own, at least rtol 1e-3 and atol 1e-6), or None."""
    if len(got) != len(expected):
        return f"{len(got)} outputs, the test expects {len(expected)}"
    for i, (g, want) in enumerate(zip(got, expected)):
        g = np.asarray(g)
        if g.shape != want.shape or g.dtype != want.dtype:
            return f"output {i}: {g.dtype}{list(g.shape)}, the test expects " \
                   f"{want.dtype}{list(want.shape)}"
        if want.dtype.kind not in "biufc":  # strings: exact
            if not np.array_equal(g, want):
                return f"output {i}: values differ"
            continue
        rtol = HALF_RTOL if want.dtype == np.float16 else 1e-3
        try:
            np.testing.assert_allclose(g, want, rtol=max(case.rtol, rtol),
                                       atol=max(case.atol, 1e-6))
        except AssertionError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            return f"output {i}: " + "; ".join(lines[1:4])
    return None


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0][:300]


def reason(e: Exception) -> str:
    """A sw2c error's message without the names of the test's nodes, tensors and shapes, so
    that the tests refused for one cause share it: `unsupported ai.onnx::Resize` for an op
    without a converter, `unsupported ai.onnx::Dropout: the mask output is not supported`."""
    from sw2c.errors import UnsupportedOpError

    text = re.sub(r"'[^']*'", "'…'", _first_line(e))
    text = re.sub(r"\(\d[\d, ]*\)", "(…)", re.sub(r"\bdim \d+", "dim …", text))
    if isinstance(e, UnsupportedOpError):
        detail = text.partition("': ")[2]
        op = f"unsupported {e.domain}::{e.op_type}"
        generic = detail.startswith("supported only when all its inputs are constants")
        return op if generic or not detail else f"{op}: {detail}"
    return text


def classify(case, engine: str = "sw2c", timeout: float = TIMEOUT) -> Outcome:
    """Run ``case`` through ``engine`` (compiled with verify=False for sw2c) on its data set and
    compare with its expected outputs."""
    if (gap := harness_gap(case)) is not None:
        return Outcome(OUT, gap)
    model, feeds, expected = prepare(case)
    try:
        with deadline(timeout):
            try:
                got = ENGINES[engine](model, feeds)
            except Exception as e:
                if NEEDS_CONSTANT not in str(e):
                    raise
                # an int input sw2c needs at compile time (a shape, axes, a count): an exported
                # model has it as an initializer, and so does the second attempt
                model, feeds, expected = prepare(case, int_feeds=False)
                got = ENGINES[engine](model, feeds)
    except Hang as e:
        return Outcome(HANG, "no answer in time", str(e))
    except Exception as e:  # noqa: BLE001 (classified: a Sw2cError is a refusal, else a bug)
        if engine != "sw2c":
            return Outcome(ERROR, f"{type(e).__name__}", _first_line(e))
        from sw2c.benchmarks.fuzz import raw_exception, where

        if (raw := raw_exception(e)) is not None:
            return Outcome(RAW, type(raw).__name__,
                           f"{type(raw).__name__}: {_first_line(raw)} (at {where(raw)})")
        return Outcome(ERROR, reason(e), _first_line(e))
    problem = mismatch(case, got, expected)
    return Outcome(WRONG, "outputs differ", problem) if problem else Outcome(PASSED)


if __name__ == "__main__":
    from sw2c.tests.conformance_report import main

    main()
